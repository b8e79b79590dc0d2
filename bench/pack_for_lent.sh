#!/usr/bin/env bash
# Builds the binaries bench/lent_machine.sh runs on a machine that has no Rust, and packs them
# small enough to carry there (about 21 MB each with xz; the wgpu binaries are about 110 MB
# stripped):
#   bench/pack_for_lent.sh [OUT]     (default OUT: target/lent)
# writes OUT/mnist-ae.xz (`--features wgpu`), OUT/mnist-ae-checks.xz (`--features
# wgpu-checks`) and OUT/it.xz (the wgpu build's integration tests, with the GPU tier). On the
# other machine, name them as they are: bench/lent_machine.sh unpacks `.xz` files itself.
# The checks build comes first: both builds write target/release/mnist-ae, and this leaves
# the plain wgpu build there.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/lent}"
mkdir -p "$out"
pack() { strip -o "$out/$2" "$1" && xz -T0 -6 -f "$out/$2" && ls -l "$out/$2.xz"; }
cargo build --release --features wgpu-checks
pack target/release/mnist-ae mnist-ae-checks
cargo build --release --features wgpu
pack target/release/mnist-ae mnist-ae
tests=$(cargo test --release --features wgpu --test it --no-run --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -n "$tests" ] || { echo "no test binary found" >&2; exit 1; }
pack "$tests" it
