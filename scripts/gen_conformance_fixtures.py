#!/usr/bin/env python3
"""Reference outputs for the HIP-19 conformance suite of candle-ops.

Run from the repository root with a Python that has torch, numpy, ml_dtypes
and safetensors (e.g. `python3 -m pip install torch numpy ml_dtypes safetensors`):

    python3 scripts/gen_conformance_fixtures.py

It writes `crates/candle-ops/tests/fixtures/`:
- `promotion.json`: the 7x7 result_type table from NumPy (NEP 50 array-array
  rules, ml_dtypes for bfloat16), plus `a + b` values for every pair.
- `ops.safetensors` + `ops.json`: for every operation of HIP-19 §Core
  Operations, every variant and every HIP-19 dtype, the inputs and PyTorch's
  output, or "n.a." with PyTorch's own error when PyTorch does not define the
  operation for that dtype.

How references are computed:
- Float dtypes: inputs are drawn in the target dtype; the operation runs in
  float64 on those exact values and the result is rounded once to the target
  dtype (the correctly rounded answer; tolerances in the Rust suite are stated
  relative to it). Whether PyTorch supports the op for the dtype at all is
  decided by running it natively in that dtype.
- Integer dtypes run natively in PyTorch. PyTorch's uint32 supports almost no
  arithmetic, so u32 runs on an int64 copy and integer results are wrapped
  back modulo 2^32 (the same wrapping NumPy and PyTorch apply to u8).
- Boolean results (comparisons) are stored as u8 0/1.
"""
import json
import pathlib

import ml_dtypes
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/candle-ops/tests/fixtures"
DTYPES = {
    "f32": torch.float32,
    "f16": torch.float16,
    "bf16": torch.bfloat16,
    "f64": torch.float64,
    "i64": torch.int64,
    "u32": torch.uint32,
    "u8": torch.uint8,
}
FLOATS = {"f32", "f16", "bf16", "f64"}
gen = torch.Generator().manual_seed(19)


def promotion_table():
    np_types = {
        "u8": np.uint8, "u32": np.uint32, "i64": np.int64, "bf16": ml_dtypes.bfloat16,
        "f16": np.float16, "f32": np.float32, "f64": np.float64,
    }
    names = {np.dtype(t).name: k for k, t in np_types.items()}
    table = {}
    for a, ta in np_types.items():
        for b, tb in np_types.items():
            try:
                table[f"{a},{b}"] = {"dtype": names[np.result_type(np.dtype(ta), np.dtype(tb)).name], "source": "numpy"}
            except Exception as e:  # ml_dtypes defines no promotion for these pairs
                table[f"{a},{b}"] = {"dtype": None, "source": f"undefined in numpy/ml_dtypes: {type(e).__name__}"}
    # Values of a + b for every pair where NumPy defines the result.
    a_vals = [1, 2, 250]
    b_vals = [3, 7, 10]
    sums = {}
    for key, entry in table.items():
        if entry["dtype"] is None:
            continue
        a, b = key.split(",")
        r = np.array(a_vals, dtype=np_types[a]) + np.array(b_vals, dtype=np_types[b])
        sums[key] = [float(v) for v in r.astype(np.float64)]
    return {"a": a_vals, "b": b_vals, "table": table, "sums": sums}


def draw(dtype, shape, kind="normal"):
    """Random input of `shape` in the HIP dtype named `dtype`."""
    if dtype in FLOATS:
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        if kind == "positive":
            x = x.abs() + 0.25
        if kind == "distinct":
            x = torch.randperm(int(np.prod(shape)), generator=gen).reshape(shape).double() / 4 - 3
        return x.to(DTYPES[dtype])
    lo, hi = {"u8": (0, 256), "u32": (0, 2**32), "i64": (-1000, 1000)}[dtype]
    if kind == "positive":
        lo = max(lo, 1)
    if kind == "small":
        lo, hi = (0, 16) if dtype != "i64" else (-8, 8)
    x = torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64)
    return to_dtype(x, dtype)


def to_dtype(x, dtype):
    if dtype == "u32":
        return (x & 0xFFFFFFFF).to(torch.uint32) if x.dtype == torch.int64 else x.to(torch.uint32)
    return x.to(DTYPES[dtype])


def compute_view(x, dtype):
    """The tensor PyTorch computes the reference on."""
    if x.dtype.is_floating_point:
        return x.double()
    if x.dtype == torch.uint32:
        return x.to(torch.int64)
    return x


def finish(y, dtype, op):
    """Round or wrap a reference result back to the dtype of the operation."""
    if isinstance(y, (list, tuple)):
        return [finish(t, dtype, op) for t in y]
    if y.dtype == torch.bool:
        return y.to(torch.uint8)
    if dtype in FLOATS and y.dtype == torch.float64:
        return y.to(DTYPES[dtype])
    if y.dtype == torch.int64 and dtype in ("u32", "u8") and op not in INT64_RESULT:
        return to_dtype(y, dtype)
    if y.dtype == torch.float64:
        # Integer inputs of a float-valued op (exp, div...) give f32.
        return y.float()
    return y


INT64_RESULT = {"sum", "argmax", "argmin"}


def native_supported(fn, inputs, dtype):
    """Does PyTorch define the op for this dtype? Run it natively to find out."""
    native = [t if not isinstance(t, torch.Tensor) or dtype != "u32" or t.dtype != torch.uint32 else t for t in inputs]
    try:
        fn(*native)
        return None
    except Exception as e:  # PyTorch's verdict: not defined for this dtype
        msg = str(e).splitlines()[0]
        if dtype == "u32" and ("not implemented for 'UInt32'" in msg or "UInt32" in msg):
            return None  # uint32 coverage gap in PyTorch itself; the int64 copy decides
        return msg


def float64_reference(fn, inputs, dtype):
    args = [compute_view(t, dtype) if isinstance(t, torch.Tensor) and t.dtype != torch.int64 or (isinstance(t, torch.Tensor) and dtype == "u32") else t for t in inputs]
    return fn(*args)


CASES = []


def case(op, variant, fn, make_inputs, index_inputs=(), float_only_reason=None):
    CASES.append(dict(op=op, variant=variant, fn=fn, make=make_inputs, index_inputs=index_inputs,
                      float_only_reason=float_only_reason))


def with_ints_as_float32(fn):
    """PyTorch promotes integer inputs of these functions to float32."""
    def wrapped(x):
        if not x.dtype.is_floating_point:
            x = x.float()
        return fn(x)
    return wrapped


def true_div(a, b):
    if not a.dtype.is_floating_point and not b.dtype.is_floating_point:
        return a.float() / b.float()
    return a / b


# Element-wise arithmetic and comparisons: [3, 4] with [4] (broadcast).
for name, fn in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul), ("div", true_div),
                 ("eq", torch.eq), ("lt", torch.lt), ("gt", torch.gt)]:
    kind_b = "positive" if name == "div" else "normal"
    case(name, "broadcast", fn, lambda d, kb=kind_b: [draw(d, (3, 4)), draw(d, (4,), kb)])
case("eq", "equal_values", torch.eq, lambda d: (lambda x: [x, x.clone()])(draw(d, (2, 5))))

for name, fn, kind in [
    ("neg", torch.neg, "normal"), ("abs", torch.abs, "normal"),
    ("exp", with_ints_as_float32(torch.exp), "small"), ("log", with_ints_as_float32(torch.log), "positive"),
    ("sqrt", with_ints_as_float32(torch.sqrt), "positive"), ("recip", with_ints_as_float32(torch.reciprocal), "positive"),
    ("relu", torch.relu, "normal"), ("gelu", F.gelu, "normal"), ("silu", F.silu, "normal"),
    ("tanh", with_ints_as_float32(torch.tanh), "small"),
]:
    case(name, "3x5", fn, lambda d, k=kind: [draw(d, (3, 5), k)])


def int_sum(x, dims):
    return torch.sum(x, dim=dims)


case("sum", "dims_1", lambda x: int_sum(x, [1]), lambda d: [draw(d, (3, 4, 5), "small" if d not in FLOATS else "normal")])
case("sum", "dims_0_2", lambda x: int_sum(x, [0, 2]), lambda d: [draw(d, (3, 4, 5), "small" if d not in FLOATS else "normal")])
case("mean", "dims_1", lambda x: torch.mean(x, dim=[1]), lambda d: [draw(d, (3, 4, 5))])
case("max", "dim_1", lambda x: torch.amax(x, dim=1), lambda d: [draw(d, (3, 5, 2), "distinct")])
case("min", "dim_1", lambda x: torch.amin(x, dim=1), lambda d: [draw(d, (3, 5, 2), "distinct")])
case("argmax", "dim_1", lambda x: torch.argmax(x, dim=1), lambda d: [draw(d, (3, 5, 2), "distinct")])
case("argmin", "dim_0", lambda x: torch.argmin(x, dim=0), lambda d: [draw(d, (4, 3), "distinct")])
case("argmax", "ties_first_wins", lambda x: torch.argmax(x, dim=1), lambda d: [to_dtype(torch.tensor([[1, 3, 3, 0], [2, 2, 1, 2]]), d)])

case("matmul", "batch_broadcast", torch.matmul, lambda d: [draw(d, (2, 3, 4), "small"), draw(d, (4, 5), "small")])
case("matmul", "vector_matrix", torch.matmul, lambda d: [draw(d, (4,), "small"), draw(d, (4, 3), "small")])
case("transpose", "0_2", lambda x: x.transpose(0, 2), lambda d: [draw(d, (2, 3, 4))])
case("contiguous", "of_transposed", lambda x: x.t().contiguous(), lambda d: [draw(d, (3, 4))])
case("broadcast_as", "3x1_to_2x3x4", lambda x: x.expand(2, 3, 4), lambda d: [draw(d, (3, 1))])

FLOAT_ONLY = tuple(DTYPES)


def sdpa(q, k, v, mask=None, causal=False):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=0.3, enable_gqa=True)


def rand_bool_mask(shape):
    m = torch.rand(shape, generator=gen) > 0.3
    m[..., 0] = True  # every row keeps at least one key
    return m.to(torch.uint8)


case("scaled_dot_product_attention", "gqa_additive_mask",
     lambda q, k, v, m: sdpa(q, k, v, m),
     lambda d: [draw(d, (2, 4, 5, 8)), draw(d, (2, 2, 7, 8)), draw(d, (2, 2, 7, 8)), draw(d, (5, 7))])
case("scaled_dot_product_attention", "bool_mask",
     lambda q, k, v, m: sdpa(q, k, v, m.bool()),
     lambda d: [draw(d, (2, 2, 5, 8)), draw(d, (2, 2, 7, 8)), draw(d, (2, 2, 7, 4)), rand_bool_mask((2, 1, 5, 7))],
     index_inputs=(3,))
case("scaled_dot_product_attention", "causal",
     lambda q, k, v: sdpa(q, k, v, causal=True),
     lambda d: [draw(d, (1, 2, 6, 8)), draw(d, (1, 2, 6, 8)), draw(d, (1, 2, 6, 8))])
case("scaled_dot_product_attention", "long_tiled_no_mask",
     lambda q, k, v: sdpa(q, k, v),
     lambda d: [draw(d, (1, 2, 150, 16)), draw(d, (1, 1, 300, 16)), draw(d, (1, 1, 300, 16))])

case("layer_norm", "with_bias", lambda x, w, b: F.layer_norm(x, (6,), w, b, 1e-5),
     lambda d: [draw(d, (2, 3, 6)), draw(d, (6,)), draw(d, (6,))])
case("layer_norm", "no_bias", lambda x, w: F.layer_norm(x, (6,), w, None, 1e-5),
     lambda d: [draw(d, (4, 6)), draw(d, (6,))])
case("rms_norm", "3d", lambda x, w: F.rms_norm(x, (8,), w, 1e-6), lambda d: [draw(d, (2, 3, 8)), draw(d, (8,))])
case("rms_norm_residual", "3d",
     lambda x, r, w: (lambda h: (F.rms_norm(h, (8,), w, 1e-6), h))(x + r),
     lambda d: [draw(d, (2, 3, 8)), draw(d, (2, 3, 8)), draw(d, (8,))])


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_every_two(x):
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def rope_tables(dtype, seq, dim, interleaved=False):
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    freqs = torch.outer(torch.arange(seq, dtype=torch.float64), inv)
    emb = freqs.repeat_interleave(2, dim=-1) if interleaved else torch.cat((freqs, freqs), dim=-1)
    return [emb.cos().to(DTYPES[dtype]), emb.sin().to(DTYPES[dtype])]


ROPE_INTS = ("PyTorch has no RoPE op to ask; rotating by real angles is not defined "
             "for integer tensors, so HIP-19's floats-only reading applies")
case("rotary_embedding", "rotate_half", lambda x, c, s: x * c + rotate_half(x) * s,
     lambda d: [draw(d, (2, 3, 4, 8))] + rope_tables(d, 4, 8), float_only_reason=ROPE_INTS)
case("rotary_embedding", "interleaved", lambda x, c, s: x * c + rotate_every_two(x) * s,
     lambda d: [draw(d, (1, 2, 5, 6))] + rope_tables(d, 5, 6, interleaved=True), float_only_reason=ROPE_INTS)
case("softmax", "dim_1", lambda x: F.softmax(x, dim=1), lambda d: [draw(d, (3, 4, 5))])
case("softmax", "last_dim", lambda x: F.softmax(x, dim=-1), lambda d: [draw(d, (3, 7))])
case("log_softmax", "dim_0", lambda x: F.log_softmax(x, dim=0), lambda d: [draw(d, (4, 3))])
case("log_softmax", "last_dim", lambda x: F.log_softmax(x, dim=-1), lambda d: [draw(d, (2, 6))])
case("embedding", "2x3_ids", lambda ids, w: F.embedding(ids, w),
     lambda d: [torch.randint(0, 10, (2, 3), generator=gen), draw(d, (10, 4))], index_inputs=(0,))
case("conv2d", "pad1_stride2_bias", lambda x, k, b: F.conv2d(x, k, b, stride=2, padding=1),
     lambda d: [draw(d, (2, 3, 7, 7), "small"), draw(d, (4, 3, 3, 3), "small"), draw(d, (4,), "small")])
case("conv2d", "no_bias", lambda x, k: F.conv2d(x, k, None, stride=1, padding=0),
     lambda d: [draw(d, (1, 2, 5, 6), "small"), draw(d, (3, 2, 2, 3), "small")])
case("avg_pool2d", "k2_s2", lambda x: F.avg_pool2d(x, 2, 2), lambda d: [draw(d, (2, 3, 6, 6), "small")])
case("avg_pool2d", "k3_s1", lambda x: F.avg_pool2d(x, 3, 1), lambda d: [draw(d, (1, 2, 5, 5), "small")])
case("max_pool2d", "k2_s2", lambda x: F.max_pool2d(x, 2, 2), lambda d: [draw(d, (2, 3, 6, 6))])
case("max_pool2d", "k3_s1", lambda x: F.max_pool2d(x, 3, 1), lambda d: [draw(d, (1, 2, 5, 5))])

case("reshape", "2x3x4_to_4x6", lambda x: x.reshape(4, 6), lambda d: [draw(d, (2, 3, 4))])
case("squeeze", "dim_1", lambda x: x.squeeze(1), lambda d: [draw(d, (3, 1, 4))])
case("squeeze", "non_unit_dim_is_noop", lambda x: x.squeeze(0), lambda d: [draw(d, (3, 1, 4))])
case("unsqueeze", "dim_1", lambda x: x.unsqueeze(1), lambda d: [draw(d, (3, 4))])
case("narrow", "dim1_1_2", lambda x: x.narrow(1, 1, 2), lambda d: [draw(d, (3, 5))])
case("chunk", "8_in_3", lambda x: x.chunk(3, dim=1), lambda d: [draw(d, (2, 8, 3))])
case("chunk", "6_in_4_gives_3", lambda x: x.chunk(4, dim=1), lambda d: [draw(d, (2, 6))])
case("cat", "dim_1", lambda a, b, c: torch.cat([a, b, c], dim=1),
     lambda d: [draw(d, (2, 1, 3)), draw(d, (2, 4, 3)), draw(d, (2, 2, 3))])
case("stack", "dim_1", lambda a, b: torch.stack([a, b], dim=1), lambda d: [draw(d, (3, 4)), draw(d, (3, 4))])
case("gather", "dim_1_smaller_index", lambda x, i: torch.gather(x, 1, i),
     lambda d: [draw(d, (4, 5)), torch.randint(0, 5, (3, 2), generator=gen)], index_inputs=(1,))
case("scatter", "dim_1_smaller_index",
     lambda x, i, s: x.scatter(1, i, s),
     lambda d: [draw(d, (3, 5)), torch.stack([torch.randperm(5, generator=gen)[:2] for _ in range(2)]), draw(d, (2, 3))],
     index_inputs=(1,))
case("index_select", "dim_0", lambda x, i: torch.index_select(x, 0, i),
     lambda d: [draw(d, (5, 3)), torch.tensor([4, 0, 2, 2])], index_inputs=(1,))


def bottom_right_causal_mask(q_len, kv_len):
    # With a KV cache the queries are the last q_len of kv_len positions:
    # query i sits at position kv_len - q_len + i and sees every key up to
    # it. PyTorch's is_causal aligns the mask top-left instead, so the mask
    # is spelled out.
    return torch.ones(q_len, kv_len, dtype=torch.bool).tril(diagonal=kv_len - q_len)


# Appended last so that the random draws of every earlier case keep their
# values. 18 queries (past one 16-query block) over 70 keys (past one
# 64-key tile), 4 heads sharing 2 KV heads.
case("scaled_dot_product_attention", "causal_kv_cache",
     lambda q, k, v: sdpa(q, k, v, bottom_right_causal_mask(q.shape[-2], k.shape[-2])),
     lambda d: [draw(d, (1, 4, 18, 8)), draw(d, (1, 2, 70, 8)), draw(d, (1, 2, 70, 8))])


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "promotion.json").write_text(json.dumps(promotion_table(), indent=1, sort_keys=True) + "\n")
    tensors, manifest = {}, []
    for c in CASES:
        for dtype in DTYPES:
            key = f"{c['op']}.{c['variant']}.{dtype}"
            inputs = c["make"](dtype)
            entry = {"op": c["op"], "variant": c["variant"], "dtype": dtype, "key": key}
            verdict = c["float_only_reason"] if dtype not in FLOATS else None
            verdict = verdict or native_supported(c["fn"], [t.to(torch.int64) if (t.dtype == torch.uint32) else t for t in inputs]
                                       if dtype == "u32" else inputs, dtype)
            entry["inputs"] = len(inputs)
            for i, t in enumerate(inputs):
                tensors[f"{key}.in{i}"] = t.contiguous().clone()
            if verdict is not None:
                # Inputs are kept so the suite can check that we reject them too.
                entry["status"] = "n.a."
                entry["reason"] = verdict
                manifest.append(entry)
                continue
            args = []
            for i, t in enumerate(inputs):
                if i in c["index_inputs"]:
                    args.append(t.bool() if c["op"] == "scaled_dot_product_attention" else t)
                else:
                    args.append(compute_view(t, dtype))
            ref = c["fn"](*args)
            ref = finish(ref, dtype, c["op"])
            entry["status"] = "ok"
            entry["outputs"] = len(ref) if isinstance(ref, (list, tuple)) else 1
            for i, t in enumerate(ref if isinstance(ref, (list, tuple)) else [ref]):
                tensors[f"{key}.out{i}"] = t.contiguous().clone()
            manifest.append(entry)
    save_file(tensors, str(OUT / "ops.safetensors"))
    (OUT / "ops.json").write_text(json.dumps(manifest, indent=1) + "\n")
    ok = sum(e["status"] == "ok" for e in manifest)
    print(f"{len(manifest)} cells: {ok} with references, {len(manifest) - ok} n.a.")


if __name__ == "__main__":
    main()
