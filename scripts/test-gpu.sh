#!/usr/bin/env bash
# The GPU test tier alone: builds with `--features wgpu` and runs the tests in tests/it/gpu.rs
# (every preset trained on --device wgpu against the CPU, every command on the GPU, the error
# without an adapter). Extra arguments go to cargo test. `scripts/test.sh --gpu` runs these
# tests together with all the others, from the same build.
#
# It needs a wgpu adapter. Where there is none, Debian's mesa-vulkan-drivers (lavapipe, a
# Vulkan driver that runs on the CPU) is installed (apt-get as root, or passwordless sudo);
# where that is impossible the tier fails, saying why, rather than passing without running.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/install.sh
ensure_vulkan
if [ -z "${MNIST_AE_DATA:-}" ] && [ -f ../shared/data/mnist/train-images-idx3-ubyte.gz ]; then
  MNIST_AE_DATA="$(cd ../shared/data/mnist && pwd)"
  export MNIST_AE_DATA
fi
cargo test --release --features wgpu --test it "$@" -- gpu::
