"""Dump gguf-py's view of real GGUF files to small JSON fixtures.

The Rust tests (crates/candle-quant/tests/gguf_real_models.rs) compare our
reader's metadata and tensor table with these, so the independent reference
is the `gguf` package maintained with llama.cpp.

Run (from the repo root):
    /root/venvs/ref/bin/pip install gguf==0.19.0
    /root/venvs/ref/bin/python scripts/gguf_dump_reference.py \
        ~/.cache/hanzo-candle/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        ~/.cache/hanzo-candle/models/gemma-3-270m-q4_k_m.gguf

Writes crates/candle-quant/tests/fixtures/gguf/reference/<file stem>.json and
ggml_type_sizes.json. Long arrays are summarised (length, first items, last
item, total UTF-8 bytes of strings, in-order float64 sum of numbers) so the
fixtures stay small.
"""

import json
import pathlib
import sys

import gguf
from gguf import GGUFReader, GGUFValueType
from gguf.constants import GGML_QUANT_SIZES

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/candle-quant/tests/fixtures/gguf/reference"
HEAD = 5

TYPE_NAMES = {
    GGUFValueType.UINT8: "uint8",
    GGUFValueType.INT8: "int8",
    GGUFValueType.UINT16: "uint16",
    GGUFValueType.INT16: "int16",
    GGUFValueType.UINT32: "uint32",
    GGUFValueType.INT32: "int32",
    GGUFValueType.FLOAT32: "float32",
    GGUFValueType.BOOL: "bool",
    GGUFValueType.STRING: "string",
    GGUFValueType.ARRAY: "array",
    GGUFValueType.UINT64: "uint64",
    GGUFValueType.INT64: "int64",
    GGUFValueType.FLOAT64: "float64",
}


def scalar(vtype, part):
    if vtype == GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    value = part[0].item()
    if vtype == GGUFValueType.BOOL:
        return bool(value)
    if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return float(value)
    return int(value)


def field_json(field):
    vtype = field.types[0]
    if vtype != GGUFValueType.ARRAY:
        return {"type": TYPE_NAMES[vtype], "value": scalar(vtype, field.parts[field.data[0]])}
    etype = field.types[1]
    items = [scalar(etype, field.parts[i]) for i in field.data]
    out = {"type": "array", "element_type": TYPE_NAMES[etype], "len": len(items), "head": items[:HEAD]}
    if items:
        out["last"] = items[-1]
    if etype == GGUFValueType.STRING:
        out["utf8_bytes"] = sum(len(s.encode("utf-8")) for s in items)
    elif etype != GGUFValueType.BOOL:
        total = 0.0
        for x in items:
            total += float(x)
        out["sum"] = total
    return out


def dump(path):
    reader = GGUFReader(path)
    metadata = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        metadata[name] = field_json(field)
    tensors = [
        {
            "name": t.name,
            "type_id": int(t.tensor_type),
            "type_name": t.tensor_type.name,
            "dims": [int(d) for d in t.shape],
            "n_bytes": int(t.n_bytes),
            "data_offset": int(t.data_offset),
        }
        for t in reader.tensors
    ]
    return {
        "file_len": pathlib.Path(path).stat().st_size,
        "version": int(reader.fields["GGUF.version"].parts[-1][0]),
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "metadata": metadata,
        "tensors": tensors,
    }


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    sizes = {t.name: {"id": int(t), "block_size": bs, "block_bytes": ts} for t, (bs, ts) in GGML_QUANT_SIZES.items()}
    (OUT / "ggml_type_sizes.json").write_text(json.dumps({"gguf_py_version": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0", "types": sizes}, indent=1) + "\n")
    for path in sys.argv[1:]:
        stem = pathlib.Path(path).stem
        (OUT / f"{stem}.json").write_text(json.dumps(dump(path), indent=1, ensure_ascii=False) + "\n")
        print("wrote", OUT / f"{stem}.json")


if __name__ == "__main__":
    main()
