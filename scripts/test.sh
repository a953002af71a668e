#!/usr/bin/env bash
# The whole test suite. First the lints: rustfmt and clippy (warnings are
# errors) on every target, the engine's browser build included (the rustup
# components and targets are added if missing). Then every crate's unit,
# integration, property and doc tests; the real-model tests need the models,
# so they are fetched first (once; see scripts/fetch-models.sh), and the
# server tests' OpenAI client is installed into a venv (once). Then the
# SIMD128 kernels pass their tests under Node's WASI (wasm32-wasip1; Node
# comes with the machine or .ci/run), and the browser package's tests run in
# headless Chromium, the package builds (scripts/build-wasm.sh), and the demo
# page runs the real SmolLM2 end to end (scripts/test-wasm-demo.sh). Last, a short fuzz run of the GGUF
# reader and tokenizer-metadata targets (HANZO_FUZZ_SECONDS per target,
# default 60; cargo-fuzz is installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
installed=$(rustup component list --installed)
for component in rustfmt clippy; do
    grep -q "^$component-" <<<"$installed" || rustup component add "$component"
done
installed=$(rustup target list --installed)
for target in wasm32-unknown-unknown wasm32-wasip1; do
    grep -qx "$target" <<<"$installed" || rustup target add "$target"
done
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --target wasm32-unknown-unknown -p candle-engine -- -D warnings
cargo clippy --target wasm32-unknown-unknown -p candle-wasm --all-targets -- -D warnings

scripts/fetch-models.sh
# The server tests (crates/hanzo-candle/tests/serve_openai.rs) drive a real
# server with the official OpenAI client, from this venv.
openai_venv="$HOME/.cache/hanzo-candle/openai-venv"
if ! "$openai_venv/bin/python" -c "import openai" >/dev/null 2>&1; then
    python3 -m venv "$openai_venv"
    "$openai_venv/bin/python" -m pip install -q "openai==3.60.0"
fi
cargo test --workspace --all-targets
cargo test --workspace --doc
# Only the kernel and block-format tests: the others need files, processes or
# threads, which WASI under Node does not give a test. Under WASI the kernels
# to check are SIMD128's, whatever the host CPU has.
HANZO_REQUIRE_ISA=simd128 cargo test --target wasm32-wasip1 -p candle-quant --no-default-features --lib -- kernels::tests quant::
# The JavaScript API of @hanzoai/candle-wasm in headless Chromium
# (crates/candle-wasm/tests/web.rs): wasm-bindgen-test-runner (installed once
# by scripts/install-wasm-tools.sh) drives Debian's chromium through
# chromedriver, with crates/candle-wasm/webdriver.json's flags. Then the npm
# package builds (both .wasm builds, wasm-bindgen, wasm-opt) and packs.
scripts/install-wasm-tools.sh
CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}" \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="${HANZO_TOOLS:-$HOME/.cache/hanzo-candle/tools}/bin/wasm-bindgen-test-runner" \
    cargo test --target wasm32-unknown-unknown -p candle-wasm --test web
scripts/build-wasm.sh
(cd crates/candle-wasm/pkg && npm pack --dry-run)
# The demo page end to end in headless Chromium with the real SmolLM2
# (crates/candle-wasm/tests/demo.mjs; npm playwright-core installed once).
scripts/test-wasm-demo.sh
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
scripts/gguf_fuzz_smoke.sh "${HANZO_FUZZ_SECONDS:-60}"
