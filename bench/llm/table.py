#!/usr/bin/env python3
"""The markdown table of bench/llm/run.sh, from the per-run JSON it wrote.

    /root/venvs/ref/bin/python bench/llm/table.py OUT_DIR MODELS_DIR BANDWIDTH_GBPS \
        THREADS ROUNDS PROMPT_LENGTHS DECODE_TOKENS MODEL_FILE...

Each cell is the median over rounds (one repetition per engine per round),
with the range in brackets; "not measured" where an engine's report lacks
the metric (llama-bench reports no load time and no time to first token).
ppN and tgN are llama-bench's tests: N prompt tokens in one batch, and N
tokens decoded one at a time, both from an empty context. The bytes of
weights read per decoded token
come from the file's tensor table (gguf-py, independent of our reader):
every tensor, except the token embedding when a separate `output.weight`
exists (then only one of its rows is read per token).
"""
import glob
import json
import os
import statistics
import sys

from gguf import GGUFReader

ENGINES = [
    ("ours", "hanzo-candle"),
    ("llamacpp", "llama.cpp (llama-bench)"),
    ("upstream", "candle 0.11.1"),
]


def weight_bytes_per_token(path):
    sizes = {t.name: int(t.n_bytes) for t in GGUFReader(path).tensors}
    total = sum(sizes.values())
    if "output.weight" in sizes and "token_embd.weight" in sizes:
        total -= sizes["token_embd.weight"]
    return total


def runs(out_dir, model, engine):
    """(successful reports, errors) of every round."""
    reports, errors = [], []
    for path in sorted(glob.glob(os.path.join(out_dir, f"{model}.{engine}.*.json"))):
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            report = {"error": f"unreadable output: {e}"}
        (errors if "error" in report else reports).append(report.get("error", report))
    return reports, errors


def main():
    out_dir, models_dir, bandwidth, threads, rounds, prompts, decode = sys.argv[1:8]
    bandwidth = float(bandwidth)
    prompts = prompts.split(",")
    print(
        f"{threads} threads, {rounds} rounds (median [min - max] over rounds), "
        f"memory bandwidth {bandwidth:.1f} GB/s (streaming read, {threads} threads). "
        "ppN: N prompt tokens in one batch, tgN: N tokens decoded one at a time, "
        "both from an empty context (llama-bench's tests). "
        "Ratios are ours ÷ peer, from the medians: above 1 is better for rates, "
        "below 1 is better for times and memory."
    )
    notes = []
    for model in sys.argv[8:]:
        weights = weight_bytes_per_token(os.path.join(models_dir, model))
        ceiling = bandwidth * 1e9 / weights
        data = {key: runs(out_dir, model, key) for key, _ in ENGINES}
        # Each metric reads one number from a report, or None when the
        # engine does not measure it.
        metrics = [
            *[
                (f"pp{p} (tok/s)", lambda r, p=p: r["prefill_tok_s"][p]["median"], 1)
                for p in prompts
            ],
            (f"tg{decode} (tok/s)", lambda r: r["decode_tok_s"]["median"], 1),
            ("load (s)", lambda r: r.get("load_s", {}).get("median"), 3),
            (
                f"TTFT, {prompts[0]}-token prompt (ms)",
                lambda r: r.get("ttft_ms", {}).get("median"),
                0,
            ),
            ("peak RSS (MiB)", lambda r: r["peak_rss_bytes"] / 2**20, 0),
            (
                f"tg{decode} % of bandwidth limit",
                lambda r: 100 * r["decode_tok_s"]["median"] / ceiling,
                0,
            ),
        ]
        print()
        print(
            f"### {model} ({weights / 1e6:.1f} MB of weights per token: "
            f"at most {ceiling:.0f} tok/s at {bandwidth:.1f} GB/s)"
        )
        print()
        print("| metric | " + " | ".join(name for _, name in ENGINES) + " | ours ÷ llama.cpp | ours ÷ candle |")
        print("|---|" + "---|" * (len(ENGINES) + 2))
        for label, value, digits in metrics:
            cells, medians = [], {}
            for key, _ in ENGINES:
                reports, errors = data[key]
                if not reports:
                    cells.append("n/a (failed, see below)" if errors else "n/a")
                    continue
                values = [v for v in map(value, reports) if v is not None]
                if not values:
                    cells.append("not measured")
                    continue
                medians[key] = statistics.median(values)
                cells.append(
                    f"{medians[key]:.{digits}f} [{min(values):.{digits}f} - {max(values):.{digits}f}]"
                    if len(values) > 1
                    else f"{medians[key]:.{digits}f}"
                )
            for peer in ("llamacpp", "upstream"):
                both = "ours" in medians and medians.get(peer)
                cells.append(f"{medians['ours'] / medians[peer]:.2f}" if both else "n/a")
            print(f"| {label} | " + " | ".join(cells) + " |")
        for key, name in ENGINES:
            reports, errors = data[key]
            if errors:
                notes.append(f"{model}, {name}: {len(errors)} failed run(s): {errors[0]}")
    if notes:
        print()
        for note in notes:
            print(f"- {note}")


if __name__ == "__main__":
    main()
