#!/usr/bin/env bash
# Memory soak of `hanzo-candle serve`: SOAK_CLIENTS (16) streaming chat
# clients for DURATION_S seconds (default 600) against our server, its
# resident memory (VmRSS of /proc/PID/status) sampled every SAMPLE_S
# seconds.
#
#   bench/serve/soak.sh [DURATION_S] [SAMPLE_S]        # defaults: 600 5
#
# Warm RSS is taken after a first wave in which every client sends exactly one
# request, all at once, so every slot has held a sequence; that request's
# prompt is longer than any the soak sends (loadgen.py --deepest), because
# our KV cache is allocated zeroed and its pages become resident only as
# positions are first written: a first wave of short prompts would leave
# RSS growing for minutes as deeper positions are reached, without any leak.
# Drift is (RSS - warm) / warm over the samples of the soak that follows. The target
# (issue 16) is a drift within 5% over 10 minutes. Prints a summary line
# on stdout; the samples (soak.csv), the load generator's JSON, the server
# log and, when the server has it, a /metrics snapshot after the soak go to
# $BENCH_OUT (default: a temporary directory). Settings: see
# bench/serve/common.sh.
set -uo pipefail
DURATION=${1:-600}
SAMPLE=${2:-5}
source "$(dirname "$0")/common.sh"
CLIENTS=${SOAK_CLIENTS:-16}
OUT=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$OUT"

set -e
ensure_model
ensure_ours
set +e
trap stop_server EXIT

rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SERVER_PID/status" 2>/dev/null; }

start_server ours "$OUT/server.log"
wait_health 300 || { log "server did not become healthy (see $OUT/server.log)"; exit 1; }
log "server $SERVER_PID up; RSS after load $(rss_kib) KiB; first wave: one request per client"
# A duration shorter than any request: each client sends exactly one, then
# the wave drains.
"$PY" "$HERE/loadgen.py" --url "http://127.0.0.1:$PORT" --clients "$CLIENTS" --duration 0.01 \
    --max-tokens "$MAX_TOKENS" --drain "$DRAIN" --deepest --label soak-warm --json "$OUT/warm.json" >/dev/null || exit 1
WARM=$(rss_kib)
log "warm RSS $WARM KiB; soak: $CLIENTS clients for $DURATION s, RSS every $SAMPLE s"

echo "elapsed_s,rss_kib" >"$OUT/soak.csv"
"$PY" "$HERE/loadgen.py" --url "http://127.0.0.1:$PORT" --clients "$CLIENTS" --duration "$DURATION" \
    --max-tokens "$MAX_TOKENS" --drain "$DRAIN" --no-warmup --label soak --json "$OUT/soak.json" >/dev/null &
LOADGEN=$!
start=$SECONDS
while kill -0 "$LOADGEN" 2>/dev/null; do
    rss=$(rss_kib)
    [[ -n $rss ]] || { log "the server is gone (see $OUT/server.log)"; break; }
    echo "$((SECONDS - start)),$rss" >>"$OUT/soak.csv"
    sleep "$SAMPLE"
done
wait "$LOADGEN"
"$PY" - "http://127.0.0.1:$PORT/metrics" "$OUT/metrics.txt" <<'EOF'
import sys, urllib.request
try:
    body = urllib.request.urlopen(sys.argv[1], timeout=5).read()
    open(sys.argv[2], "wb").write(body)
except Exception:
    pass
EOF
stop_server
((SERVER_RC == 0)) || log "the server exited with status $SERVER_RC after SIGTERM"

"$PY" - "$OUT" "$WARM" <<'EOF'
import csv, json, os, sys
out, warm = sys.argv[1], int(sys.argv[2])
rss = [int(r["rss_kib"]) for r in csv.DictReader(open(os.path.join(out, "soak.csv")))]
load = json.load(open(os.path.join(out, "soak.json")))
drift = [100 * (r - warm) / warm for r in rss]
worst = max(drift, key=abs) if drift else 0.0
summary = {
    "warm_rss_mib": round(warm / 1024, 1),
    "min_rss_mib": round(min(rss) / 1024, 1) if rss else None,
    "max_rss_mib": round(max(rss) / 1024, 1) if rss else None,
    "final_rss_mib": round(rss[-1] / 1024, 1) if rss else None,
    "max_drift_pct": round(worst, 2),
    "final_drift_pct": round(drift[-1], 2) if drift else None,
    "samples": len(rss),
    "within_5pct": abs(worst) <= 5,
    "load": {k: load[k] for k in ("clients", "duration_s", "tok_s", "requests", "completed", "failed", "lost")},
}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"))
print(
    f"soak: {summary['load']['clients']} clients, {summary['load']['duration_s']:.0f} s, {len(rss)} samples: "
    f"warm RSS {summary['warm_rss_mib']} MiB, range {summary['min_rss_mib']}-{summary['max_rss_mib']} MiB, "
    f"final {summary['final_rss_mib']} MiB; max drift {summary['max_drift_pct']:+.2f}% "
    f"({'within' if summary['within_5pct'] else 'OUTSIDE'} 5%); {load['tok_s']} tok/s, "
    f"{load['completed']} completed / {load['failed']} failed / {load['lost']} lost of {load['requests']}"
)
EOF
