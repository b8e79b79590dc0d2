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
        $bin --threads "$t" train --model "$model" --latent-dim "$latent" --batch-size "$batch" \
          --shards "$s" --epochs "$epochs" ${limit[@]+"${limit[@]}"} --data-dir "$data" --no-download \
          --out "$out" -q >/dev/null
        ips=$(python3 -c "import json,sys; r=[json.loads(l)['images_per_sec'] for l in open(sys.argv[1])]; print(round(len(r)/sum(1/x for x in r)))" "$out/metrics.jsonl")
        echo "$round $model $t $s $ips" | tee -a "$tmp/results.txt"
      done
    done
  done
done
python3 - "$tmp/results.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r, m, t, s, ips = line.split()
    runs.setdefault(m, {}).setdefault((int(t), int(s)), {})[int(r)] = int(ips)
print(f"{'model':<8} {'threads':>7} {'shards':>6} {'images/s':>9} {'speed-up':>8}")
for m, by in runs.items():
    base = by[(1, 2)]
    for (t, s), rounds in sorted(by.items()):
        ips = statistics.median(rounds.values())
        up = statistics.median(rounds[r] / base[r] for r in rounds)
        print(f"{m:<8} {t:>7} {s:>6} {ips:>9.0f} {up:>7.2f}x")
PY
