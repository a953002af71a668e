#!/usr/bin/env python3
"""Reference tokens and logits from llama.cpp (through llama-cpp-python) for
the engine's real-model tests on SmolLM2-135M-Instruct Q4_1 and
Gemma-3-270M Q4_K_M.

    python3 -m pip install llama-cpp-python numpy   # builds llama.cpp (10-20 min)
    scripts/fetch-models.sh
    /root/venvs/ref/bin/python scripts/gen_llamacpp_fixtures.py smollm2
    /root/venvs/ref/bin/python scripts/gen_llamacpp_fixtures.py gemma3

Writes `crates/candle-engine/tests/fixtures/<model>/llamacpp.json`:
- `tokenizer`: for each corpus string, llama.cpp's token ids (special tokens
  parsed) and its detokenization of those ids;
- `prompts`: for each prompt, its ids, and at every position llama.cpp's top
  128 token ids with their log-probabilities (the rest of the mass is
  reported as `tail_mass`), and the greedy 32-token continuation with, at
  each step, the gap between llama.cpp's two highest logits.
Only the top of each distribution is stored to keep the fixture small; the
test computes the KL divergence over those tokens (see the test for the
bound this implies).
"""
import json
import os
import pathlib
import sys

import numpy as np
from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS_DIR = pathlib.Path(os.environ.get("HANZO_CANDLE_MODELS", pathlib.Path.home() / ".cache/hanzo-candle/models"))
TOP = 128
CONTINUATION = 32

CORPUS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and    runs of   whitespace\t\ttabs\n\nnewlines\n",
    "Numbers: 3.14159, 2024-11-25, 1000000 and 0x1F.",
    "Unicode: naïve café, Ελληνικά, русский, 日本語, 한국어, עברית.",
    "Emoji: 🙂🚀👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Code: fn main() { println!(\"{}\", x >> 2 & 0xff); }",
    "",
    "a",
    "don't can't won't it's I'm you're they've",
]

SMOLLM2_PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little robot who",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Water boils at 100 degrees Celsius. Ice melts at",
]

GEMMA3_PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little robot who",
    "<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Water boils at 100 degrees Celsius. Ice melts at",
]

# file name, prompts, whether prompts start with BOS (Gemma is trained with
# it and degenerates without; SmolLM2 has none).
MODELS = {
    "smollm2": ("SmolLM2-135M-Instruct.Q4_1.gguf", SMOLLM2_PROMPTS, False),
    "gemma3": ("gemma-3-270m-q4_k_m.gguf", GEMMA3_PROMPTS, True),
}


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
    file_name, prompt_texts, add_bos = MODELS[name]
    model = MODELS_DIR / file_name
    out = ROOT / f"crates/candle-engine/tests/fixtures/{name}/llamacpp.json"
    llm = Llama(model_path=str(model), n_ctx=512, logits_all=True, n_threads=2, verbose=False, seed=0)
    tokenizer = []
    for text in CORPUS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        back = llm.detokenize(ids, special=True).decode("utf-8", errors="replace")
        tokenizer.append({"text": text, "ids": ids, "detokenized": back})
    prompts = []
    for text in prompt_texts:
        ids = llm.tokenize(text.encode(), add_bos=add_bos, special=True)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float64)
        positions = []
        for row in logits:
            logp = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
            top = np.argsort(-logp)[:TOP]
            positions.append({
                "ids": [int(i) for i in top],
                "logprobs": [float(logp[i]) for i in top],
                "tail_mass": float(max(0.0, 1.0 - np.exp(logp[top]).sum())),
            })
        continuation, margins = [], []
        row = logits[-1]
        for _ in range(CONTINUATION):
            top2 = np.sort(row)[-2:]
            continuation.append(int(np.argmax(row)))
            margins.append(float(top2[1] - top2[0]))
            llm.eval([continuation[-1]])
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        prompts.append({"text": text, "ids": ids, "positions": positions, "greedy": continuation,
                        "greedy_margins": margins})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model.name, "tokenizer": tokenizer, "prompts": prompts}) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
