#!/usr/bin/env bash
# The inference server under load: `hanzo-candle serve` against llama.cpp's
# own `llama-server` (continuous batching), same model, threads, slots and
# context per slot, driven by bench/serve/loadgen.py (N streaming chat
# clients, greedy, SERVE_MAX_TOKENS tokens, SERVE_MIX prompt lengths, each client
# sending its next request when the previous one ends).
#
#   bench/serve/run.sh [DURATION_S] [CLIENTS...]     # defaults: 30; 1 4 16 64
#
# Each point loads the server for SERVE_RAMP seconds (default 20, not
# measured: the first wave's prompts all arrive at once), then DURATION_S
# measured seconds, then lets running requests finish (SERVE_DRAIN, 180 s)
# before counting the rest as lost. For every client count both servers run, one at a time, each started fresh
# and waited for (/health 200), then warmed by one request; which goes first
# alternates from point to point so machine noise spreads over both. The
# markdown table goes to stdout, progress to stderr, the per-point JSON and
# server logs to $BENCH_OUT (default: a temporary directory).
#
# llama-server comes from LLAMA_CPP_BIN (a folder holding it) or
# scripts/build-llamacpp.sh (built once from the llama-cpp-python 0.3.36
# sdist). Other settings: see bench/serve/common.sh (SERVE_THREADS=2,
# SERVE_SLOTS=16, SERVE_CTX=1024 per slot, SERVE_MAX_TOKENS=64, ...).
set -uo pipefail
DURATION=${1:-30}
shift || true
CLIENTS=("$@")
((${#CLIENTS[@]})) || CLIENTS=(1 4 16 64)
source "$(dirname "$0")/common.sh"
OUT=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$OUT"

set -e
ensure_model
ensure_ours
ensure_llama
set +e
trap stop_server EXIT

log "model $MODEL, $THREADS threads, $SLOTS slots, context $CTX per slot, $MAX_TOKENS tokens per request, ${RAMP} s ramp + ${DURATION} s measured per point; results in $OUT"
order=(ours llama)
for clients in "${CLIENTS[@]}"; do
    for server in "${order[@]}"; do
        name=$server-c$clients
        start_server "$server" "$OUT/$name.log"
        if ! wait_health 300; then
            log "$server did not become healthy (see $OUT/$name.log)"
            stop_server
            continue
        fi
        log "$name: server $SERVER_PID up; ${RAMP} s ramp + ${DURATION} s measured"
        "$PY" "$HERE/loadgen.py" --url "http://127.0.0.1:$PORT" --clients "$clients" \
            --ramp "$RAMP" --duration "$DURATION" --max-tokens "$MAX_TOKENS" --mix "$MIX" --drain "$DRAIN" --label "$name" \
            --json "$OUT/$name.json" >/dev/null
        stop_server
        ((SERVER_RC == 0)) || log "$server exited with status $SERVER_RC after SIGTERM (see $OUT/$name.log)"
    done
    order=("${order[1]}" "${order[0]}")
done
"$PY" "$HERE/table.py" "$OUT" "${CLIENTS[@]}"
