#!/usr/bin/env bash
# The checks for a machine lent for a few minutes (a GPU, many cores) that has no Rust: run
# with binaries built elsewhere, in this order, each bounded so the last still runs:
#   MNIST_AE_BIN=path/mnist-ae [MNIST_AE_TESTS=path/it] bench/lent_machine.sh
# MNIST_AE_BIN: `cargo build --release --features wgpu`'s target/release/mnist-ae;
# MNIST_AE_TESTS: the GPU tier's test binary, as `cargo test --release --features wgpu --test it
# --no-run` names it (target/release/deps/it-…), optional.
#  1. the GPU tier's one-step test: one optimisation step of every preset on the GPU against
#     the CPU, every parameter compared, with its printout (and the autotuner's choices);
#  2. the vae, the preset that has diverged on a GPU: 1,200 images, 2 epochs, seed 7, on the
#     GPU and on the CPU, each run's training and validation losses, then each run's weights
#     evaluated on the CPU (test MSE);
#  3. CPU thread scaling, every thread count up to the cores with 2, 4 and 8 shards, one
#     round, 1 epoch of 20,000 images (`bench/scaling.sh`).
# Environment: MNIST_AE_DATA (default ../shared/data/mnist), STEP_TIMEOUT (seconds allowed to
# the test, and to each training and evaluation; default 90: 1 and 2 take at most 6 minutes),
# SHARDS (default "2 4 8"). Exits non-zero when a check failed or ran out of time.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${MNIST_AE_BIN:?set MNIST_AE_BIN to a mnist-ae built with --features wgpu}"
data="${MNIST_AE_DATA:-$(cd ../shared/data/mnist 2>/dev/null && pwd || echo ../shared/data/mnist)}"
export MNIST_AE_DATA="$data"
limit_s="${STEP_TIMEOUT:-90}"
failed=0
# `train` stops at the end of its step on SIGTERM (and saves a checkpoint): killed 5 s later.
bounded() { timeout -k 5 "$limit_s" "$@"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Mesa's Vulkan loader complains on every start when XDG_RUNTIME_DIR is unset.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$tmp}"
bin=$MNIST_AE_BIN

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/GPU: /'

if [ -n "${MNIST_AE_TESTS:-}" ]; then
  echo "== 1. one step of every preset, GPU against CPU"
  bounded "$MNIST_AE_TESTS" --exact gpu::one_step_changes_every_parameter_as_on_the_cpu \
    --nocapture --test-threads 1
  status=$?
  echo "(exit $status)"
  [ "$status" = 0 ] || failed=1
fi

echo "== 2. the vae on the GPU and on the CPU"
for device in wgpu cpu; do
  out="$tmp/vae-$device"
  bounded "$bin" train --model vae --device "$device" --limit-train 1200 --epochs 2 \
    --seed 7 --data-dir "$data" --no-download --out "$out" 2>&1 | grep -E '^epoch [0-9]+/[0-9]+ train|error'
  status=${PIPESTATUS[0]}
  echo "(train on $device: exit $status)"
  if [ "$status" = 0 ]; then
    # The GPU's weights and the CPU's, both scored on the CPU.
    bounded "$bin" eval "$out" --device cpu --data-dir "$data" --no-download 2>&1 | grep -iE 'mse|error'
    [ "${PIPESTATUS[0]}" = 0 ] || failed=1
  else
    failed=1
  fi
done

echo "== 3. CPU threads and shards"
SHARDS="${SHARDS:-2 4 8}" LIMIT_TRAIN=20000 MNIST_AE_BIN="$bin" bench/scaling.sh "$(nproc)" 1 1 ||
  failed=1
exit "$failed"
