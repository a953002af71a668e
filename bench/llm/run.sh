#!/usr/bin/env bash
# LLM inference on the CPU: our engine (`hanzo-candle bench`) against
# llama.cpp's own `llama-bench` and upstream candle 0.11.1 (quantized_llama /
# quantized_gemma3), same model files, same threads, measured as llama-bench
# measures: ppN is one batch of N tokens from an empty context, tgN is N
# tokens one forward at a time from an empty context (see
# crates/hanzo-candle/src/bench.rs and bench/llm/upstream). The engines
# alternate round by round (one repetition each per round, the order
# rotating), so machine noise spreads over all three; the table shows medians
# over rounds.
#
#   bench/llm/run.sh [ROUNDS] [THREADS]        # defaults: 3 rounds, all cores
#
# BENCH_ISA=avx2 runs all three engines as on an AVX2-only CPU (the reference
# machine kind of shared/PERF-NOTES.md) on a machine that also has AVX-512:
# ours with HANZO_ISA=avx2, upstream built for x86-64-v3, llama.cpp built with
# AVX2 and without AVX-512. Default: native (each at its best).
#
# llama.cpp comes from scripts/build-llamacpp.sh (built once from the
# llama.cpp of the llama-cpp-python 0.3.36 sdist into ~/.cache, about 10
# CPU-minutes), or from LLAMA_CPP_BIN (a folder holding llama-bench).
# Environment: HANZO_CANDLE_MODELS (default ~/.cache/hanzo-candle/models),
# PYTHON (default /root/venvs/ref/bin/python; needs the gguf package, installed
# when missing), BENCH_PROMPTS (128,512), BENCH_DECODE (128), BANDWIDTH (GB/s;
# default: measured by our binary), BENCH_OUT (where the per-run JSON goes;
# default a temporary directory). Installs the models when missing
# (scripts/fetch-models.sh). Prints the markdown table on stdout; progress
# goes to stderr.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
THREADS=${2:-$(nproc)}
PROMPTS=${BENCH_PROMPTS:-128,512}
DECODE=${BENCH_DECODE:-128}
PY=${PYTHON:-/root/venvs/ref/bin/python}
ISA=${BENCH_ISA:-native}
case $ISA in
native) RUST_CPU=native ;;
avx2)
    RUST_CPU=x86-64-v3
    export HANZO_ISA=avx2 ;;
*)
    echo "bench/llm/run.sh: BENCH_ISA must be native or avx2, not '$ISA'" >&2
    exit 2 ;;
esac
MODELS=${HANZO_CANDLE_MODELS:-$HOME/.cache/hanzo-candle/models}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
OUT=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
# A run that hangs or crawls must not stall the others.
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-1800}
# Errors must fit a table note: anyhow's message and causes, no backtrace.
export RUST_BACKTRACE=0
log() { echo "[bench/llm] $*" >&2; }

set -e
[[ -f "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" && -f "$MODELS/gemma-3-270m-q4_k_m.gguf" ]] ||
    HANZO_CANDLE_MODELS="$MODELS" PYTHON="$PY" scripts/fetch-models.sh >&2
LLAMA_BIN=$(PYTHON="$PY" scripts/build-llamacpp.sh "$ISA")
"$PY" -c "import gguf" 2>/dev/null || "$PY" -m pip install gguf >&2
log "building hanzo-candle (release)"
cargo build --release -q -p hanzo-candle >&2
log "building upstream candle's models (release, -C target-cpu=$RUST_CPU)"
# Without target-cpu=native (or x86-64-v3) upstream's element-wise ops are not
# vectorised (3-4x slower); its own target directory keeps these flags apart.
UPSTREAM_TARGET=$CARGO_TARGET_DIR/bench-upstream
[[ $ISA == native ]] || UPSTREAM_TARGET=$UPSTREAM_TARGET-$ISA
(cd bench/llm/upstream &&
    RUSTFLAGS="-C target-cpu=$RUST_CPU" CARGO_TARGET_DIR="$UPSTREAM_TARGET" \
        cargo build --release -q >&2)
set +e
OURS=$CARGO_TARGET_DIR/release/hanzo-candle
UPSTREAM=$UPSTREAM_TARGET/release/upstream-candle-bench
log "instruction sets: $ISA; llama.cpp from $LLAMA_BIN"

MODEL_FILES=(SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf)
if [[ -z "${BANDWIDTH:-}" ]]; then
    BANDWIDTH=$("$OURS" bench -m "$MODELS/${MODEL_FILES[0]}" -t "$THREADS" -p 1 -n 1 -r 1 --json |
        "$PY" -c "import json, sys; print(json.load(sys.stdin)['bandwidth_gbps'])")
fi
log "memory bandwidth ${BANDWIDTH} GB/s, ${THREADS} threads"

# One run of ENGINE on MODEL: its JSON, or {"error": ...} with the reason.
run_one() { # engine model round
    local engine=$1 model=$2 round=$3 out="$OUT/$2.$1.$3.json" err="$OUT/$2.$1.$3.err"
    local path="$MODELS/$model"
    case $engine in
    ours) timeout "$RUN_TIMEOUT" "$OURS" bench -m "$path" -t "$THREADS" -p "$PROMPTS" -n "$DECODE" \
        -r 1 --bandwidth "$BANDWIDTH" --json >"$out" 2>"$err" ;;
    llamacpp) "$PY" bench/llm/llama_bench.py timeout "$RUN_TIMEOUT" "$LLAMA_BIN/llama-bench" \
        -m "$path" -t "$THREADS" -p "$PROMPTS" -n "$DECODE" -r 1 -o json >"$out" 2>"$err" ;;
    upstream) RAYON_NUM_THREADS=$THREADS CANDLE_NUM_THREADS=$THREADS timeout "$RUN_TIMEOUT" \
        "$UPSTREAM" "$path" "$PROMPTS" "$DECODE" 1 >"$out" 2>"$err" ;;
    esac
    local status=$?
    if [[ $status -ne 0 ]]; then
        local reason
        reason=$(grep -v '^\s*$' "$err" | tail -n 3 | sed 's/^ *//' | paste -sd ' ' | cut -c1-300)
        [[ $status -eq 124 ]] && reason="timed out after ${RUN_TIMEOUT} s"
        "$PY" -c 'import json, sys; print(json.dumps({"error": sys.argv[1]}))' \
            "${reason:-exit status $status}" >"$out"
        log "$engine on $model (round $round) failed: ${reason:-exit status $status}"
    else
        log "$engine on $model (round $round) done"
    fi
}

ENGINES=(ours llamacpp upstream)
for round in $(seq 1 "$ROUNDS"); do
    for model in "${MODEL_FILES[@]}"; do
        for i in 0 1 2; do
            run_one "${ENGINES[$(((i + round - 1) % 3))]}" "$model" "$round"
        done
    done
done

echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
    "load average before the table: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
"$PY" bench/llm/table.py "$OUT" "$MODELS" "$BANDWIDTH" "$THREADS" "$ROUNDS" "$PROMPTS" "$DECODE" \
    "${MODEL_FILES[@]}"
