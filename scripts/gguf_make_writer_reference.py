"""Write a small GGUF file with gguf-py's GGUFWriter (the writer maintained
with llama.cpp), as an independent reference for our reader and writer.

crates/candle-quant/tests/gguf_roundtrip.rs reads it back with our reader and
rebuilds it with our GgufWriter, asserting identical values and bytes.

Run (from the repo root):
    /root/venvs/ref/bin/pip install gguf==0.19.0
    /root/venvs/ref/bin/python scripts/gguf_make_writer_reference.py
"""

import pathlib

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/candle-quant/tests/fixtures/gguf/reference/gguf_py_writer.gguf"


def main():
    w = GGUFWriter(str(OUT), arch="llama")
    w.add_uint32("llama.block_count", 2)
    w.add_uint64("llama.context_length", 2048)
    w.add_int32("test.int32", -7)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float64("test.float64", -2.5)
    w.add_bool("test.bool", True)
    w.add_uint8("test.uint8", 200)
    w.add_int8("test.int8", -100)
    w.add_uint16("test.uint16", 60000)
    w.add_int16("test.int16", -30000)
    w.add_int64("test.int64", -(1 << 40))
    w.add_string("test.unicode", "héllo ✓ 日本")
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "▁hi", "日本"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.5, 3.25])
    w.add_array("tokenizer.ggml.token_type", [3, 3, 1, 1])
    w.add_tensor("f32.weight", np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5 - 1.0)
    w.add_tensor("f16.weight", (np.arange(8, dtype=np.float32) / 3).astype(np.float16))
    q4 = np.arange(2 * 18, dtype=np.uint8).reshape(1, 36)
    w.add_tensor("q4.weight", q4, raw_dtype=GGMLQuantizationType.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
