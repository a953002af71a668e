#!/usr/bin/env bash
# The whole test suite: every crate's unit, integration, property and doc
# tests. The real-model tests need the models, so they are fetched first
# (once; see scripts/fetch-models.sh). Last, a short fuzz run of the GGUF
# reader and tokenizer-metadata targets (HANZO_FUZZ_SECONDS per target,
# default 60; cargo-fuzz is installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
scripts/gguf_fuzz_smoke.sh "${HANZO_FUZZ_SECONDS:-60}"
