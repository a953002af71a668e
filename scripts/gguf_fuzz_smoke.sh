#!/usr/bin/env bash
# Short fuzz run of each candle-quant GGUF target, for CI.
#
# Needs: cargo-fuzz (`cargo install cargo-fuzz`) and a C++ toolchain (libFuzzer
# is built by the libfuzzer-sys crate). Runs on the stable toolchain through
# RUSTC_BOOTSTRAP=1, without a sanitizer (the reader has no unsafe code on
# this path; a panic or a failed assertion is what the targets detect).
#
# Usage: scripts/gguf_fuzz_smoke.sh [SECONDS_PER_TARGET]   (default 60)
# Builds into $GGUF_FUZZ_TARGET_DIR (default $CARGO_TARGET_DIR/gguf-fuzz; the
# targets use candle-quant without its `tensor` feature, so the instrumented
# build takes about a minute); a crashing input is left in its artifacts/ folder.
set -euo pipefail
seconds="${1:-60}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
crate="$repo/crates/candle-quant"
target_dir="${GGUF_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$repo/target}/gguf-fuzz}"
artifacts="$target_dir/artifacts"
work="$(mktemp -d)"
mkdir -p "$artifacts"
trap 'rm -rf "$work"' EXIT

cd "$crate/fuzz"
for target in gguf_read gguf_tokenizer_metadata; do
  mkdir -p "$work/$target"
  # Seeds: every malformed file plus the valid references.
  cp "$crate"/tests/fixtures/gguf/malformed/*.gguf "$crate"/tests/fixtures/gguf/reference/*.gguf "$work/$target/"
  RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --target-dir "$target_dir" "$target" "$work/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/$target-"
done
echo "fuzz smoke: no crashes in ${seconds}s per target"
