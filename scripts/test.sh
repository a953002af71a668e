#!/usr/bin/env bash
# The whole test suite: every crate's unit, integration, property and doc
# tests. The real-model tests need the models, so they are fetched first
# (once; see scripts/fetch-models.sh). Then the wasm32 checks: the engine
# core builds for the browser (wasm32-unknown-unknown) and the SIMD128
# kernels pass their tests under Node's WASI (wasm32-wasip1; the rustup
# targets are added if missing, Node comes with the machine or .ci/run).
# Last, a short fuzz run of the GGUF reader and tokenizer-metadata targets
# (HANZO_FUZZ_SECONDS per target, default 60; cargo-fuzz is installed if
# missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
installed=$(rustup target list --installed)
for target in wasm32-unknown-unknown wasm32-wasip1; do
    grep -qx "$target" <<<"$installed" || rustup target add "$target"
done
cargo check --target wasm32-unknown-unknown -p candle-engine
# Only the kernel and block-format tests: the others need files, processes or
# threads, which WASI under Node does not give a test.
cargo test --target wasm32-wasip1 -p candle-quant --no-default-features --lib -- kernels::tests quant::
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
scripts/gguf_fuzz_smoke.sh "${HANZO_FUZZ_SECONDS:-60}"
