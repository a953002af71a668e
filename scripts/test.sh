#!/usr/bin/env bash
# The whole test suite: every crate's unit, integration, property and doc
# tests. The real-model tests need the models, so they are fetched first
# (once; see scripts/fetch-models.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
