#!/usr/bin/env bash
# The test command: makes sure what the tests need is there, then runs `cargo test --release`
# (extra arguments go to cargo test).
#
# `scripts/test.sh --gpu` (first) builds with `--features wgpu` instead and so also runs the GPU tier
# (tests/it/gpu.rs: every preset and command on --device wgpu, against the CPU). It needs a
# Vulkan driver: where none is installed, Debian's mesa-vulkan-drivers (lavapipe, which runs
# on the CPU) is installed the same way as Chromium below, or the script stops, saying why.
#
# - Chromium and its WebDriver (the report and explorer tests drive them headless): installed
#   from the system's packages when missing (apt-get as root, or through passwordless sudo).
#   Only where that is impossible are those browser checks skipped, and this script says so
#   loudly at the start and at the end.
# - Real MNIST: $MNIST_AE_DATA, else ../shared/data/mnist, else the cache folder, where
#   `mnist-ae download` fetches and checks the four files when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/install.sh
features=()
if [ "${1:-}" = "--gpu" ]; then
  shift
  ensure_vulkan
  features=(--features wgpu)
fi
chromium_bin="${MNIST_AE_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
driver_bin="${MNIST_AE_CHROMEDRIVER:-$(command -v chromedriver || true)}"
skip_reason=""
if [ -z "$chromium_bin" ] || [ -z "$driver_bin" ]; then
  install_packages "for the browser tests" chromium chromium-driver || true
  chromium_bin="${MNIST_AE_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
  driver_bin="${MNIST_AE_CHROMEDRIVER:-$(command -v chromedriver || true)}"
  if [ -z "$chromium_bin" ] || [ -z "$driver_bin" ]; then
    skip_reason="Chromium and chromedriver are not installed and cannot be installed here \
(needs apt-get as root or passwordless sudo; or set MNIST_AE_CHROMIUM and MNIST_AE_CHROMEDRIVER)"
  fi
fi
[ -n "$chromium_bin" ] && export MNIST_AE_CHROMIUM="$chromium_bin"
[ -n "$driver_bin" ] && export MNIST_AE_CHROMEDRIVER="$driver_bin"

warn_skip() {
  if [ -n "$skip_reason" ]; then
    echo "!!"
    echo "!! SKIPPING THE BROWSER TESTS: $skip_reason"
    echo "!!"
  fi
}
if [ -n "$skip_reason" ]; then
  export MNIST_AE_SKIP_BROWSER=1
  warn_skip
fi

if [ -z "${MNIST_AE_DATA:-}" ]; then
  if [ -f ../shared/data/mnist/train-images-idx3-ubyte.gz ]; then
    MNIST_AE_DATA="$(cd ../shared/data/mnist && pwd)"
  else
    MNIST_AE_DATA="${XDG_CACHE_HOME:-$HOME/.cache}/mnist-ae/mnist"
    echo "== MNIST: $MNIST_AE_DATA (downloaded when missing)"
    cargo run --release ${features[@]+"${features[@]}"} --quiet -- download --data-dir "$MNIST_AE_DATA"
  fi
fi
export MNIST_AE_DATA

status=0
if [ ${#features[@]} -gt 0 ] && [ $# -eq 0 ]; then
  # The GPU tier after the rest, not beside it: lavapipe's threads and the other tests' would
  # share two cores and slow both.
  cargo test --release ${features[@]+"${features[@]}"} -- --skip gpu:: || status=$?
  cargo test --release ${features[@]+"${features[@]}"} --test it -- gpu:: || status=$?
else
  cargo test --release ${features[@]+"${features[@]}"} "$@" || status=$?
fi
warn_skip
exit "$status"
