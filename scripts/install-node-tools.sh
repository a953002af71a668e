#!/usr/bin/env bash
# Installs, once, the npm packages the browser end-to-end test and the wasm
# benchmark use into $HANZO_NODE (default ~/.cache/hanzo-candle/node):
# playwright-core (drives Debian's chromium; it downloads no browser) and
# @wllama/wllama (llama.cpp in wasm, the benchmark's peer).
set -euo pipefail
node_dir="${HANZO_NODE:-$HOME/.cache/hanzo-candle/node}"
packages=(playwright-core@1.65.2 @wllama/wllama@3.13.0)
for package in "${packages[@]}"; do
    name="${package%@*}"
    version="${package##*@}"
    installed=$(node -p "require('$node_dir/node_modules/$name/package.json').version" 2>/dev/null || true)
    if [ "$installed" != "$version" ]; then
        npm install --silent --no-audit --no-fund --prefix "$node_dir" "${packages[@]}"
        break
    fi
done
