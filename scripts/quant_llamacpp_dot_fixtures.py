"""llama.cpp's own quantized dot products on real model rows, for candle-quant's
"same numerics as llama.cpp" test.

Run (from the repository root, after scripts/quant_fixtures.py wrote the real_* rows):
    /root/venvs/ref/bin/python scripts/quant_llamacpp_dot_fixtures.py

For each real_<model>_<type>.q fixture (3 weight rows cut from the SmolLM2 / Gemma 3
GGUFs) this draws one activation row, and asks the libggml-cpu shipped with
llama-cpp-python (the x86 CPU backend) for its type traits: `from_float` of the weight
type's `vec_dot_type` quantizes the activations (Q8_0 / Q8_1 / Q8_K), and `vec_dot`
computes each row's dot product, exactly as ggml's mul_mat does for one token on the
un-repacked path. Writes next to the rows:
  <case>.x.f32         the activation row (little-endian f32)
  <case>.llamacpp.f32  llama.cpp's 3 outputs
"""

import ctypes
import os

import numpy as np
import llama_cpp

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "candle-quant", "tests", "fixtures", "quant")
CASES = {  # case: (ggml type id, block elems, block bytes)
    "real_smollm2_q4_1": (3, 32, 20),
    "real_smollm2_q8_0": (8, 32, 34),
    "real_gemma3_q5_0": (6, 32, 22),
    "real_gemma3_q4_k": (12, 256, 144),
    "real_gemma3_q6_k": (14, 256, 210),
}
ACT_BYTES = {8: (32, 34), 9: (32, 36), 15: (256, 292)}


class TypeTraitsCpu(ctypes.Structure):
    _fields_ = [
        ("from_float", ctypes.c_void_p),
        ("vec_dot", ctypes.c_void_p),
        ("vec_dot_type", ctypes.c_int),
        ("nrows", ctypes.c_int64),
    ]


FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                           ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def main():
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    ctypes.CDLL(os.path.join(libdir, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(os.path.join(libdir, "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(TypeTraitsCpu)
    assert cpu.ggml_cpu_has_avx2()
    cpu.ggml_cpu_init()  # fills the f16 -> f32 table the dot products read scales through
    rng = np.random.default_rng(20261127)
    for case, (ty, elems, block_bytes) in CASES.items():
        w = np.fromfile(os.path.join(OUT, case + ".q"), dtype=np.uint8)
        rows = 3
        n = len(w) // block_bytes * elems // rows
        traits = cpu.ggml_get_type_traits_cpu(ty).contents
        act_elems, act_block = ACT_BYTES[traits.vec_dot_type]
        x = rng.standard_normal(n).astype(np.float32)
        acts = np.zeros(n // act_elems * act_block, np.uint8)
        act_traits = cpu.ggml_get_type_traits_cpu(traits.vec_dot_type).contents
        FROM_FLOAT(act_traits.from_float)(x.ctypes.data, acts.ctypes.data, n)
        out = np.zeros(rows, np.float32)
        row_bytes = len(w) // rows
        dot = VEC_DOT(traits.vec_dot)
        for r in range(rows):
            s = ctypes.c_float()
            dot(n, ctypes.addressof(s), 0, w.ctypes.data + r * row_bytes, 0, acts.ctypes.data, 0, 1)
            out[r] = s.value
        x.astype("<f4").tofile(os.path.join(OUT, case + ".x.f32"))
        out.astype("<f4").tofile(os.path.join(OUT, case + ".llamacpp.f32"))
        w_hat = np.fromfile(os.path.join(OUT, case + ".deq.f32"), dtype="<f4").reshape(rows, n)
        print(case, n, out, "f64 dot of the dequantized rows:", w_hat.astype(np.float64) @ x)


if __name__ == "__main__":
    main()
