#!/usr/bin/env bash
# Training throughput of mnist-ae against PyTorch on the same CPU, one after the other.
#   bench/compare.sh [THREADS]        (default: all cores)
# Presets and batch sizes from the performance issue: conv64 batch 32, mlp N=8 batch 256.
# PyTorch is installed into bench/.venv on first use; without it only mnist-ae is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-$(nproc)}"
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
printf '%-8s %6s %6s %14s %14s %7s\n' model batch epochs mnist-ae_img/s pytorch_img/s ratio
for spec in "conv64 32 2 64" "mlp 256 3 8"; do
  set -- $spec
  model=$1 batch=$2 epochs=$3 latent=$4
  RAYON_NUM_THREADS=$threads $bin train --model "$model" --latent-dim "$latent" --batch-size "$batch" \
    --epochs "$epochs" --data-dir "$data" --no-download --out "$tmp/$model" -q >/dev/null
  # Images over seconds of all epochs (harmonic mean of metrics.jsonl's per-epoch figures),
  # as the PyTorch script counts.
  ours=$(python3 -c "import json,sys; r=[json.loads(l)['images_per_sec'] for l in open(sys.argv[1])]; print(round(len(r)/sum(1/x for x in r)))" "$tmp/$model/metrics.jsonl")
  theirs="-" ratio="-"
  if [ -n "$py" ]; then
    theirs=$($py bench/pytorch_ref.py --model "$model" --latent-dim "$latent" --batch-size "$batch" \
      --epochs "$epochs" --threads "$threads" --data-dir "$data" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['images_per_sec']))")
    ratio=$(python3 -c "print(f'{$ours/$theirs:.2f}')")
  fi
  printf '%-8s %6s %6s %14s %14s %7s\n' "$model" "$batch" "$epochs" "$ours" "$theirs" "$ratio"
done
