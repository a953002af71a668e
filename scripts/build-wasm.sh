#!/usr/bin/env bash
# Builds the npm package @hanzoai/candle-wasm into crates/candle-wasm/pkg
# (then `npm pack` there makes the tarball). Downloads nothing but registry
# packages, installed once into $HANZO_TOOLS (default
# ~/.cache/hanzo-candle/tools) and reused:
# - wasm-bindgen-cli, the exact version Cargo.lock pins for `wasm-bindgen`
#   (`cargo install`), which also brings wasm-bindgen-test-runner;
# - wasm-opt from the npm `binaryen` package (Debian's is too old).
# Two builds: with SIMD128 (.cargo/config.toml) and without; the package's
# index.js picks one at run time by feature detection.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="${HANZO_TOOLS:-$HOME/.cache/hanzo-candle/tools}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
out=crates/candle-wasm/pkg

scripts/install-wasm-tools.sh

# RUSTFLAGS replaces the flags of .cargo/config.toml (its target-specific
# setting would be merged with them instead, keeping +simd128).
build() { # build <name> <rustflags> <target dir>
    RUSTFLAGS="$2" CARGO_TARGET_DIR="$3" \
        cargo build --target wasm32-unknown-unknown --release -p candle-wasm
    "$tools/bin/wasm-bindgen" --target web --out-dir "$out/$1" --out-name candle_wasm \
        "$3/wasm32-unknown-unknown/release/candle_wasm.wasm"
    local features=(--enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext
        --enable-mutable-globals --enable-reference-types --enable-multivalue)
    [ "$1" = simd ] && features+=(--enable-simd)
    "$tools/node_modules/.bin/wasm-opt" -O3 "${features[@]}" \
        "$out/$1/candle_wasm_bg.wasm" -o "$out/$1/candle_wasm_bg.wasm"
    rm -f "$out/$1/.gitignore" "$out/$1/package.json"
}

rm -rf "$out"
getrandom='--cfg getrandom_backend="wasm_js"'
build simd "-C target-feature=+simd128 $getrandom" "$target"
# Its own target directory: other flags would rebuild the SIMD one each time.
build nosimd "$getrandom" "$target/wasm-nosimd"
cp crates/candle-wasm/js/* "$out/"
cp README.md "$out/README.md"
ls -l "$out"/*/candle_wasm_bg.wasm
