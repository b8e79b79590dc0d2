#!/usr/bin/env bash
# The checks for a machine lent for a few minutes (a GPU, many cores) that has no Rust: run
# with binaries built elsewhere, in this order, each bounded so the last still runs:
#   MNIST_AE_BIN=path/mnist-ae [MNIST_AE_TESTS=path/it] [MNIST_AE_CHECKS_BIN=path] \
#     bench/lent_machine.sh
# MNIST_AE_BIN: `cargo build --release --features wgpu`'s target/release/mnist-ae;
# MNIST_AE_TESTS: the GPU tier's test binary, as `cargo test --release --features wgpu --test it
# --no-run` names it (target/release/deps/it-…), optional; MNIST_AE_CHECKS_BIN: see 3,
# optional. Stripped, each binary is about 110 MB, 21 MB with `xz`: bench/pack_for_lent.sh
# builds and packs all three (`.xz`), and this script unpacks such files itself (with xz, or
# python3's lzma).
#  1. the GPU tier's one-step test: one optimisation step of every preset on the GPU against
#     the CPU, every parameter compared, with its printout (and the autotuner's choices);
#  2. the vae, the preset that has diverged on a GPU: 1,200 images, 2 epochs, seed 7, on the
#     GPU and on the CPU, each run's training and validation losses, then each run's weights
#     evaluated on the CPU (test MSE). The GPU run tunes afresh and logs cubecl's choices;
#     the kernels it chose where Mesa's CPU Vulkan driver (lavapipe, on which the vae matches
#     the CPU) chose others are printed: bench/autotune/vae-lavapipe.txt holds lavapipe's;
#  3. with MNIST_AE_CHECKS_BIN (`cargo build --release --features wgpu-checks`): the vae's
#     first epoch with every autotune candidate run and compared with the others, so that a
#     kernel that computes wrongly on this GPU stops the run, named. Only such a stop counts:
#     running the candidates changes the losses themselves (on lavapipe the validation loss
#     came out 1,046 and 1,062 instead of 352);
#  4. CPU thread scaling, every thread count up to the cores with 2, 4 and 8 shards, one
#     round, 1 epoch of 20,000 images (`bench/scaling.sh`).
# Environment: MNIST_AE_DATA (default ../shared/data/mnist), STEP_TIMEOUT (seconds allowed to
# the test, and to each training and evaluation; default 90: 1 to 3 take at most 9 minutes),
# SHARDS (default "2 4 8"), PARTS (default "1 2 3 4": the parts to run, so that a session
# whose commands may run 10 minutes each can run "1 2 3", then "4"). Exits non-zero when a
# check failed or ran out of time.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${MNIST_AE_BIN:?set MNIST_AE_BIN to a mnist-ae built with --features wgpu}"
data="${MNIST_AE_DATA:-$(cd ../shared/data/mnist 2>/dev/null && pwd || echo ../shared/data/mnist)}"
export MNIST_AE_DATA="$data"
limit_s="${STEP_TIMEOUT:-90}"
failed=0
parts=" ${PARTS:-1 2 3 4} "
want() { [[ "$parts" == *" $1 "* ]]; }
# `train` stops at the end of its step on SIGTERM (and saves a checkpoint): killed 5 s later.
bounded() { timeout -k 5 "$limit_s" "$@"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Mesa's Vulkan loader complains on every start when XDG_RUNTIME_DIR is unset.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$tmp}"
# Binaries carried packed (bench/pack_for_lent.sh writes `.xz` files) are unpacked here.
unpack() {
  case "$1" in
    *.xz)
      local dst
      dst="$tmp/$(basename "${1%.xz}")"
      if command -v xz >/dev/null; then
        xz -dc "$1" >"$dst"
      else
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$dst"
      fi
      chmod +x "$dst"
      echo "$dst"
      ;;
    *) echo "$1" ;;
  esac
}
bin=$(unpack "$MNIST_AE_BIN")
[ -z "${MNIST_AE_TESTS:-}" ] || MNIST_AE_TESTS=$(unpack "$MNIST_AE_TESTS")
[ -z "${MNIST_AE_CHECKS_BIN:-}" ] || MNIST_AE_CHECKS_BIN=$(unpack "$MNIST_AE_CHECKS_BIN")

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/GPU: /'

if want 1 && [ -n "${MNIST_AE_TESTS:-}" ]; then
  echo "== 1. one step of every preset, GPU against CPU"
  bounded "$MNIST_AE_TESTS" --exact gpu::one_step_changes_every_parameter_as_on_the_cpu \
    --nocapture --test-threads 1
  status=$?
  echo "(exit $status)"
  [ "$status" = 0 ] || failed=1
fi

# The vae run of parts 2 and 3 (the same images, epochs aside, and seed in both).
vae=(train --model vae --limit-train 1200 --seed 7 --data-dir "$data" --no-download)
# cubecl's choices, one line per tuned operation and shape: "kernel-key".
choices() { grep '^Fastest result' "$1" | sed 's/^Fastest result //; s/\.$//' | LC_ALL=C sort -u; }

if want 2; then
  echo "== 2. the vae on the GPU and on the CPU"
  for device in wgpu cpu; do
    out="$tmp/vae-$device"
    # On the GPU: tune afresh (no cached choices) and log every choice.
    CUBECL_DEBUG_LOG="$tmp/autotune-vae.log" CUBECL_AUTOTUNE_CACHE=0 \
      bounded "$bin" "${vae[@]}" --device "$device" --epochs 2 --out "$out" 2>&1 |
      grep -E '^epoch [0-9]+/[0-9]+ train|error'
    status=${PIPESTATUS[0]}
    if [ "$device" = wgpu ] && [ -f "$tmp/autotune-vae.log" ]; then
      choices "$tmp/autotune-vae.log" >"$tmp/vae-choices.txt"
      echo "(cubecl chose $(wc -l <"$tmp/vae-choices.txt") kernels; those lavapipe did not choose:)"
      LC_ALL=C comm -23 "$tmp/vae-choices.txt" bench/autotune/vae-lavapipe.txt | cut -c1-300
    fi
    echo "(train on $device: exit $status)"
    if [ "$status" = 0 ]; then
      # The GPU's weights and the CPU's, both scored on the CPU.
      bounded "$bin" eval "$out" --device cpu --data-dir "$data" --no-download 2>&1 | grep -iE 'mse|error'
      [ "${PIPESTATUS[0]}" = 0 ] || failed=1
    else
      failed=1
    fi
  done
fi

if want 3 && [ -n "${MNIST_AE_CHECKS_BIN:-}" ]; then
  echo "== 3. the vae with every autotune candidate checked against the others"
  RUST_BACKTRACE=1 CUBECL_AUTOTUNE_CACHE=0 bounded "$MNIST_AE_CHECKS_BIN" "${vae[@]}" \
    --device wgpu --epochs 1 --out "$tmp/vae-checks" >"$tmp/checks.log" 2>&1
  status=$?
  grep -E '^epoch [0-9]+/[0-9]+ train' "$tmp/checks.log"
  if [ "$status" != 0 ]; then
    # The failed check's message, and the frames naming the operation being tuned.
    grep -v '^ *at \|^ *[0-9]*: std::\|^ *[0-9]*: core::' "$tmp/checks.log" | grep -iE -A2 \
      'panick|assert|mismatch|differ|tune|conv|matmul|reduce|sum' | head -60
    failed=1
  fi
  echo "(exit $status)"
fi

if want 4; then
  echo "== 4. CPU threads and shards"
  SHARDS="${SHARDS:-2 4 8}" LIMIT_TRAIN=20000 MNIST_AE_BIN="$bin" bench/scaling.sh "$(nproc)" 1 1 ||
    failed=1
fi
exit "$failed"
