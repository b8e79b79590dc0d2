#!/usr/bin/env bash
# GPU throughput, for a machine with a GPU:
#   bench/gpu.sh [EPOCHS] [LIMIT_TRAIN]     (defaults: 3 epochs, all 54,000 training images)
#   GPU_FEATURES=wgpu bench/gpu.sh          (only the wgpu build; default: "wgpu cuda")
# Builds mnist-ae with `--features wgpu`, and with `--features cuda` where that builds (it needs
# the LLVM bundle that cubecl-cuda's build downloads; see the README), then trains conv64
# (batch 32 and 256) and mlp (batch 256) for EPOCHS epochs on every GPU device it built, and on
# the CPU for comparison, and prints each epoch's images/s and the run's (all epochs' images
# over their seconds, validation excluded), with the devices' names.
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

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/GPU: /'

devices="cpu"
for feature in ${GPU_FEATURES:-wgpu cuda}; do
  echo "== cargo build --release --features $feature"
  if cargo build --release --features "$feature" -q 2>"$tmp/build-$feature.log"; then
    cp target/release/mnist-ae "$tmp/mnist-ae-$feature"
    devices="$devices $feature"
  else
    echo "   did not build ($(grep -m1 -E '^error' "$tmp/build-$feature.log" || tail -1 "$tmp/build-$feature.log"))"
  fi
done
bin_for() { if [ "$1" = cpu ]; then echo "$tmp/mnist-ae-wgpu"; else echo "$tmp/mnist-ae-$1"; fi; }
[ -x "$tmp/mnist-ae-wgpu" ] || { cargo build --release -q && cp target/release/mnist-ae "$tmp/mnist-ae-wgpu"; }

printf '%-7s %5s %-6s %-40s %s\n' model batch device adapter "images/s per epoch -> run"
for spec in "conv64 32" "conv64 256" "mlp 256"; do
  set -- $spec
  model=$1 batch=$2
  for device in $devices; do
    out="$tmp/$model-$batch-$device"
    log="$out.log"
    if ! "$(bin_for "$device")" train --model "$model" --batch-size "$batch" --epochs "$epochs" \
        --device "$device" "${limit[@]}" --data-dir "$data" --no-download --out "$out" >"$log" 2>&1; then
      printf '%-7s %5s %-6s failed: %s\n' "$model" "$batch" "$device" "$(grep -m1 '^error' "$log" || tail -1 "$log")"
      continue
    fi
    adapter=$(grep -m1 '^device ' "$log" | sed 's/^device *//')
    rates=$(python3 -c "
import json, sys
r = [json.loads(l)['images_per_sec'] for l in open(sys.argv[1])]
print(' '.join(f'{x:.0f}' for x in r), '->', round(len(r) / sum(1 / x for x in r)))" "$out/metrics.jsonl")
    printf '%-7s %5s %-6s %-40s %s\n' "$model" "$batch" "$device" "${adapter:0:40}" "$rates"
  done
done
