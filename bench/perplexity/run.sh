#!/usr/bin/env bash
# The faithfulness table of docs/PERPLEXITY.md: for each model, over the
# same tokens of bench/perplexity/text.txt (chunks of 512), the exact
# reference's perplexity, then ours and llama.cpp's (f16 and f32 KV cache)
# compared with it. Needs a release build of hanzo-candle and llama.cpp's
# llama-perplexity ($LLAMA_BIN, default /root/llama-build/bin).
#
#     cargo build --release -p hanzo-candle
#     bench/perplexity/run.sh [smollm2|gemma3]...
set -euo pipefail
cd "$(dirname "$0")/../.."
HC=${HC:-${CARGO_TARGET_DIR:-target}/release/hanzo-candle}
LLAMA_BIN=${LLAMA_BIN:-/root/llama-build/bin}
MODELS=${HANZO_CANDLE_MODELS:-$HOME/.cache/hanzo-candle/models}
TEXT=bench/perplexity/text.txt
THREADS=${THREADS:-2}
WORK=${WORK:-$(mktemp -d)}
summary() { grep -E "^(Final estimate|Mean PPL\(Q\)  |Mean    KLD|Same top p|Base probability)" || true; }
for name in "${@:-smollm2 gemma3}"; do
    case $name in
        smollm2) model=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf chunks=${CHUNKS:-27} ;;
        # 8 chunks: llama.cpp's saved logits take 0.5 MB per position here.
        gemma3) model=$MODELS/gemma-3-270m-q4_k_m.gguf chunks=${CHUNKS:-8} ;;
        *) echo "unknown model $name" >&2; exit 1 ;;
    esac
    exact=$WORK/$name.exact.bin
    echo "== $name: exact reference"
    "$HC" perplexity -m "$model" -f $TEXT --chunks "$chunks" -t "$THREADS" --reference --save-logits "$exact" | summary
    for kv in f16 f32; do
        echo "== $name: ours, $kv KV cache, against the exact reference"
        "$HC" perplexity -m "$model" -f $TEXT --chunks "$chunks" -t "$THREADS" --kv-cache $kv --kl-divergence-base "$exact" | summary
        echo "== $name: llama.cpp, $kv KV cache, against the exact reference"
        "$LLAMA_BIN/llama-perplexity" -m "$model" -f $TEXT -c 512 -b 512 --chunks "$chunks" -t "$THREADS" \
            -ctk $kv -ctv $kv --kl-divergence-base "$WORK/$name.llama.bin" 2>&1 |
            grep -E "Final estimate|tokenizes to" || true
        "$HC" perplexity --llamacpp-logits "$WORK/$name.llama.bin" --kl-divergence-base "$exact" | summary
        rm -f "$WORK/$name.llama.bin"
    done
done
