# Shared by bench/serve/run.sh and bench/serve/soak.sh (sourced, not run):
# the settings both servers get, and starting, waiting for and stopping them.
#
# Environment:
#   HANZO_CANDLE_MODELS  model folder (default ~/.cache/hanzo-candle/models)
#   SERVE_MODEL          default $HANZO_CANDLE_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
#   SERVE_THREADS        2
#   SERVE_SLOTS          16
#   SERVE_CTX            context per slot, 1024 (llama-server gets
#                        SERVE_CTX x SERVE_SLOTS, which it splits evenly over
#                        its slots when -np is given)
#   SERVE_MAX_TOKENS     64
#   SERVE_MIX            prompt lengths, loadgen.py's --mix: mixed (default;
#                        about 20, 150 and 450 tokens) or short (about 20)
#   SERVE_RAMP           seconds of load before the measured window, so the
#                        first wave (all prompts arriving at once) is not
#                        measured; 20
#   SERVE_DRAIN          seconds the requests still running when the load
#                        stops may take before they count as lost; 180
#   SERVE_PORT           18080
#   HANZO_CANDLE_BIN     our binary (default: `cargo build --release -p
#                        hanzo-candle` into $CARGO_TARGET_DIR or ./target)
#   PYTHON               python3; runs the standard-library load generator

MODELS=${HANZO_CANDLE_MODELS:-$HOME/.cache/hanzo-candle/models}
MODEL=${SERVE_MODEL:-$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${SERVE_THREADS:-2}
SLOTS=${SERVE_SLOTS:-16}
CTX=${SERVE_CTX:-1024}
MAX_TOKENS=${SERVE_MAX_TOKENS:-64}
MIX=${SERVE_MIX:-mixed}
PORT=${SERVE_PORT:-18080}
DRAIN=${SERVE_DRAIN:-180}
RAMP=${SERVE_RAMP:-20}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Errors must fit a log line: anyhow's message and causes, no backtrace.
export RUST_BACKTRACE=0

log() { echo "[bench/serve] $*" >&2; }

ensure_model() {
    [[ -f $MODEL ]] && return
    [[ -z ${SERVE_MODEL:-} ]] || { log "SERVE_MODEL=$MODEL does not exist"; exit 1; }
    HANZO_CANDLE_MODELS="$MODELS" "$HERE/../../scripts/fetch-models.sh" >&2
}

ensure_ours() {
    if [[ -n ${HANZO_CANDLE_BIN:-} ]]; then
        OURS=$HANZO_CANDLE_BIN
    else
        local target=${CARGO_TARGET_DIR:-$HERE/../../target}
        log "building hanzo-candle (release)"
        (cd "$HERE/../.." && CARGO_TARGET_DIR=$target cargo build --release -p hanzo-candle >&2)
        OURS=$target/release/hanzo-candle
    fi
    [[ -x $OURS ]] || { log "no hanzo-candle binary at $OURS"; exit 1; }
}

ensure_llama() {
    local dir
    dir=$(PYTHON="$PY" "$HERE/../../scripts/build-llamacpp.sh" native)
    LLAMA_SERVER=$dir/llama-server
    [[ -x $LLAMA_SERVER ]] || { log "no llama-server in $dir"; exit 1; }
}

# start_server ours|llama LOGFILE: starts it in the background on $PORT and
# sets SERVER_PID.
start_server() {
    case $1 in
    ours)
        "$OURS" serve -m "$MODEL" -t "$THREADS" --slots "$SLOTS" --ctx "$CTX" \
            --host 127.0.0.1 --port "$PORT" >"$2" 2>&1 &
        ;;
    llama)
        "$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$SLOTS" -cb \
            -c $((CTX * SLOTS)) --host 127.0.0.1 --port "$PORT" --no-webui >"$2" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
}

# wait_health SECONDS: until GET /health answers 200; fails when the server
# died or the time ran out.
wait_health() {
    local deadline=$((SECONDS + $1))
    while ((SECONDS < deadline)); do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        "$PY" - "http://127.0.0.1:$PORT/health" <<'EOF' && return 0
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
        sleep 0.5
    done
    return 1
}

# stop_server: SIGTERM, then SIGKILL after 30 s; the port is free afterwards.
# SERVER_RC is its exit status (0 expected after SIGTERM).
stop_server() {
    [[ -n ${SERVER_PID:-} ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null
    local i
    for ((i = 0; i < 60; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        log "server $SERVER_PID did not stop within 30 s of SIGTERM; killing it"
        kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    wait "$SERVER_PID" 2>/dev/null
    SERVER_RC=$?
    SERVER_PID=
}
