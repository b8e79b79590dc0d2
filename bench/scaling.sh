#!/usr/bin/env bash
# Thread scaling of training: images/s with 1, 2, … N threads (`--threads`), conv64 batch 32 and
# mlp N=8 batch 256, and each count's speed-up over 1 thread.
#   bench/scaling.sh [MAX_THREADS] [ROUNDS] [EPOCHS]   (defaults: all cores, 3 rounds, 2 epochs)
# Each round runs every thread count once, one after the other, so the machine's drift spreads
# over all of them; the speed-up is taken within each round and the median over rounds quoted.
# Images/s are over all epochs (harmonic mean of metrics.jsonl's figures, validation excluded).
#   MNIST_AE_BIN=path/mnist-ae bench/scaling.sh 16 1   (a binary built elsewhere: no build here)
#   LIMIT_TRAIN=20000 bench/scaling.sh                 (train on that many images, not all 54,000)
#   SHARDS="2 4 8" bench/scaling.sh 16 1               (every thread count with each shard count:
#                                                       on many cores, which `--shards` to use)
# The speed-up is over 1 thread with the default 2 shards, in the same round.
# Around each run the script times a cache line's round trip between CPUs 0 and 1
# (bench/core_latency.rs; the larger of the figures before and after the run is kept). A
# virtual machine's host can move its two CPUs between one cache cluster (tens of ns) and two
# dies (hundreds), and a step's shared data, gradients and weights, then crosses between dies:
# the summary also gives the speed-ups of the runs on "near" CPUs (round trip under NEAR_NS,
# default 200 ns: the gap between the two placements seen on an AMD EPYC host) and on "far"
# ones separately. On other hosts the round trip may not fall into two groups at all: the
# per-run lines give the figure itself.
set -euo pipefail
cd "$(dirname "$0")/.."
max="${1:-$(nproc)}"
rounds="${2:-3}"
epochs="${3:-2}"
data="${MNIST_AE_DATA:-$(cd ../shared/data/mnist 2>/dev/null && pwd || echo ../shared/data/mnist)}"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
if [ -n "${MNIST_AE_BIN:-}" ]; then
  bin=$MNIST_AE_BIN
else
  cargo build --release -q
  bin=target/release/mnist-ae
fi
lat=target/core_latency
# Without rustc (a lent machine carries only the binaries) runs go unlabelled.
[ -x "$lat" ] || ! command -v rustc >/dev/null ||
  { mkdir -p target && rustc -O --edition 2021 -o "$lat" bench/core_latency.rs; }
round_trip() { "$lat" 2>/dev/null || echo 0; }
near_ns="${NEAR_NS:-200}"
limit=()
[ -n "${LIMIT_TRAIN:-}" ] && limit=(--limit-train "$LIMIT_TRAIN")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
shards="${SHARDS:-2}"
counts=$(python3 -c "n=$max; c=[1]; exec('while c[-1]*2 <= n: c.append(c[-1]*2)'); c += [n] if c[-1] != n else []; print(*c)")
for round in $(seq 1 "$rounds"); do
  for spec in "conv64 32 64" "mlp 256 8"; do
    set -- $spec
    model=$1 batch=$2 latent=$3
    for t in $counts; do
      # One thread runs the default 2 shards only: the baseline of every speed-up.
      per_t=$shards
      [ "$t" = 1 ] && per_t=2
      for s in $per_t; do
        out="$tmp/$model-$t-$s"
        rm -rf "$out"
        before=$(round_trip)
        $bin --threads "$t" train --model "$model" --latent-dim "$latent" --batch-size "$batch" \
          --shards "$s" --epochs "$epochs" ${limit[@]+"${limit[@]}"} --data-dir "$data" --no-download \
          --out "$out" -q >/dev/null
        ips=$(python3 -c "import json,sys; r=[json.loads(l)['images_per_sec'] for l in open(sys.argv[1])]; print(round(len(r)/sum(1/x for x in r)))" "$out/metrics.jsonl")
        after=$(round_trip)
        rt=$(( before > after ? before : after ))
        echo "$round $model $t $s $ips $rt" | tee -a "$tmp/results.txt"
      done
    done
  done
done
python3 - "$tmp/results.txt" "$near_ns" <<'PY'
import statistics, sys
near_ns = int(sys.argv[2])
runs, trip = {}, {}
for line in open(sys.argv[1]):
    r, m, t, s, ips, rt = line.split()
    runs.setdefault(m, {}).setdefault((int(t), int(s)), {})[int(r)] = int(ips)
    trip[(m, int(t), int(s), int(r))] = int(rt)
def med(xs):
    return f"{statistics.median(xs):.2f}x ({len(xs)})" if xs else "-"
print(f"{'model':<8} {'threads':>7} {'shards':>6} {'images/s':>9} {'speed-up':>8}"
      f" {'near CPUs':>11} {'far CPUs':>11}")
for m, by in runs.items():
    base = by[(1, 2)]
    for (t, s), rounds in sorted(by.items()):
        ips = statistics.median(rounds.values())
        ups = {r: rounds[r] / base[r] for r in rounds}
        near = [u for r, u in ups.items() if 0 < trip[(m, t, s, r)] < near_ns]
        far = [u for r, u in ups.items() if trip[(m, t, s, r)] >= near_ns]
        split = f" {med(near):>11} {med(far):>11}" if t > 1 else ""
        print(f"{m:<8} {t:>7} {s:>6} {ips:>9.0f} {statistics.median(ups.values()):>7.2f}x{split}")
print(f"near/far: round trip between CPUs 0 and 1 under / over {near_ns} ns around the run"
      " (number of rounds in brackets)")
PY
