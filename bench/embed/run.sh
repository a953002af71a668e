#!/usr/bin/env bash
# Sentence embeddings on the CPU: our engine (`hanzo-candle embed`) against
# sentence-transformers (PyTorch CPU) and llama.cpp's embedding mode
# (`llama-server --embeddings` on the same model converted to GGUF f32 by
# llama.cpp's own convert_hf_to_gguf.py), all-MiniLM-L6-v2, same threads.
# Texts/s at batch 1 and BATCH (default 32), for short texts (~10 tokens)
# and 256-token texts (cut at the model's max_seq_length); peak RSS of each
# process. The engines alternate within each configuration.
#
#   bench/embed/run.sh [THREADS] [TEXTS]     # defaults: 2 threads, 64 texts per set
#
# Environment: HANZO_CANDLE_MODELS (default ~/.cache/hanzo-candle/models),
# PYTHON (default /root/venvs/ref/bin/python; needs sentence-transformers and
# gguf), LLAMA_CPP_BIN (a folder holding llama-server; default: built by
# scripts/build-llamacpp.sh), LLAMA_CPP (llama.cpp sources for the
# converter; default: the llama-cpp-python 0.3.36 sdist scripts/build-llamacpp.sh
# unpacks), BATCH (32),
# HANZO_CANDLE_BIN (our binary; default: built here with --release).
# Prints a markdown table on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${1:-2}
N=${2:-64}
BATCH=${BATCH:-32}
PY=${PYTHON:-/root/venvs/ref/bin/python}
MODELS=${HANZO_CANDLE_MODELS:-$HOME/.cache/hanzo-candle/models}
MODEL="$MODELS/all-MiniLM-L6-v2"
LLAMA_CPP=${LLAMA_CPP:-${LLAMA_CPP_CACHE:-$HOME/.cache/hanzo-candle/llama.cpp}/src/llama_cpp_python-0.3.36/vendor/llama.cpp}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
OUT=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$OUT"' EXIT
server=""
log() { echo "[bench/embed] $*" >&2; }

[[ -f "$MODEL/model.safetensors" ]] || HANZO_CANDLE_MODELS="$MODELS" PYTHON="$PY" scripts/fetch-models.sh minilm >&2
LLAMA_BIN=${LLAMA_CPP_BIN:-$(PYTHON="$PY" scripts/build-llamacpp.sh native)}
if [[ -n "${HANZO_CANDLE_BIN:-}" ]]; then
    OURS=$HANZO_CANDLE_BIN
else
    cargo build --release -q -p hanzo-candle >&2
    OURS="$CARGO_TARGET_DIR/release/hanzo-candle"
fi

log "converting the model to GGUF f32 with llama.cpp's converter"
PYTHONPATH="$LLAMA_CPP/gguf-py" "$PY" "$LLAMA_CPP/convert_hf_to_gguf.py" "$MODEL" \
    --outtype f32 --outfile "$OUT/minilm-f32.gguf" >/dev/null 2>&1

"$PY" - "$OUT" "$N" <<'EOF'
import sys
out, n = sys.argv[1], int(sys.argv[2])
words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly "
         "judge boxing matches near the old river bank").split()
with open(f"{out}/short.txt", "w") as f:
    for i in range(n):
        f.write(" ".join(words[(i + j) % len(words)] for j in range(8)) + f" {i}.\n")
with open(f"{out}/long.txt", "w") as f:
    for i in range(n):
        f.write(" ".join(words[(i * 3 + j) % len(words)] for j in range(300)) + f" {i}.\n")
EOF

rss() { # command... -> "texts/s peak_rss_mb" from the last JSON/summary line
    /usr/bin/time -f "%M" -o "$OUT/rss" "$@" >"$OUT/stdout" 2>"$OUT/stderr" || {
        cat "$OUT/stderr" >&2
        return 1
    }
    echo "$(($(cat "$OUT/rss") / 1024))"
}

echo "| texts | batch | hanzo-candle texts/s | sentence-transformers texts/s | llama.cpp (llama-server) texts/s | ours / st | ours / llama.cpp | peak RSS MB (ours / st) |"
echo "|---|---|---|---|---|---|---|---|"
for set in short long; do
    for batch in 1 "$BATCH"; do
        log "$set texts, batch $batch"
        ours_rss=$(rss "$OURS" embed -m "$MODEL" -t "$THREADS" --batch-size "$batch" --file "$OUT/$set.txt")
        ours=$(grep -o '[0-9.]* texts/s' "$OUT/stderr" | cut -d' ' -f1)
        st_rss=$(rss "$PY" bench/embed/peers.py st "$MODEL" "$OUT/$set.txt" "$batch" "$THREADS")
        st=$("$PY" -c "import json,sys; print('%.1f' % json.load(open(sys.argv[1]))['texts_per_s'])" "$OUT/stdout")
        # llama.cpp's non-causal models need each sequence inside one ubatch.
        "$LLAMA_BIN/llama-server" -m "$OUT/minilm-f32.gguf" --embeddings -t "$THREADS" -tb "$THREADS" \
            -np "$batch" -c $((batch * 512)) -b 16384 -ub 16384 --port 18093 >"$OUT/server.log" 2>&1 &
        server=$!
        for _ in $(seq 100); do
            curl -sf localhost:18093/health >/dev/null 2>&1 && break
            sleep 0.2
        done
        "$PY" bench/embed/peers.py llamacpp http://localhost:18093 "$OUT/$set.txt" "$batch" >"$OUT/llama.json"
        kill "$server"
        wait "$server" 2>/dev/null || true
        llama=$("$PY" -c "import json,sys; print('%.1f' % json.load(open(sys.argv[1]))['texts_per_s'])" "$OUT/llama.json")
        ratio() { "$PY" -c "print('%.2f' % ($1 / $2))"; }
        echo "| $set | $batch | $ours | $st | $llama | $(ratio "$ours" "$st") | $(ratio "$ours" "$llama") | $ours_rss / $st_rss |"
    done
done
