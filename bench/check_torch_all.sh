#!/usr/bin/env bash
# Exports a briefly trained run of every preset and of six models of one's own (the README's
# two examples; batch norm with dropout; no convolutions; variational; an image reshaped) and
# checks, in PyTorch, that the module `export` writes as code, loaded with the exported
# weights, gives the same reconstructions of 2,000 test images (max abs difference <= 1e-5). PyTorch is installed into
# bench/.venv on first use; where that is impossible the check is skipped with a message.
# Arguments go to `cargo build --release` (`--features wgpu`: reuse a build made with it).
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
cargo build --release -q "$@"
bin=target/release/mnist-ae
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/pooled.toml" <<'TOML'
encoder = "conv(8,3,s1,p1) relu maxpool(2) conv(16,3,s1,p1) relu maxpool(2) flatten linear(10)"
decoder = "mirror"
TOML
check() {
  local name=$1; shift
  $bin train "$@" --epochs 1 --limit-train 1000 --data-dir "$data" --no-download --out "$tmp/$name" -q >/dev/null
  $bin export "$tmp/$name" --torch "$tmp/$name.safetensors" --reference "$tmp/$name.ref.safetensors" --count 2000 \
    --data-dir "$data" --no-download >/dev/null
  bench/.venv/bin/python bench/check_torch_export.py "$tmp/$name.safetensors" "$tmp/$name.ref.safetensors"
}
for m in conv64 conv7 linear3 mlp cae32 vae; do
  check "$m" --model "$m"
done
check readme-layers \
  --encoder "conv(16,3,s1,p1) bn relu maxpool(2) conv(32,3,s1,p1) bn relu maxpool(2) flatten dropout(0.1) linear(16)" \
  --decoder "linear(1568) relu reshape(32,7,7) upsample(2) conv(16,3,s1,p1) relu upsample(2) conv(1,3,s1,p1)" \
  --output sigmoid
check readme-arch --arch "$tmp/pooled.toml"
check bn-dropout \
  --encoder "conv(32,3,s2,p1) bn leaky_relu(0.1) conv(64,3,s2,p1) bn leaky_relu(0.1) flatten dropout(0.2) linear(32)" \
  --decoder mirror
check no-conv \
  --encoder "flatten linear(256) bn gelu dropout(0.1) linear(64) sigmoid linear(8)" \
  --decoder "linear(64) tanh linear(256) gelu linear(784) reshape(1,28,28)" --output tanh
check variational \
  --encoder "conv(16,4,s2,p1) relu avgpool(2) flatten linear(8)" \
  --decoder "linear(392) relu reshape(8,7,7) convt(8,4,s2,p1) relu convt(1,4,s2,p1)" --variational
check reshaped-image \
  --encoder "conv(8,3,s2,p1) relu reshape(2,28,28) conv(4,3,s2,p1) relu flatten linear(8)" \
  --decoder "linear(784) reshape(1,28,28)"
echo "PyTorch export check: all presets and custom models match"
