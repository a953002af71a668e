#!/usr/bin/env bash
# End-to-end test of the demo page (crates/candle-wasm/www, see
# crates/candle-wasm/tests/demo.mjs) with the real SmolLM2 model in
# headless Chromium. Needs the built package (scripts/build-wasm.sh), the
# model (scripts/fetch-models.sh) and Debian's chromium; installs npm
# playwright-core once into $HANZO_NODE (default ~/.cache/hanzo-candle/node)
# and builds the native CLI for the reference replies.
set -euo pipefail
cd "$(dirname "$0")/.."
node_dir="${HANZO_NODE:-$HOME/.cache/hanzo-candle/node}"
scripts/install-node-tools.sh
model="${HANZO_CANDLE_MODELS:-$HOME/.cache/hanzo-candle/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
cargo build -p hanzo-candle
HANZO_NODE_MODULES="$node_dir/node_modules" \
    node crates/candle-wasm/tests/demo.mjs "$model" "${CARGO_TARGET_DIR:-$PWD/target}/debug/hanzo-candle"
