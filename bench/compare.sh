#!/usr/bin/env bash
# Training throughput of mnist-ae against PyTorch on the same CPU, one after the other.
#   bench/compare.sh [THREADS] [ROUNDS]     (defaults: all cores, 3 rounds)
# Presets and batch sizes from the performance issue: conv64 batch 32, mlp N=8 batch 256.
# Each round trains every preset with mnist-ae, then with PyTorch, and takes their ratio; the
# machine's speed drifts between minutes, so the ratio is taken round by round, and the median
# ratio of the rounds is the figure to quote. Each side's test MSE after the same epochs is
# printed too (the goal is the same quality: within 2%); that is one seed, whose MSE moves by
# several percent with the seed: bench/quality.sh compares means over seeds.
# PyTorch is installed into bench/.venv on first use; without it only mnist-ae is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-$(nproc)}"
rounds="${2:-3}"
data="${MNIST_AE_DATA:-$(cd ../shared/data/mnist 2>/dev/null && pwd || echo ../shared/data/mnist)}"
cargo build --release -q
bin=target/release/mnist-ae
py=""
if [ -x bench/.venv/bin/python ] || { python3 -m venv bench/.venv && bench/.venv/bin/pip install -q torch numpy; } >/dev/null 2>&1; then
  py=bench/.venv/bin/python
else
  echo "PyTorch could not be installed (no pip or no network): timing mnist-ae only"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
results="$tmp/results.txt"
printf '%-8s %6s %6s %5s %14s %14s %7s %12s %12s\n' model batch epochs round mnist-ae_img/s pytorch_img/s ratio mnist-ae_mse pytorch_mse
for round in $(seq 1 "$rounds"); do
  for spec in "conv64 32 2 64" "mlp 256 3 8"; do
    set -- $spec
    model=$1 batch=$2 epochs=$3 latent=$4
    rm -rf "$tmp/$model"
    RAYON_NUM_THREADS=$threads $bin train --model "$model" --latent-dim "$latent" --batch-size "$batch" \
      --epochs "$epochs" --data-dir "$data" --no-download --out "$tmp/$model" -q >/dev/null
    # Images over seconds of all epochs (harmonic mean of metrics.jsonl's per-epoch figures),
    # as the PyTorch script counts.
    ours=$(python3 -c "import json,sys; r=[json.loads(l)['images_per_sec'] for l in open(sys.argv[1])]; print(round(len(r)/sum(1/x for x in r)))" "$tmp/$model/metrics.jsonl")
    RAYON_NUM_THREADS=$threads $bin eval "$tmp/$model" --data-dir "$data" --no-download >/dev/null
    ours_mse=$(python3 -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['test']['mse']:.6f}\")" "$tmp/$model/eval.json")
    theirs="-" ratio="-" theirs_mse="-"
    if [ -n "$py" ]; then
      ref=$($py bench/pytorch_ref.py --model "$model" --latent-dim "$latent" --batch-size "$batch" \
        --epochs "$epochs" --threads "$threads" --data-dir "$data")
      theirs=$(echo "$ref" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['images_per_sec']))")
      theirs_mse=$(echo "$ref" | python3 -c "import json,sys; print(f\"{json.load(sys.stdin)['test_mse']:.6f}\")")
      ratio=$(python3 -c "print(f'{$ours/$theirs:.2f}')")
    fi
    printf '%-8s %6s %6s %5s %14s %14s %7s %12s %12s\n' "$model" "$batch" "$epochs" "$round" "$ours" "$theirs" "$ratio" "$ours_mse" "$theirs_mse"
    echo "$model $ours $theirs" >> "$results"
  done
done
echo "median over $rounds rounds (ratio: median of the rounds' ratios):"
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m, a, b = line.split()
    rows.setdefault(m, []).append((int(a), None if b == "-" else int(b)))
for m, v in rows.items():
    ours = statistics.median(a for a, _ in v)
    if all(b is not None for _, b in v):
        theirs = statistics.median(b for _, b in v)
        ratio = statistics.median(a / b for a, b in v)
        print(f"{m:<8} mnist-ae {ours:>8.0f}  pytorch {theirs:>8.0f}  ratio {ratio:.2f}")
    else:
        print(f"{m:<8} mnist-ae {ours:>8.0f}")
PY
