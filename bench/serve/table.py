#!/usr/bin/env python3
"""Markdown table of a bench/serve/run.sh run: table.py OUT_DIR CLIENTS...

Reads OUT_DIR/{ours,llama}-c{N}.json (loadgen.py's output) and prints the
side-by-side table, then the single-client figures and the issue's targets
checked against them. tok/s is measured in the window after the ramp;
whole-run tok/s divides every generated token by the time from the first
request to the last token (ramp and drain included), which still says
something when requests outlast a short window.
"""

import json
import os
import sys


def load(out, server, clients):
    path = os.path.join(out, f"{server}-c{clients}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def pair(r, a, b):
    """p50 / p99 of one metric, both in ms, or both in s once p99 reaches 1 s."""
    if r is None:
        return "n/a"
    if r[a] is None or r[b] is None:
        return "–"
    if r[b] >= 1000:
        return f"{r[a] / 1000:.2f} / {r[b] / 1000:.2f} s"
    return f"{r[a]:.0f} / {r[b]:.0f} ms"


def errors(r):
    if r is None:
        return "not run"
    return f"{r['failed']} / {r['lost']} of {r['requests']}"


def main():
    out, clients = sys.argv[1], [int(c) for c in sys.argv[2:]]
    rows = [
        "| clients | ours tok/s | llama-server tok/s | ratio | TTFT p50 / p99 ours | TTFT p50 / p99 llama-server "
        "| ITL p50 / p99 ours | ITL p50 / p99 llama-server | failed / lost ours | failed / lost llama-server "
        "| tokens/request ours / llama-server | whole-run tok/s ours / llama-server |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    results = {}
    for n in clients:
        ours, llama = load(out, "ours", n), load(out, "llama", n)
        results[n] = (ours, llama)
        tok = lambda r: "n/a" if r is None else f"{r['tok_s']:.1f}"
        ratio = f"{ours['tok_s'] / llama['tok_s']:.2f}x" if ours and llama and llama["tok_s"] else "n/a"
        per_req = lambda r: "n/a" if r is None else str(r["mean_tokens_per_request"])
        whole = lambda r: "n/a" if r is None else f"{r['tok_s_whole_run']:.1f}"
        rows.append(
            f"| {n} | {tok(ours)} | {tok(llama)} | {ratio} "
            f"| {pair(ours, 'ttft_p50_ms', 'ttft_p99_ms')} | {pair(llama, 'ttft_p50_ms', 'ttft_p99_ms')} "
            f"| {pair(ours, 'itl_p50_ms', 'itl_p99_ms')} | {pair(llama, 'itl_p50_ms', 'itl_p99_ms')} "
            f"| {errors(ours)} | {errors(llama)} | {per_req(ours)} / {per_req(llama)} | {whole(ours)} / {whole(llama)} |"
        )
    print("\n".join(rows))
    print()
    one = results.get(1, (None, None))[0]
    if one and one["itl_p50_ms"]:
        decode = 1000 / one["itl_p50_ms"]
        print(
            f"Our single-client decode: {decode:.1f} tok/s (1000 / p50 inter-token latency at 1 client); "
            f"single-client aggregate through the server, prompts and TTFT included: {one['tok_s']:.1f} tok/s."
        )
    else:
        decode = None
        print("Our single-client decode: not measured (no 1-client point).")
    ours16, llama16 = results.get(16, (None, None))
    if ours16 and llama16:
        checks = [
            (f"aggregate at 16 >= 2x our single-client decode ({ours16['tok_s']:.1f} vs 2 x {decode:.1f})"
             if decode else "aggregate at 16 >= 2x our single-client decode (no 1-client point)",
             decode is not None and ours16["tok_s"] >= 2 * decode),
            (f"aggregate at 16 >= 2x llama-server's ({ours16['tok_s']:.1f} vs 2 x {llama16['tok_s']:.1f})",
             ours16["tok_s"] >= 2 * llama16["tok_s"]),
            (f"p99 TTFT at 16 <= llama-server's ({ours16['ttft_p99_ms']} vs {llama16['ttft_p99_ms']} ms)",
             ours16["ttft_p99_ms"] is not None and llama16["ttft_p99_ms"] is not None
             and ours16["ttft_p99_ms"] <= llama16["ttft_p99_ms"]),
        ]
        for text, ok in checks:
            print(f"- {'met' if ok else 'MISSED'}: {text}")
    bad = [n for n, (o, _) in results.items() if o and (o["failed"] or o["lost"])]
    print(f"- {'MISSED' if bad else 'met'}: zero failed or lost requests (ours)"
          + (f"; errors at {', '.join(map(str, bad))} clients" if bad else ""))


if __name__ == "__main__":
    main()
