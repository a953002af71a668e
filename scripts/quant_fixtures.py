"""Reference fixtures for candle-quant's block formats, produced by gguf-py (ggml's
independent numpy implementation of quantize/dequantize).

Run (from the repository root):
    /root/venvs/ref/bin/pip install gguf
    /root/venvs/ref/bin/python scripts/quant_fixtures.py [--models DIR]

Writes crates/candle-quant/tests/fixtures/quant/:
  <case>.in.f32   little-endian f32 input values        (quantize cases only)
  <case>.q        quantized bytes (gguf-py's quantize, or random / real-file blocks)
  <case>.deq.f32  gguf-py's dequantization of <case>.q
Real-file cases (real_*) need the SmolLM2 and Gemma 3 GGUFs in --models (see
scripts/fetch-models.sh); they are skipped with a message if absent.
"""

import argparse
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, dequantize, quantize

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "candle-quant", "tests", "fixtures", "quant")
rng = np.random.default_rng(20261125)


def write(case, q, deq, inp=None):
    if inp is not None:
        inp.astype("<f4").tofile(os.path.join(OUT, case + ".in.f32"))
    np.asarray(q, dtype=np.uint8).tofile(os.path.join(OUT, case + ".q"))
    deq.astype("<f4").tofile(os.path.join(OUT, case + ".deq.f32"))


def quantize_inputs(n):
    """Gaussian rows plus the edge cases the rounding rules care about."""
    x = rng.standard_normal(n).astype(np.float32) * np.float32(0.05)
    x[:32] = 0.0  # an all-zero block
    x[32:64] = np.float32(1.5)  # a constant block
    x[64:96] = np.linspace(-1, 1, 32, dtype=np.float32)  # exact ties for several grids
    x[96:128] *= np.float32(1e4)  # large magnitudes
    x[128:160] = -np.abs(x[128:160])  # one-signed block
    return x


def quantize_cases():
    for name, ty in [("q4_0", T.Q4_0), ("q4_1", T.Q4_1), ("q5_0", T.Q5_0), ("q5_1", T.Q5_1), ("q8_0", T.Q8_0)]:
        x = quantize_inputs(1024).reshape(4, 256)
        q = quantize(x, ty)
        write(f"{name}_quantize", q.reshape(-1), dequantize(q, ty).reshape(-1), x.reshape(-1))


def random_k_blocks(ty, block_bytes, d_offsets, n_blocks=8):
    """Random K-quant blocks with finite, moderate f16 super-scales."""
    b = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in d_offsets:
        d = (rng.uniform(1e-4, 1e-2, size=n_blocks)).astype(np.float16)
        b[:, off : off + 2] = d.view(np.uint8).reshape(n_blocks, 2)
    return b


def k_cases():
    for name, ty, size, offs in [("q4_k", T.Q4_K, 144, [0, 2]), ("q5_k", T.Q5_K, 176, [0, 2]), ("q6_k", T.Q6_K, 210, [208])]:
        b = random_k_blocks(ty, size, offs)
        write(f"{name}_random_blocks", b.reshape(-1), dequantize(b, ty).reshape(-1))


def real_cases(models):
    files = {
        "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma3": "gemma-3-270m-q4_k_m.gguf",
    }
    picks = [
        ("smollm2", "blk.0.ffn_down.weight", "q4_1"),
        ("smollm2", "token_embd.weight", "q8_0"),
        ("gemma3", "blk.0.attn_q.weight", "q5_0"),
        ("gemma3", "blk.0.attn_output.weight", "q4_k"),
        ("gemma3", "blk.0.ffn_down.weight", "q6_k"),
        ("gemma3", "token_embd.weight", "q8_0"),
    ]
    readers = {}
    for model, tensor, fmt in picks:
        path = os.path.join(models, files[model])
        if not os.path.exists(path):
            print(f"skipping real_{model}_{fmt}: {path} not found")
            continue
        reader = readers.setdefault(model, GGUFReader(path))
        t = next(t for t in reader.tensors if t.name == tensor)
        rows = np.asarray(t.data)[:3]  # first three rows, raw block bytes
        write(f"real_{model}_{fmt}", rows.reshape(-1), dequantize(rows, t.tensor_type).reshape(-1))
        print(f"real_{model}_{fmt}: {tensor} {t.tensor_type.name} rows of {t.shape[0]}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.environ.get("HANZO_CANDLE_MODELS", os.path.expanduser("~/.cache/hanzo-candle/models")))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    quantize_cases()
    k_cases()
    real_cases(args.models)
