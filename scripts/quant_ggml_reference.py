"""What ggml's own quantizers make of deterministic rows: the reference our quantizers
(crates/candle-quant/src/quant/*.rs) are checked against, byte for byte, by
crates/candle-quant/tests/quant_ggml.rs.

Needs libggml-base built from llama.cpp's sources (the ones vendored in the
llama-cpp-python 0.3.36 sdist):

    PATH=/root/venvs/build/bin:$PATH cmake -S <llama.cpp> -B /root/llama-build \
        -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_TYPE=Release
    cmake --build /root/llama-build -j2 --target ggml

Run (from the repository root):
    /root/venvs/ref/bin/python scripts/quant_ggml_reference.py [--lib /root/llama-build/bin]

Each format goes through `ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row,
NULL)`, the call llama-quantize makes; with no importance matrix it runs ggml's
reference quantizers (`quantize_row_*_ref` in ggml-quants.c). ggml-base is compiled
without -march flags, so no fused multiply-adds change its float arithmetic.

Writes crates/candle-quant/tests/fixtures/quant/:
  ggml_quantize.in.f32      little-endian f32, ROWS rows of N_PER_ROW values
  ggml_quantize.json        the row distributions, in order, and where the bytes came from
  ggml_quantize.<type>      ggml's bytes for the whole input, one file per format
                            (q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K)
"""

import argparse
import ctypes
import json
import os
import subprocess

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "candle-quant", "tests", "fixtures", "quant")
LLAMA_CPP = "/root/llama-src/llama_cpp_python-0.3.36/vendor/llama.cpp"
F = np.float32
# Two K-quant super-blocks, sixteen 32-value blocks per row.
N_PER_ROW = 512
# ggml_type ids (ggml.h).
TYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q4_K": 12, "q5_K": 13, "q6_K": 14}


def rows():
    """(name, rows) pairs covering what the quantizers branch on."""
    rng = np.random.default_rng(20261203)
    n = N_PER_ROW

    def normal(k, scale):
        return rng.standard_normal((k, n)).astype(F) * F(scale)

    with_outliers = normal(4, 0.02)
    for r in with_outliers:
        idx = rng.choice(n, 6, replace=False)
        r[idx] = (rng.standard_normal(6) * 2.0).astype(F)
    mixed_zeros = normal(2, 1.0)
    mixed_zeros[0, 32:64] = 0.0  # one zero block inside a super-block
    mixed_zeros[1, 256:] = 0.0  # one zero super-block
    integers = rng.integers(-8, 9, (2, n)).astype(F)  # exact ties for every rounding rule
    halves = (rng.integers(-16, 16, (2, n)) + 0.5).astype(F)
    return [
        ("gaussian sd 0.02 (weight-like)", normal(24, 0.02)),
        ("gaussian sd 1", normal(8, 1.0)),
        ("uniform [-1, 1)", rng.uniform(-1, 1, (4, n)).astype(F)),
        ("uniform [0, 1) (one-signed)", rng.uniform(0, 1, (2, n)).astype(F)),
        ("uniform [-3, -1) (one-signed, no zero)", rng.uniform(-3, -1, (2, n)).astype(F)),
        ("student-t df 2 (heavy tails)", rng.standard_t(2, (4, n)).astype(F)),
        ("gaussian sd 0.02 with 6 outliers of sd 2 per row", with_outliers),
        ("all zeros", np.zeros((2, n), F)),
        ("gaussian with a zero block / a zero super-block", mixed_zeros),
        ("integers in [-8, 8]", integers),
        ("half-integers in [-15.5, 15.5]", halves),
        ("gaussian sd 1e-5 (f16 subnormal scales)", normal(2, 1e-5)),
        ("gaussian sd 1e-8 (scales below f16)", normal(2, 1e-8)),
        ("gaussian sd 1e-17 (below ggml's GROUP_MAX_EPS)", normal(2, 1e-17)),
    ]


def ggml_commit():
    try:
        return subprocess.run(
            ["git", "-C", LLAMA_CPP, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="/root/llama-build/bin", help="folder holding libggml-base.so")
    args = ap.parse_args()

    lib = ctypes.CDLL(os.path.join(args.lib, "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
    ]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]

    groups = rows()
    x = np.ascontiguousarray(np.concatenate([g for _, g in groups]), dtype="<f4")
    nrows = x.shape[0]
    os.makedirs(OUT, exist_ok=True)
    x.tofile(os.path.join(OUT, "ggml_quantize.in.f32"))

    for name, ty in TYPES.items():
        assert not lib.ggml_quantize_requires_imatrix(ty), name
        size = lib.ggml_row_size(ty, N_PER_ROW) * nrows
        dst = np.zeros(size, np.uint8)
        written = lib.ggml_quantize_chunk(ty, x.ctypes.data, dst.ctypes.data, 0, nrows, N_PER_ROW, None)
        assert written == size, (name, written, size)
        dst.tofile(os.path.join(OUT, f"ggml_quantize.{name}"))
        print(f"{name}: {size} bytes")

    meta = {
        "generator": "scripts/quant_ggml_reference.py",
        "reference": "ggml_quantize_chunk(type, x, dst, 0, rows, n_per_row, NULL) from libggml-base",
        "llama_cpp_commit": ggml_commit(),
        "n_per_row": N_PER_ROW,
        "rows": nrows,
        "groups": [{"name": name, "rows": len(g)} for name, g in groups],
        "types": list(TYPES),
    }
    with open(os.path.join(OUT, "ggml_quantize.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{nrows} rows of {N_PER_ROW} -> {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
