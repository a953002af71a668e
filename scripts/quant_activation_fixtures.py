"""Activation-block fixtures: what llama.cpp's x86 CPU backend makes of f32 activations
before a quantized dot product (Q8_0 for Q4_0/Q5_0/Q8_0 weights, Q8_1 for Q4_1/Q5_1,
Q8_K for the K-quants).

Run (from the repository root):
    /root/venvs/ref/bin/python scripts/quant_activation_fixtures.py

The blocks are computed by a numpy transcription of ggml's documented algorithm for the
x86 backend (ggml-cpu/arch/x86/quants.c):
  Q8_0/Q8_1: amax = max|x|, d = amax / 127 (f32), stored as f16 (round to nearest even);
             q = round_half_even(x * (127 / amax))  -- `_mm256_round_ps(_MM_ROUND_NEAREST)`;
             Q8_1 adds s = f16(d * sum(q)) with the f32 d.
  Q8_K:      x86 runs the reference `quantize_row_q8_K_ref`: x_max = the first value of
             largest magnitude, iscale = -127 / x_max, q = min(127, nearest_int(iscale*x))
             (nearest_int rounds half to even through the 1.5*2^23 trick), d = 1 / iscale
             (f32), bsums = sums of 16 consecutive q. An all-zero block is d = 0, q = 0,
             bsums = 0.
When llama-cpp-python is installed (it is in /root/venvs/ref), the script also runs the
shipped libggml-cpu's own `quantize_row_q8_0/_q8_1/_q8_K` through ctypes on the same
input and asserts byte equality with the numpy blocks, and reports how many blocks
ggml's scalar reference (`gguf.quants.quantize(.., Q8_0)`, round half away from zero)
would make differently -- the inputs include exact ties so the two rules are told apart.

Writes crates/candle-quant/tests/fixtures/quant/:
  activations.in.f32   little-endian f32 input (a multiple of 256 values)
  activations.q8_0     ggml block_q8_0 bytes (34 per 32 values)
  activations.q8_1     ggml block_q8_1 bytes (36 per 32 values)
  activations.q8_k     ggml block_q8_K bytes (292 per 256 values)
"""

import ctypes
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "candle-quant", "tests", "fixtures", "quant")
rng = np.random.default_rng(20261126)
F = np.float32


def inputs():
    blocks = []
    # Gaussian activations at the magnitudes decoder layers see.
    for scale in (0.02, 1.0, 40.0):
        blocks.append(rng.standard_normal(256).astype(F) * F(scale))
    # Exact ties: with max|x| = 127 the multiplier is exactly 1 (Q8_0/Q8_1) and
    # -1 or 1 (Q8_K), so half-integers stay half-integers.
    ties = (rng.integers(-126, 126, 256) + 0.5).astype(F)
    ties[7] = F(127.0)
    blocks.append(ties)
    neg_ties = (rng.integers(-126, 126, 256) + 0.5).astype(F)
    neg_ties[200] = F(-127.0)
    blocks.append(neg_ties)
    # Small ties: half-integers times a power of two keep the ties exact.
    small = ((rng.integers(-126, 126, 256) + 0.5) * 2.0**-10).astype(F)
    small[::32] = F(127.0 * 2.0**-10)
    blocks.append(small)
    # One all-zero 32-block inside a super-block, then an all-zero super-block.
    mixed = rng.standard_normal(256).astype(F)
    mixed[64:96] = 0.0
    blocks.append(mixed)
    blocks.append(np.zeros(256, F))
    # One-signed blocks and a repeated maximum (the first occurrence sets Q8_K's sign).
    pos = np.abs(rng.standard_normal(256)).astype(F) * F(3.0)
    pos[10] = pos[90] = F(9.0)
    blocks.append(pos)
    blocks.append(-np.abs(rng.standard_normal(256)).astype(F))
    return np.concatenate(blocks)


def q8_x86(x, with_sum):
    out = bytearray()
    for b in x.reshape(-1, 32):
        amax = np.max(np.abs(b))
        d = F(amax / F(127.0))
        inv = F(F(127.0) / amax) if amax != 0 else F(0.0)
        q = np.rint((b * inv).astype(F)).astype(np.int32)
        out += np.float16(d).tobytes()
        if with_sum:
            out += np.float16(F(d * F(q.sum()))).tobytes()
        out += q.astype(np.int8).tobytes()
    return bytes(out)


def q8_k_ref(x):
    out = bytearray()
    for b in x.reshape(-1, 256):
        i = int(np.argmax(np.abs(b)))
        if b[i] == 0:
            out += np.zeros(292, np.uint8).tobytes()
            continue
        iscale = F(F(-127.0) / b[i])
        q = np.minimum(np.rint((iscale * b).astype(F)), 127).astype(np.int32)
        out += F(F(1.0) / iscale).tobytes()
        out += q.astype(np.int8).tobytes()
        out += q.reshape(16, 16).sum(axis=1).astype("<i2").tobytes()
    return bytes(out)


def llama_cpp_blocks(x):
    try:
        import llama_cpp
    except ImportError:
        return None
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    ctypes.CDLL(os.path.join(libdir, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(os.path.join(libdir, "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    assert cpu.ggml_cpu_has_avx2(), "the comparison is about the x86 AVX2 path"
    res = {}
    for name, per in (("q8_0", 34), ("q8_1", 36), ("q8_K", 292)):
        elems = 256 if name == "q8_K" else 32
        buf = np.zeros(len(x) // elems * per, np.uint8)
        fn = getattr(cpu, "quantize_row_" + name)
        fn(x.ctypes.data_as(ctypes.c_void_p), buf.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(len(x)))
        res[name] = buf.tobytes()
    return res


def main():
    x = inputs()
    ours = {"q8_0": q8_x86(x, False), "q8_1": q8_x86(x, True), "q8_K": q8_k_ref(x)}
    shipped = llama_cpp_blocks(x)
    if shipped is None:
        print("llama-cpp-python not installed: numpy blocks not cross-checked")
    else:
        for name, blob in ours.items():
            assert blob == shipped[name], f"{name}: numpy transcription differs from libggml-cpu"
        print("numpy blocks == libggml-cpu quantize_row_{q8_0,q8_1,q8_K} byte for byte")
    try:
        from gguf import GGMLQuantizationType, quantize

        ref = quantize(x.reshape(-1, 32), GGMLQuantizationType.Q8_0).tobytes()
        diff = sum(a != b for a, b in zip(
            (ref[i:i + 34] for i in range(0, len(ref), 34)),
            (ours["q8_0"][i:i + 34] for i in range(0, len(ref), 34))))
        print(f"gguf-py (scalar reference rounding) differs in {diff} of {len(ref) // 34} Q8_0 blocks")
    except ImportError:
        pass
    x.astype("<f4").tofile(os.path.join(OUT, "activations.in.f32"))
    for name, blob in ours.items():
        with open(os.path.join(OUT, "activations." + name.lower()), "wb") as f:
            f.write(blob)


if __name__ == "__main__":
    main()
