#!/usr/bin/env bash
# Exports a briefly trained run of every preset and checks, in PyTorch, that the exported
# weights give the same reconstructions (max abs difference <= 1e-5). PyTorch is installed
# into bench/.venv on first use; where that is impossible the check is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${MNIST_AE_DATA:-$(cd ../shared/data/mnist 2>/dev/null && pwd || echo ../shared/data/mnist)}"
if ! { [ -x bench/.venv/bin/python ] && bench/.venv/bin/python -c "import torch, safetensors" 2>/dev/null; }; then
  echo "installing PyTorch into bench/.venv (pip) for the export check"
  if ! { python3 -m venv bench/.venv && timeout 1200 bench/.venv/bin/pip install -q torch safetensors numpy; } >/dev/null 2>&1 \
     || ! bench/.venv/bin/python -c "import torch, safetensors" 2>/dev/null; then
    echo "SKIPPED the PyTorch export check: PyTorch could not be installed here"
    exit 0
  fi
fi
cargo build --release -q
bin=target/release/mnist-ae
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for m in conv64 conv7 linear3 mlp cae32 vae; do
  $bin train --model "$m" --epochs 1 --limit-train 1000 --data-dir "$data" --no-download --out "$tmp/$m" -q >/dev/null
  $bin export "$tmp/$m" --torch "$tmp/$m.safetensors" --reference "$tmp/$m.ref.safetensors" --count 2000 \
    --data-dir "$data" --no-download >/dev/null
  bench/.venv/bin/python bench/check_torch_export.py "$tmp/$m.safetensors" "$tmp/$m.ref.safetensors"
done
echo "PyTorch export check: all presets match"
