#!/usr/bin/env bash
# The GPU test tier: builds with `--features wgpu` and runs the tests in tests/it/gpu.rs (every
# preset trained on --device wgpu against the CPU, every command on the GPU, the error without
# an adapter). Extra arguments go to cargo test.
#
# It needs a wgpu adapter. Where there is none, Debian's mesa-vulkan-drivers (lavapipe, a
# Vulkan driver that runs on the CPU) is installed (apt-get as root, or passwordless sudo);
# where that is impossible the tier fails, saying why, rather than passing without running.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/install.sh
# An installed Vulkan driver leaves its manifest here (lavapipe: lvp_icd.x86_64.json).
icds() { ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json 2>/dev/null || true; }
if [ -z "$(icds)" ]; then
  install_packages "a CPU Vulkan driver for the GPU tests" mesa-vulkan-drivers libvulkan1
fi
if [ -z "$(icds)" ]; then
  echo "error: no Vulkan driver is installed and none can be installed here (needs apt-get as root or passwordless sudo); install your GPU's Vulkan driver, or mesa-vulkan-drivers" >&2
  exit 1
fi

if [ -z "${MNIST_AE_DATA:-}" ] && [ -f ../shared/data/mnist/train-images-idx3-ubyte.gz ]; then
  MNIST_AE_DATA="$(cd ../shared/data/mnist && pwd)"
  export MNIST_AE_DATA
fi
# Mesa's Vulkan loader complains on every start when XDG_RUNTIME_DIR is unset (a container, CI);
# a private one quiets it.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_RUNTIME_DIR="$(mktemp -d)"
  export XDG_RUNTIME_DIR
fi
cargo test --release --features wgpu --test it "$@" -- gpu::
