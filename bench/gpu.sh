#!/usr/bin/env bash
# GPU throughput, for a machine with a GPU:
#   bench/gpu.sh [EPOCHS] [LIMIT_TRAIN]     (defaults: 3 epochs, all 54,000 training images)
#   GPU_FEATURES=wgpu bench/gpu.sh          (only the wgpu build; default: "wgpu cuda")
#   MNIST_AE_BIN=path/mnist-ae bench/gpu.sh (a binary built elsewhere with --features wgpu:
#                                            no build here, for a machine without Rust)
#   RUN_TIMEOUT=120 bench/gpu.sh            (seconds allowed to each training run; default none)
# Builds mnist-ae with `--features wgpu`, and with `--features cuda` where that builds (it needs
# the LLVM bundle that cubecl-cuda's build downloads; see the README), then trains conv64
# (batch 32 and 256), mlp (batch 256) and the vae (batch 128) for EPOCHS epochs on every GPU
# device it built, and on the CPU for comparison, and prints each epoch's images/s and the
# run's (all epochs' images over their seconds, validation excluded), with the devices' names
# and the last epoch's training loss (a GPU's should match the CPU's closely). Where python3 has a PyTorch
# that sees a CUDA GPU, the same models train with it on that GPU too (bench/pytorch_ref.py
# --device cuda, eager; the first epoch includes its warm-up as mnist-ae's does), for reference.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-3}"
limit=()
[ -n "${2:-}" ] && limit=(--limit-train "$2")
data="${MNIST_AE_DATA:-$(cd ../shared/data/mnist 2>/dev/null && pwd || echo ../shared/data/mnist)}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Mesa's Vulkan loader complains on every start when XDG_RUNTIME_DIR is unset.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$tmp}"
limited() { if [ "${RUN_TIMEOUT:-0}" != 0 ]; then timeout "$RUN_TIMEOUT" "$@"; else "$@"; fi; }

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/GPU: /'

devices="cpu"
if [ -n "${MNIST_AE_BIN:-}" ]; then
  cp "$MNIST_AE_BIN" "$tmp/mnist-ae-wgpu"
  devices="cpu wgpu"
else
  for feature in ${GPU_FEATURES:-wgpu cuda}; do
    echo "== cargo build --release --features $feature"
    if cargo build --release --features "$feature" -q 2>"$tmp/build-$feature.log"; then
      cp target/release/mnist-ae "$tmp/mnist-ae-$feature"
      devices="$devices $feature"
    else
      echo "   did not build ($(grep -m1 -E '^error' "$tmp/build-$feature.log" || tail -1 "$tmp/build-$feature.log"))"
    fi
  done
  [ -x "$tmp/mnist-ae-wgpu" ] || { cargo build --release -q && cp target/release/mnist-ae "$tmp/mnist-ae-wgpu"; }
fi
bin_for() { if [ "$1" = cpu ]; then echo "$tmp/mnist-ae-wgpu"; else echo "$tmp/mnist-ae-$1"; fi; }
echo "$("$tmp/mnist-ae-wgpu" --version)"
torch_gpu=""
if python3 -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  torch_gpu=1
  echo "PyTorch $(python3 -c 'import torch; print(torch.__version__)') (reference, on the GPU)"
fi

printf '%-7s %5s %-13s %-40s %s\n' model batch device adapter "images/s per epoch -> run | last training loss"
for spec in "conv64 32" "conv64 256" "mlp 256" "vae 128"; do
  set -- $spec
  model=$1 batch=$2
  for device in $devices; do
    out="$tmp/$model-$batch-$device"
    log="$out.log"
    rc=0
    limited "$(bin_for "$device")" train --model "$model" --batch-size "$batch" --epochs "$epochs" \
      --device "$device" "${limit[@]}" --data-dir "$data" --no-download --out "$out" >"$log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
      why=$(grep -m1 '^error' "$log" || tail -1 "$log")
      [ "$rc" = 124 ] && why="stopped after RUN_TIMEOUT=${RUN_TIMEOUT}s (last line: $(tail -1 "$log"))"
      printf '%-7s %5s %-13s failed: %s\n' "$model" "$batch" "$device" "$why"
      continue
    fi
    adapter=$(grep -m1 '^device ' "$log" | sed 's/^device *//')
    rates=$(python3 -c "
import json, sys
m = [json.loads(l) for l in open(sys.argv[1])]
r = [e['images_per_sec'] for e in m]
print(' '.join(f'{x:.0f}' for x in r), '->', round(len(r) / sum(1 / x for x in r)),
      f\"| {m[-1]['train_loss']:.6g}\")" "$out/metrics.jsonl")
    printf '%-7s %5s %-13s %-40s %s\n' "$model" "$batch" "$device" "${adapter:0:40}" "$rates"
  done
  if [ -n "$torch_gpu" ]; then
    if ref=$(limited python3 bench/pytorch_ref.py --model "$model" --batch-size "$batch" \
        --epochs "$epochs" --device cuda --data-dir "$data" 2>"$tmp/pytorch.err"); then
      gpu=$(echo "$ref" | python3 -c "import json, sys; print(json.load(sys.stdin)['device'])")
      rates=$(echo "$ref" | python3 -c "
import json, sys
r = json.load(sys.stdin)
print(' '.join(str(x) for x in r['epoch_images_per_sec']), '->', round(r['images_per_sec']))")
      printf '%-7s %5s %-13s %-40s %s\n' "$model" "$batch" pytorch-cuda "${gpu:0:40}" "$rates"
    else
      printf '%-7s %5s %-13s failed: %s\n' "$model" "$batch" pytorch-cuda "$(tail -1 "$tmp/pytorch.err")"
    fi
  fi
done
