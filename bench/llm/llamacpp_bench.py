#!/usr/bin/env python3
"""Times llama.cpp (through llama-cpp-python) exactly as `hanzo-candle bench`
times our engine, and prints one JSON object.

    /root/venvs/ref/bin/python bench/llm/llamacpp_bench.py MODEL.gguf \
        PROMPT_LENGTHS DECODE_TOKENS REPEATS THREADS
    e.g. ... smollm2.gguf 128,512 128 3 2

Per repetition: load (`Llama(...)`, file open to ready); time to first token
(the first `eval` over a prompt of the first length, plus the argmax of its
logits); decode of DECODE_TOKENS tokens continuing that prompt, one `eval`
each, the argmax outside the timed region; then one timed `eval` over a fresh
prompt of each length. n_batch = n_ubatch = the longest prompt, so every
prompt is one batch. Prompt token i is first + (i * 7919) % (vocab - first),
first = min(100, vocab // 2), the ids the other engines use. KV cache: f16,
llama.cpp's default.
"""
import ctypes
import json
import sys
import time

import numpy as np
from llama_cpp import Llama


def prompt(length, vocab):
    first = min(100, vocab // 2)
    return [first + (i * 7919) % (vocab - first) for i in range(length)]


def proc_status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def argmax_of_last_logits(llm):
    pointer = llm._ctx.get_logits()
    logits = np.ctypeslib.as_array(
        ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(llm.n_vocab(),)
    )
    return int(logits.argmax())


def summary(values):
    values = sorted(values)
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    return {"median": median, "min": values[0], "max": values[-1]}


def main():
    path, lengths, decode_tokens, repeats, threads = sys.argv[1:6]
    lengths = [int(x) for x in lengths.split(",")]
    decode_tokens, repeats, threads = int(decode_tokens), int(repeats), int(threads)
    context = max(max(lengths), lengths[0] + decode_tokens)
    baseline_rss = proc_status_bytes("VmRSS")

    load, ttft, decode = [], [], []
    prefill = [[] for _ in lengths]
    for _ in range(repeats):
        began = time.perf_counter()
        llm = Llama(
            model_path=path,
            n_ctx=context,
            n_batch=max(lengths),
            n_ubatch=max(lengths),
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        load.append(time.perf_counter() - began)
        vocab = llm.n_vocab()

        first = prompt(lengths[0], vocab)
        began = time.perf_counter()
        llm.eval(first)
        token = argmax_of_last_logits(llm)
        ttft.append((time.perf_counter() - began) * 1e3)

        decoding = 0.0
        for _ in range(decode_tokens):
            began = time.perf_counter()
            llm.eval([token])
            decoding += time.perf_counter() - began
            token = argmax_of_last_logits(llm)
        decode.append(decode_tokens / decoding)

        for rates, length in zip(prefill, lengths):
            llm.reset()
            tokens = prompt(length, vocab)
            began = time.perf_counter()
            llm.eval(tokens)
            rates.append(length / (time.perf_counter() - began))
        llm.close()
        del llm

    print(
        json.dumps(
            {
                "engine": "llama.cpp",
                "model": path,
                "threads": threads,
                "repeats": repeats,
                "decode_tokens": decode_tokens,
                "load_s": summary(load),
                "ttft_ms": summary(ttft),
                "prefill_tok_s": {str(n): summary(r) for n, r in zip(lengths, prefill)},
                "decode_tok_s": summary(decode),
                "peak_rss_bytes": proc_status_bytes("VmHWM"),
                "baseline_rss_bytes": baseline_rss,
            }
        )
    )


if __name__ == "__main__":
    main()
