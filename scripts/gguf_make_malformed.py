"""Generate the malformed-GGUF regression corpus.

Each file breaks exactly one validation rule of candle_quant::gguf (or
reproduces the integer-overflow class of a named llama.cpp GGUF advisory);
crates/candle-quant/tests/gguf_malformed.rs asserts the specific error each
one produces. The byte layout is written here with `struct`, independently of
the Rust writer. See tests/fixtures/gguf/malformed/README.md for the list.

Run (from the repo root; any Python 3, no packages needed):
    /root/venvs/ref/bin/python scripts/gguf_make_malformed.py
"""

import pathlib
import struct

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/candle-quant/tests/fixtures/gguf/malformed"

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
GGML_F32, GGML_Q4_0, GGML_I8 = 0, 2, 24
ALIGN = 32


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def gstr(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return u64(len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + u32(vtype) + payload


def tinfo(name, dims, ggml_type, offset):
    return gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(ggml_type) + u64(offset)


def pad(buf, align=ALIGN):
    return buf + b"\0" * ((-len(buf)) % align)


def gguf(kvs, tensors, data=b"", version=3, n_kv=None, n_tensors=None, magic=b"GGUF", align=ALIGN):
    head = magic + u32(version) + u64(len(tensors) if n_tensors is None else n_tensors)
    head += u64(len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    if not tensors and not data:
        return body
    return pad(body, align) + data


ARCH = kv("general.architecture", STRING, gstr("llama"))
F32_DATA = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
Q4_DATA = bytes(range(36))  # two Q4_0 blocks of 18 bytes


def valid_parts():
    kvs = [
        ARCH,
        kv("llama.block_count", U32, u32(2)),
        kv("tokenizer.ggml.tokens", ARRAY, u32(STRING) + u64(3) + gstr("<s>") + gstr("a") + gstr("b")),
        kv("tokenizer.ggml.scores", ARRAY, u32(F32) + u64(3) + struct.pack("<3f", 0.0, -1.0, -2.0)),
        kv("tokenizer.ggml.token_type", ARRAY, u32(I32) + u64(3) + struct.pack("<3i", 3, 1, 1)),
        kv("tokenizer.ggml.bos_token_id", U32, u32(0)),
    ]
    tensors = [tinfo("a.weight", [4], GGML_F32, 0), tinfo("b.weight", [32, 2], GGML_Q4_0, 32)]
    data = pad(F32_DATA) + Q4_DATA
    return kvs, tensors, data


def one_tensor(dims, ggml_type=GGML_F32, offset=0, data=F32_DATA, extra_kvs=(), align=ALIGN):
    return gguf([ARCH, *extra_kvs], [tinfo("t", dims, ggml_type, offset)], data, align=align)


def cases():
    kvs, tensors, data = valid_parts()
    valid = gguf(kvs, tensors, data)
    yield "valid_minimal", valid
    yield "bad_magic", b"GGUG" + valid[4:]
    yield "version_1", valid[:4] + u32(1) + valid[8:]
    yield "version_4", valid[:4] + u32(4) + valid[8:]
    yield "big_endian", valid[:4] + struct.pack(">I", 3) + valid[8:]
    yield "truncated_header", valid[:10]
    yield "truncated_in_metadata", gguf([kv("general.name", STRING, gstr("SmolLM2 135M Instruct"))], [])[:-5]
    yield "truncated_tensor_data", valid[:-8]
    # CVE-2024-21825 class: n_kv drives n_kv * sizeof(kv) allocation that wraps.
    yield "cve_2024_21825_kv_count", gguf(kvs, tensors, data, n_kv=1 << 60)
    # CVE-2024-21836 class: n_tensors drives n_tensors * sizeof(info) that wraps.
    yield "cve_2024_21836_tensor_count", gguf(kvs, tensors, data, n_tensors=(1 << 64) // 8 + 1)
    # CVE-2026-27940 class (bypass of the CVE-2025-53630 fix): a tensor count
    # small enough for n * sizeof(info) to fit but whose per-tensor context
    # overhead makes the total memory size wrap.
    yield "cve_2026_27940_tensor_overhead", gguf(kvs, tensors, data, n_tensors=1 << 56)
    # CVE-2024-23496 class: string length u64::MAX; len + 1 wraps to 0.
    yield "cve_2024_23496_string_len", gguf([u64(0xFFFFFFFFFFFFFFFF) + b"key" + bytes(16)], [])
    yield "string_invalid_utf8", gguf([kv("general.name", STRING, gstr(b"ab\xff\xfe"))], [])
    yield "key_invalid_utf8", gguf([kv(b"bad\xc3", U32, u32(1))], [])
    yield "unknown_value_type", gguf([kv("general.x", 13, u32(0))], [])
    yield "invalid_bool", gguf([kv("general.flag", BOOL, b"\x02")], [])
    # CVE-2024-23605 class: array count * element size wraps (2^62 * 4 = 2^64).
    yield "cve_2024_23605_array_count", gguf([kv("tokenizer.ggml.scores", ARRAY, u32(F32) + u64(1 << 62) + b"\0" * 16)], [])
    yield "array_of_strings_count", gguf([kv("tokenizer.ggml.tokens", ARRAY, u32(STRING) + u64(1 << 40) + gstr("a"))], [])
    yield "array_unknown_element_type", gguf([kv("general.arr", ARRAY, u32(99) + u64(0))], [])
    nested = u32(U8) + u64(0)
    for _ in range(5):
        nested = u32(ARRAY) + u64(1) + nested
    yield "array_nesting_too_deep", gguf([kv("general.nested", ARRAY, nested)], [])
    yield "duplicate_key", gguf([ARCH, kv("general.architecture", STRING, gstr("gemma3"))], [])
    yield "duplicate_tensor", gguf([ARCH], [tinfo("t", [4], GGML_F32, 0), tinfo("t", [4], GGML_F32, 32)], pad(F32_DATA) + F32_DATA)
    yield "alignment_wrong_type", one_tensor([4], extra_kvs=[kv("general.alignment", U64, u64(32))])
    yield "alignment_not_power_of_two", one_tensor([4], extra_kvs=[kv("general.alignment", U32, u32(48))], align=48)
    yield "alignment_zero", one_tensor([4], extra_kvs=[kv("general.alignment", U32, u32(0))])
    yield "alignment_too_large", one_tensor([4], extra_kvs=[kv("general.alignment", U32, u32(1 << 31))])
    yield "n_dims_zero", one_tensor([])
    yield "n_dims_too_many", one_tensor([1, 1, 1, 1, 4])
    yield "dim_zero", one_tensor([4, 0])
    yield "dim_exceeds_i64", one_tensor([4, 1 << 63])
    # CVE-2024-21802 class: the product of the dims (ne) wraps.
    yield "cve_2024_21802_element_count", one_tensor([1 << 32, 1 << 32, 1 << 32])
    # CVE-2026-33298 class: element count fits, element count * type size wraps
    # (2^62 F32 elements = 2^64 bytes) so a tiny buffer backs a huge tensor.
    yield "cve_2026_33298_byte_size", one_tensor([1 << 31, 1 << 31])
    yield "unknown_ggml_type", one_tensor([4], ggml_type=1000)
    yield "removed_ggml_type", one_tensor([32], ggml_type=4)
    yield "row_not_block_aligned", one_tensor([33], ggml_type=GGML_Q4_0, data=bytes(36))
    yield "misaligned_offset", one_tensor([4], offset=4, data=bytes(8) + F32_DATA)
    yield "offset_past_end", one_tensor([4], offset=1 << 20)
    # CVE-2025-53630 class: the running sum of tensor sizes wraps; four
    # 2^62-byte I8 tensors sum to exactly 2^64, i.e. 0 after wrapping.
    big = 1 << 62
    yield "cve_2025_53630_size_sum", gguf(
        [ARCH],
        [tinfo(f"t{i}", [big], GGML_I8, i * big) for i in range(4)],
        bytes(64),
    )
    # offset + size itself wraps u64.
    yield "offset_plus_size_wraps", one_tensor([4], offset=(1 << 64) - 32)
    yield "overlapping_tensors", gguf([ARCH], [tinfo("x", [16], GGML_F32, 0), tinfo("y", [4], GGML_F32, 32)], bytes(64))
    # Tensor infos present but the file ends before the aligned data section
    # (the unpadded infos end at byte 111, the data section would start at 128).
    infos = b"GGUF" + u32(3) + u64(1) + u64(1) + ARCH + tinfo("t", [4], GGML_F32, 0)
    assert len(infos) % ALIGN != 0
    yield "data_section_past_end", infos


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, blob in cases():
        (OUT / f"{name}.gguf").write_bytes(blob)
        print(f"{name}.gguf: {len(blob)} bytes")


if __name__ == "__main__":
    main()
