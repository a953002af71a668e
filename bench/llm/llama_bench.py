#!/usr/bin/env python3
"""Runs llama.cpp's own llama-bench and prints its figures as one JSON object
with the keys of `hanzo-candle bench --json` that llama-bench measures, for
bench/llm/run.sh.

    python bench/llm/llama_bench.py COMMAND...
    e.g. ... timeout 1800 /path/to/llama-bench -m model.gguf -t 2 -p 128,512 -n 128 -r 1 -o json

COMMAND must print llama-bench's `-o json` array on stdout. Each test of it
becomes `prefill_tok_s[N]` (ppN: one batch of N tokens from an empty
context) or `decode_tok_s` (tgN: N tokens one at a time from an empty
context), as median/min/max over its samples. `peak_rss_bytes` is the peak
resident set of COMMAND's largest process (getrusage of the children), so
no Python interpreter is counted. llama-bench reports no load time and no
time to first token. Exits with COMMAND's status when it fails (124 when
`timeout` stopped it).
"""
import json
import resource
import statistics
import subprocess
import sys


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main():
    command = sys.argv[1:]
    if not command:
        sys.exit(__doc__)
    done = subprocess.run(command, stdout=subprocess.PIPE)
    if done.returncode != 0:
        sys.exit(done.returncode)
    # ru_maxrss is in KiB on Linux.
    peak_rss_bytes = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    tests = json.loads(done.stdout)
    prefill, decode = {}, None
    for test in tests:
        rates = summary(test["samples_ts"])
        if test["n_gen"] == 0 and test["n_depth"] == 0:
            prefill[str(test["n_prompt"])] = rates
        elif test["n_prompt"] == 0 and test["n_depth"] == 0:
            decode = rates
        else:
            sys.exit(f"llama_bench.py: unexpected test {test['n_prompt']}+{test['n_gen']}"
                     f" at depth {test['n_depth']}")
    report = {
        "engine": "llama.cpp (llama-bench)",
        "model": tests[0]["model_filename"],
        "threads": tests[0]["n_threads"],
        "build": f"{tests[0]['build_commit']} ({tests[0]['build_number']})",
        "backends": tests[0]["backends"],
        "kv_cache_type": f"{tests[0]['type_k']}/{tests[0]['type_v']}",
        "prefill_tok_s": prefill,
        "peak_rss_bytes": peak_rss_bytes,
    }
    if decode is not None:
        report["decode_tok_s"] = decode
    print(json.dumps(report))


if __name__ == "__main__":
    main()
