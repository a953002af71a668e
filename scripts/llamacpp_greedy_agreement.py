#!/usr/bin/env python3
"""How far llama.cpp's own greedy continuations agree with the fixture that
llama.cpp made (`crates/candle-engine/tests/fixtures/<model>/llamacpp.json`,
written by `scripts/gen_llamacpp_fixtures.py`), when only the build or a
setting changes: the yardstick for our engine's agreement in
`tests/real_model.rs` (docs/ENGINE.md, "How close to llama.cpp").

    /root/venvs/ref/bin/python scripts/llamacpp_greedy_agreement.py smollm2
    # the same with a llama-cpp-python built without AVX-512:
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \\
        python3 -m pip install --no-cache-dir --no-binary llama-cpp-python llama-cpp-python
    python3 scripts/llamacpp_greedy_agreement.py smollm2

For flash attention off (the fixture's setting) and on, it generates each
fixture prompt's greedy 32-token continuation as the fixture script does and
prints, per prompt, how many leading tokens equal the fixture's.
"""
import json
import sys

import numpy as np
from llama_cpp import Llama, llama_print_system_info

from gen_llamacpp_fixtures import MODELS, MODELS_DIR, ROOT


def continuation(llm, ids, steps):
    llm.reset()
    llm.eval(ids)
    row = np.array(llm.scores[len(ids) - 1])
    tokens = []
    for _ in range(steps):
        tokens.append(int(np.argmax(row)))
        llm.eval([tokens[-1]])
        row = np.array(llm.scores[llm.n_tokens - 1])
    return tokens


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
    file_name = MODELS[name][0]
    fixture = json.loads((ROOT / f"crates/candle-engine/tests/fixtures/{name}/llamacpp.json").read_text())
    simd = [f for f in llama_print_system_info().decode().split("|") if "AVX" in f and "= 1" in f]
    print(f"llama.cpp build: {' '.join(s.strip() for s in simd)}")
    for flash in (False, True):
        llm = Llama(model_path=str(MODELS_DIR / file_name), n_ctx=512, logits_all=True, n_threads=2,
                    verbose=False, seed=0, flash_attn=flash)
        agreed = []
        for prompt in fixture["prompts"]:
            ours = continuation(llm, prompt["ids"], len(prompt["greedy"]))
            agreed.append(next((i for i, (a, b) in enumerate(zip(ours, prompt["greedy"])) if a != b), len(ours)))
        print(f"flash attention {'on ' if flash else 'off'}: leading tokens equal to the fixture's, per prompt: {agreed}")


if __name__ == "__main__":
    main()
