#!/usr/bin/env bash
# Training throughput of mnist-ae against PyTorch on the same CPU, one after the other.
#   bench/compare.sh [THREADS] [ROUNDS]     (defaults: all cores, 3 rounds)
#   MODELS="conv64 custom" bench/compare.sh 2 3   (a subset; default: all of them)
# conv64 batch 32 and mlp N=8 batch 256 (the performance issue's settings); conv7, linear3 and
# cae32 at their default batch of 64; custom: the README's model of your own (batch norm, max
# pooling, dropout, upsampling, stride-1 convolutions), batch 64, on PyTorch the module
# `mnist-ae export --torch` writes for it; vae at its default batch of 128, on its own loss (the
# negative ELBO with binary cross-entropy, both sides).
# Each round trains every preset with mnist-ae, then with PyTorch eager, then with the same
# PyTorch step under `torch.compile` (compiling excluded), and takes the ratios; the
# machine's speed drifts between minutes, so the ratio is taken round by round, and the median
# ratio of the rounds is the figure to quote. Each side's test MSE after the same epochs is
# printed too (the goal is the same quality: within 2%); that is one seed, whose MSE moves by
# several percent with the seed: bench/quality.sh compares means over seeds.
# PyTorch is installed into bench/.venv on first use; without it only mnist-ae is timed.
# The column `cpus` says, for each of the three runs of a row (mnist-ae, eager, compiled),
# whether CPUs 0 and 1 were near (n: a cache line's round trip under NEAR_NS, default 200 ns,
# before and after the run, bench/core_latency.rs) or far (f) from each other: a virtual machine's host can
# move them between one cache cluster and two dies, and multi-threaded training slows down
# when they are far (BENCHMARKS.md). Ratios between runs of different letters compare
# placements as much as programs.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
threads="${1:-$(nproc)}"
rounds="${2:-3}"
data="${MNIST_AE_DATA:-$(cd ../shared/data/mnist 2>/dev/null && pwd || echo ../shared/data/mnist)}"
cargo build --release -q
bin=target/release/mnist-ae
lat=target/core_latency
# Without rustc (a lent machine carries only the binaries) runs go unlabelled.
[ -x "$lat" ] || ! command -v rustc >/dev/null ||
  { mkdir -p target && rustc -O --edition 2021 -o "$lat" bench/core_latency.rs; }
near_ns="${NEAR_NS:-200}"
# Runs the command given and appends n, f or ? (see above) to the file $placement.
placed() {
  local before after
  before=$("$lat" 2>/dev/null || echo 0)
  "$@"
  after=$("$lat" 2>/dev/null || echo 0)
  if [ "$before" -gt 0 ] && [ "$before" -lt "$near_ns" ] && [ "$after" -gt 0 ] && [ "$after" -lt "$near_ns" ]; then
    printf n >>"$placement"
  elif [ "$before" -ge "$near_ns" ] && [ "$after" -ge "$near_ns" ]; then
    printf f >>"$placement"
  else
    printf '?' >>"$placement"
  fi
}
py=""
if [ -x bench/.venv/bin/python ] || { python3 -m venv bench/.venv && bench/.venv/bin/pip install -q torch numpy safetensors; } >/dev/null 2>&1; then
  py=bench/.venv/bin/python
else
  echo "PyTorch could not be installed (no pip or no network): timing mnist-ae only"
fi
[ -n "$py" ] && echo "PyTorch $($py -c 'import torch; print(torch.__version__)'); $($bin --version)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
results="$tmp/results.txt"
placement="$tmp/placement"
printf '%-7s %5s %6s %5s %9s %9s %9s %7s %7s %10s %10s %10s %4s\n' model batch epochs round mnist-ae eager compiled r_eager r_comp mse_ours mse_eager mse_comp cpus
encoder="conv(16,3,s1,p1) bn relu maxpool(2) conv(32,3,s1,p1) bn relu maxpool(2) flatten dropout(0.1) linear(16)"
decoder="linear(1568) relu reshape(32,7,7) upsample(2) conv(16,3,s1,p1) relu upsample(2) conv(1,3,s1,p1)"
models="${MODELS:-conv64 mlp conv7 linear3 cae32 vae custom}"
for round in $(seq 1 "$rounds"); do
  for spec in "conv64 32 2 64" "mlp 256 3 8" "conv7 64 1 64" "linear3 64 2 3" "cae32 64 1 32" "vae 128 1 16" "custom 64 1 16"; do
    set -- $spec
    model=$1 batch=$2 epochs=$3 latent=$4
    case " $models " in *" $model "*) ;; *) continue ;; esac
    rm -rf "$tmp/$model"
    if [ "$model" = custom ]; then
      what=(--encoder "$encoder" --decoder "$decoder" --output sigmoid)
    else
      what=(--model "$model" --latent-dim "$latent")
    fi
    : >"$placement"
    RAYON_NUM_THREADS=$threads placed $bin train "${what[@]}" --batch-size "$batch" \
      --epochs "$epochs" --data-dir "$data" --no-download --out "$tmp/$model" -q >/dev/null
    # Images over seconds of all epochs (harmonic mean of metrics.jsonl's per-epoch figures),
    # as the PyTorch script counts.
    ours=$(python3 -c "import json,sys; r=[json.loads(l)['images_per_sec'] for l in open(sys.argv[1])]; print(round(len(r)/sum(1/x for x in r)))" "$tmp/$model/metrics.jsonl")
    RAYON_NUM_THREADS=$threads $bin eval "$tmp/$model" --data-dir "$data" --no-download >/dev/null
    ours_mse=$(python3 -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['test']['mse']:.6f}\")" "$tmp/$model/eval.json")
    eager="-" compiled="-" r_eager="-" r_comp="-" mse_eager="-" mse_comp="-"
    if [ -n "$py" ]; then
      for mode in eager compiled; do
        flag=""
        [ "$mode" = compiled ] && flag="--compile"
        # torch.compile's warnings go to a file, shown only if the run fails.
        theirs=(--model "$model" --latent-dim "$latent")
        if [ "$model" = custom ]; then
          $bin export "$tmp/$model" --torch "$tmp/custom_ae.safetensors" >/dev/null
          theirs=(--model custom --module "$tmp/custom_ae.py")
        fi
        ref=$(placed $py bench/pytorch_ref.py "${theirs[@]}" --batch-size "$batch" \
          --epochs "$epochs" --threads "$threads" --data-dir "$data" $flag 2>"$tmp/pytorch.err") \
          || { cat "$tmp/pytorch.err" >&2; exit 1; }
        ips=$(echo "$ref" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['images_per_sec']))")
        mse=$(echo "$ref" | python3 -c "import json,sys; print(f\"{json.load(sys.stdin)['test_mse']:.6f}\")")
        ratio=$(python3 -c "print(f'{$ours/$ips:.2f}')")
        if [ "$mode" = eager ]; then eager=$ips mse_eager=$mse r_eager=$ratio; else compiled=$ips mse_comp=$mse r_comp=$ratio; fi
      done
    fi
    printf '%-7s %5s %6s %5s %9s %9s %9s %7s %7s %10s %10s %10s %4s\n' "$model" "$batch" "$epochs" "$round" "$ours" "$eager" "$compiled" "$r_eager" "$r_comp" "$ours_mse" "$mse_eager" "$mse_comp" "$(cat "$placement")"
    echo "$model $ours $eager $compiled" >> "$results"
  done
done
[ -s "$results" ] || { echo "MODELS=\"$models\" names none of conv64 mlp conv7 linear3 cae32 vae custom" >&2; exit 2; }
echo "median over $rounds rounds (ratios: median of the rounds' ratios):"
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m, *v = line.split()
    rows.setdefault(m, []).append([None if x == "-" else int(x) for x in v])
for m, v in rows.items():
    ours = statistics.median(r[0] for r in v)
    line = f"{m:<8} mnist-ae {ours:>8.0f}"
    for i, name in [(1, "eager"), (2, "torch.compile")]:
        if all(r[i] for r in v):
            theirs = statistics.median(r[i] for r in v)
            ratio = statistics.median(r[0] / r[i] for r in v)
            line += f"  {name} {theirs:>8.0f} (×{ratio:.2f})"
    print(line)
PY
