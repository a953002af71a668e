"""llama.cpp's decode and prefill speed on the real models, the peer numbers for
candle-quant's kernel work (see docs/QUANT.md).

Run (from the repository root; models from scripts/fetch-models.sh):
    /root/venvs/ref/bin/python scripts/quant_bench_llamacpp.py [MODEL.gguf ...]

For each model and thread count (1, 2): pp512 = one 512-token batch through `eval`
(prompt processing, tokens/s), and decode = 64 single-token `eval` calls after a short
prompt (tokens/s; a Python loop over `eval` measures ~10% below llama-bench, see
shared/PERF-NOTES.md). Median of 3 rounds.
"""

import os
import statistics
import sys
import time

from llama_cpp import Llama

MODELS = os.environ.get("HANZO_CANDLE_MODELS", os.path.expanduser("~/.cache/hanzo-candle/models"))
DEFAULT = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]


def bench(path, threads):
    llm = Llama(model_path=path, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    prompt = [(i * 7919) % 1000 + 100 for i in range(512)]
    pp, dec, pp_cpu, dec_cpu = [], [], [], []
    for _ in range(3):
        llm.reset()
        t, c = time.perf_counter(), time.thread_time()
        llm.eval(prompt)
        pp.append(512 / (time.perf_counter() - t))
        pp_cpu.append(512 / (time.thread_time() - c))
        llm.reset()
        llm.eval(prompt[:8])
        t, c = time.perf_counter(), time.thread_time()
        for i in range(64):
            llm.eval([prompt[8 + i]])
        dec.append(64 / (time.perf_counter() - t))
        dec_cpu.append(64 / (time.thread_time() - c))
    med = statistics.median
    return med(pp), med(dec), med(pp_cpu), med(dec_cpu)


def main():
    paths = sys.argv[1:] or [os.path.join(MODELS, m) for m in DEFAULT]
    for path in paths:
        for threads in [int(t) for t in os.environ.get("THREADS", "1,2").split(",")]:
            pp, dec, pp_cpu, dec_cpu = bench(path, threads)
            cpu = f" (calling-thread CPU time: pp512 {pp_cpu:.1f}, decode {dec_cpu:.1f} tok/s)" if threads == 1 else ""
            print(f"{os.path.basename(path)} threads={threads}: pp512 {pp:.1f} tok/s, decode {dec:.1f} tok/s{cpu}")


if __name__ == "__main__":
    main()
