#!/usr/bin/env bash
# Installs the wasm tools the build and the browser tests need into
# $HANZO_TOOLS (default ~/.cache/hanzo-candle/tools), once: wasm-bindgen-cli
# at exactly Cargo.lock's `wasm-bindgen` version (it has
# wasm-bindgen-test-runner) and wasm-opt from npm `binaryen`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="${HANZO_TOOLS:-$HOME/.cache/hanzo-candle/tools}"
version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if [ "$("$tools/bin/wasm-bindgen" --version 2>/dev/null)" != "wasm-bindgen $version" ]; then
    # Its own build directory, outside the project's, removed afterwards.
    CARGO_TARGET_DIR="$tools/build" cargo install wasm-bindgen-cli --version "$version" --root "$tools"
    rm -rf "$tools/build"
fi
if [ ! -x "$tools/node_modules/.bin/wasm-opt" ]; then
    npm install --silent --no-audit --no-fund --prefix "$tools" binaryen@132.0.0
fi
