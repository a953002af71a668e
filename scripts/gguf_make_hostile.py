"""Generate the hostile-model corpus: single-change variants of a tiny valid
llama GGUF, each of which the engine must reject with an error naming what is
wrong (HIP-19 §Security: a model file is input from strangers).

The base model is a 2-layer llama decoder (hidden 8, 2 query heads of 4 sharing
1 key/value head, FFN 16) with random weights from a fixed seed, a 109-token
gpt2-style byte-level BPE vocabulary with 10 merges, and a ChatML chat
template. Every variant changes one thing: a hyper-parameter (huge, zero,
negative, NaN, infinite, out of range, inconsistent with the tensors), a
tokenizer field, a tensor (missing, wrong shape or type, data past the end of
the file), the chat template (runaway loops, recursion, huge ranges and
outputs, undefined names, syntax errors) or the architecture.

Everything is written by gguf-py's GGUFWriter (and patched in place through
its GGUFReader for the data-offset case), an implementation independent of
candle_quant's reader. Output: crates/hanzo-candle/tests/fixtures/hostile/
with manifest.json listing each file, what was changed and a substring its
error message must contain (null for the unchanged control, which must
generate). crates/hanzo-candle/tests/hostile_models.rs runs them all.

Run from the repo root:
    /root/venvs/ref/bin/python scripts/gguf_make_hostile.py
(gguf-py 0.19.0, numpy)
"""

import copy
import json
import pathlib
import shutil

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.gguf_writer import GGUFValue

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/hanzo-candle/tests/fixtures/hostile"
ARCH = "llama"
SEED = 19
LAYERS, HIDDEN, HEADS, KV_HEADS, FFN = 2, 8, 2, 1, 16
HEAD_DIM = HIDDEN // HEADS

T = GGUFValueType
NAN, INF = float("nan"), float("inf")


def byte_chars():
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the
    others are shifted past U+0100 (space is `Ġ`, newline `Ċ`)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, shift = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + shift)
            shift += 1
    return chars


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "i n", "e r", "a s", "u s", "o u", "h i", "Ġ h", "s t"]


def vocabulary():
    chars = byte_chars()
    tokens = SPECIALS + [chars[10]] + [chars[b] for b in range(32, 127)]
    tokens += [m.replace(" ", "") for m in MERGES]
    return tokens


TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class Spec:
    """A GGUF file before writing: metadata in order, tensors in order."""

    def __init__(self):
        self.kv = {}
        self.tensors = {}  # name -> (numpy array, raw ggml type or None, raw shape or None)

    def set(self, key, value, vtype, sub_type=None):
        self.kv[key] = GGUFValue(value=value, type=vtype, sub_type=sub_type)

    def arch(self, key, value, vtype):
        self.set(f"{ARCH}.{key}", value, vtype)


def base():
    rng = np.random.default_rng(SEED)
    s = Spec()
    s.set("general.architecture", ARCH, T.STRING)
    s.set("general.name", "hostile-base", T.STRING)
    s.arch("block_count", LAYERS, T.UINT32)
    s.arch("context_length", 256, T.UINT32)
    s.arch("embedding_length", HIDDEN, T.UINT32)
    s.arch("feed_forward_length", FFN, T.UINT32)
    s.arch("attention.head_count", HEADS, T.UINT32)
    s.arch("attention.head_count_kv", KV_HEADS, T.UINT32)
    s.arch("attention.layer_norm_rms_epsilon", 1e-5, T.FLOAT32)
    s.arch("rope.freq_base", 10000.0, T.FLOAT32)
    s.arch("rope.scaling.type", "linear", T.STRING)
    s.arch("rope.scaling.factor", 1.0, T.FLOAT32)
    tokens = vocabulary()
    s.arch("vocab_size", len(tokens), T.UINT32)
    s.set("tokenizer.ggml.model", "gpt2", T.STRING)
    s.set("tokenizer.ggml.pre", "gpt2", T.STRING)
    s.set("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING)
    types = [3 if t in SPECIALS else 1 for t in tokens]
    s.set("tokenizer.ggml.token_type", types, T.ARRAY, T.INT32)
    s.set("tokenizer.ggml.merges", MERGES, T.ARRAY, T.STRING)
    s.set("tokenizer.ggml.bos_token_id", 0, T.UINT32)
    s.set("tokenizer.ggml.eos_token_id", 2, T.UINT32)
    s.set("tokenizer.ggml.add_bos_token", False, T.BOOL)
    s.set("tokenizer.chat_template", TEMPLATE, T.STRING)

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.3).astype(np.float16)

    ones = np.ones(HIDDEN, dtype=np.float32)
    s.tensors["token_embd.weight"] = (matrix(len(tokens), HIDDEN), None, None)
    for i in range(LAYERS):
        for name, array in [
            ("attn_norm", ones),
            ("attn_q", matrix(HEADS * HEAD_DIM, HIDDEN)),
            ("attn_k", matrix(KV_HEADS * HEAD_DIM, HIDDEN)),
            ("attn_v", matrix(KV_HEADS * HEAD_DIM, HIDDEN)),
            ("attn_output", matrix(HIDDEN, HEADS * HEAD_DIM)),
            ("ffn_norm", ones),
            ("ffn_gate", matrix(FFN, HIDDEN)),
            ("ffn_up", matrix(FFN, HIDDEN)),
            ("ffn_down", matrix(HIDDEN, FFN)),
        ]:
            s.tensors[f"blk.{i}.{name}.weight"] = (array, None, None)
    s.tensors["output_norm.weight"] = (ones, None, None)
    return s


def write(spec, path):
    w = GGUFWriter(path, ARCH)
    # The writer adds general.architecture itself; the spec decides.
    w.kv_data[0] = dict(spec.kv)
    for name, (array, raw_dtype, raw_shape) in spec.tensors.items():
        w.add_tensor(name, array, raw_shape=raw_shape, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


VARIANTS = []


def variant(name, change, error, mutate=None, post=None):
    VARIANTS.append((name, change, error, mutate, post))


def with_key(key, value, vtype, sub_type=None):
    return lambda s: s.set(key, value, vtype, sub_type)


def with_arch(key, value, vtype):
    return with_key(f"{ARCH}.{key}", value, vtype)


def without(key):
    return lambda s: s.kv.pop(key)


def without_tensor(name):
    return lambda s: s.tensors.pop(name)


# Integer hyper-parameters: huge, zero, negative (a signed type), and values
# inconsistent with the tensors. Keys the base lacks are added.
INTEGER_KEYS = [
    "block_count",
    "context_length",
    "embedding_length",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "vocab_size",
    "attention.key_length",
    "attention.value_length",
    "rope.dimension_count",
]
for key in INTEGER_KEYS:
    short = key.replace("attention.", "").replace("rope.", "rope_")
    full = f"{ARCH}.{key}"
    variant(f"{short}_huge_u64", f"{full} = 2^62 (uint64)", full, with_arch(key, 1 << 62, T.UINT64))
    variant(f"{short}_huge_u32", f"{full} = 2^32-1 (uint32)", full, with_arch(key, 0xFFFFFFFF, T.UINT32))
    variant(f"{short}_zero", f"{full} = 0", full, with_arch(key, 0, T.UINT32))
    variant(f"{short}_negative", f"{full} = -1 (int32)", full, with_arch(key, -1, T.INT32))

variant("block_count_one_more", f"{ARCH}.block_count = 3, the file has 2 layers", f"{ARCH}.block_count",
        with_arch("block_count", 3, T.UINT32))
variant("block_count_one_less", f"{ARCH}.block_count = 1, the file has 2 layers", f"{ARCH}.block_count",
        with_arch("block_count", 1, T.UINT32))
variant("head_count_not_dividing_width", f"{ARCH}.attention.head_count = 3, which does not divide {HIDDEN}",
        f"{ARCH}.attention.head_count", with_arch("attention.head_count", 3, T.UINT32))
variant("head_count_double", f"{ARCH}.attention.head_count = 4 (heads of 2: the key rows no longer fit)",
        f"{ARCH}.attention.head_count", with_arch("attention.head_count", 4, T.UINT32))
variant("head_count_kv_above_heads", f"{ARCH}.attention.head_count_kv = 3 > head_count 2",
        f"{ARCH}.attention.head_count_kv", with_arch("attention.head_count_kv", 3, T.UINT32))
variant("head_count_kv_mismatch", f"{ARCH}.attention.head_count_kv = 2, the key tensors hold 1 head",
        f"{ARCH}.attention.head_count_kv", with_arch("attention.head_count_kv", 2, T.UINT32))
variant("embedding_length_mismatch", f"{ARCH}.embedding_length = 16, the tensors are {HIDDEN} wide",
        f"{ARCH}.embedding_length", with_arch("embedding_length", 2 * HIDDEN, T.UINT32))
variant("feed_forward_length_mismatch", f"{ARCH}.feed_forward_length = 32, the tensors hold {FFN}",
        f"{ARCH}.feed_forward_length", with_arch("feed_forward_length", 2 * FFN, T.UINT32))
variant("vocab_size_mismatch", f"{ARCH}.vocab_size = 110, the vocabulary has 109 tokens",
        f"{ARCH}.vocab_size", with_arch("vocab_size", 110, T.UINT32))
variant("key_length_odd", f"{ARCH}.attention.key_length = 3 (RoPE needs an even width)",
        f"{ARCH}.attention.key_length", with_arch("attention.key_length", 3, T.UINT32))
variant("value_length_differs", f"{ARCH}.attention.value_length = 2, keys are {HEAD_DIM} wide",
        f"{ARCH}.attention.value_length", with_arch("attention.value_length", HEAD_DIM // 2, T.UINT32))
variant("rope_dimension_count_partial", f"{ARCH}.rope.dimension_count = 2 of {HEAD_DIM} (partial rotary)",
        f"{ARCH}.rope.dimension_count", with_arch("rope.dimension_count", HEAD_DIM // 2, T.UINT32))
variant("block_count_string", f"{ARCH}.block_count is a string", f"{ARCH}.block_count",
        with_arch("block_count", "2", T.STRING))
variant("block_count_missing", f"{ARCH}.block_count removed", f"{ARCH}.block_count",
        without(f"{ARCH}.block_count"))

# Float hyper-parameters: NaN, +inf, -inf, zero, negative, out of range.
FLOAT_KEYS = [
    "attention.layer_norm_rms_epsilon",
    "rope.freq_base",
    "rope.scaling.factor",
    "rope.freq_base_swa",
    "attn_logit_softcapping",
    "final_logit_softcapping",
]
for key in FLOAT_KEYS:
    short = key.split(".")[-1] if key.startswith("attention.") else key.replace(".", "_")
    full = f"{ARCH}.{key}"
    for label, value in [("nan", NAN), ("inf", INF), ("neg_inf", -INF), ("zero", 0.0), ("negative", -1.0)]:
        variant(f"{short}_{label}", f"{full} = {value}", full, with_arch(key, value, T.FLOAT32))
variant("layer_norm_rms_epsilon_huge", f"{ARCH}.attention.layer_norm_rms_epsilon = 10",
        f"{ARCH}.attention.layer_norm_rms_epsilon", with_arch("attention.layer_norm_rms_epsilon", 10.0, T.FLOAT32))
variant("freq_base_below_one", f"{ARCH}.rope.freq_base = 0.5 (wavelengths would shrink)",
        f"{ARCH}.rope.freq_base", with_arch("rope.freq_base", 0.5, T.FLOAT32))
variant("freq_base_f64", f"{ARCH}.rope.freq_base stored as float64", f"{ARCH}.rope.freq_base",
        with_arch("rope.freq_base", 10000.0, T.FLOAT64))
variant("rope_scaling_type_unknown", f"{ARCH}.rope.scaling.type = yarn-ish", f"{ARCH}.rope.scaling.type",
        with_arch("rope.scaling.type", "warp", T.STRING))

# Tokenizer fields.
TOKENS = vocabulary()
variant("tokens_missing", "tokenizer.ggml.tokens removed", "tokenizer.ggml.tokens", without("tokenizer.ggml.tokens"))
variant("tokens_wrong_type", "tokenizer.ggml.tokens is an int32 array", "tokenizer.ggml.tokens",
        with_key("tokenizer.ggml.tokens", list(range(len(TOKENS))), T.ARRAY, T.INT32))
variant("tokens_one_extra", "tokenizer.ggml.tokens has a 110th token the embedding lacks", "tokenizer.ggml.tokens",
        with_key("tokenizer.ggml.tokens", TOKENS + ["zz"], T.ARRAY, T.STRING))
variant("tokens_duplicate", "tokenizer.ggml.tokens lists `a` twice", "tokenizer.ggml.tokens",
        with_key("tokenizer.ggml.tokens", TOKENS[:-1] + ["a"], T.ARRAY, T.STRING))
variant("scores_short", "tokenizer.ggml.scores has 3 entries for 109 tokens", "tokenizer.ggml.scores",
        with_key("tokenizer.ggml.scores", [0.0, 0.0, 0.0], T.ARRAY, T.FLOAT32))
variant("token_type_short", "tokenizer.ggml.token_type has 5 entries for 109 tokens", "tokenizer.ggml.token_type",
        with_key("tokenizer.ggml.token_type", [1] * 5, T.ARRAY, T.INT32))
variant("bos_out_of_range", "tokenizer.ggml.bos_token_id = 109 (vocabulary of 109)", "tokenizer.ggml.bos_token_id",
        with_key("tokenizer.ggml.bos_token_id", len(TOKENS), T.UINT32))
variant("eos_out_of_range", "tokenizer.ggml.eos_token_id = 2^32-1", "tokenizer.ggml.eos_token_id",
        with_key("tokenizer.ggml.eos_token_id", 0xFFFFFFFF, T.UINT32))
variant("bos_negative", "tokenizer.ggml.bos_token_id = -1 (int32)", "tokenizer.ggml.bos_token_id",
        with_key("tokenizer.ggml.bos_token_id", -1, T.INT32))
variant("merges_unknown_token", "tokenizer.ggml.merges has `q z`, whose merge `qz` is not a token",
        "tokenizer.ggml.merges", with_key("tokenizer.ggml.merges", MERGES + ["q z"], T.ARRAY, T.STRING))
variant("merges_unknown_part", "tokenizer.ggml.merges has `\u00e9 t`, `\u00e9` is not a token",
        "tokenizer.ggml.merges", with_key("tokenizer.ggml.merges", MERGES + ["\u00e9 t"], T.ARRAY, T.STRING))
variant("merges_malformed", "tokenizer.ggml.merges has `hit` (no space)", "tokenizer.ggml.merges",
        with_key("tokenizer.ggml.merges", MERGES + ["hit"], T.ARRAY, T.STRING))
variant("tokenizer_model_unknown", "tokenizer.ggml.model = bert", "tokenizer.ggml.model",
        with_key("tokenizer.ggml.model", "bert", T.STRING))
variant("tokenizer_pre_unknown", "tokenizer.ggml.pre = nonesuch", "tokenizer.ggml.pre",
        with_key("tokenizer.ggml.pre", "nonesuch", T.STRING))

# Tensors.
variant("layer_tensor_missing", "blk.1.ffn_up.weight removed", "blk.1.ffn_up.weight",
        without_tensor("blk.1.ffn_up.weight"))
variant("output_norm_missing", "output_norm.weight removed", "output_norm.weight",
        without_tensor("output_norm.weight"))
variant("token_embd_missing", "token_embd.weight removed", "token_embd.weight", without_tensor("token_embd.weight"))


def reshaped(name, rows, cols):
    def mutate(s):
        array = np.zeros((rows, cols), dtype=np.float16)
        s.tensors[name] = (array, None, None)
    return mutate


variant("tensor_wrong_shape", f"blk.1.ffn_up.weight is [{FFN}, {HIDDEN + 1}] instead of [{FFN}, {HIDDEN}]", "blk.1.ffn_up.weight has shape",
        reshaped("blk.1.ffn_up.weight", FFN, HIDDEN + 1))
variant("key_tensor_wrong_rows", f"blk.0.attn_k.weight has {KV_HEADS * HEAD_DIM + 1} rows instead of {KV_HEADS * HEAD_DIM}", "blk.0.attn_k.weight",
        reshaped("blk.0.attn_k.weight", KV_HEADS * HEAD_DIM + 1, HIDDEN))


def retyped(name, ggml_type, bytes_per_element):
    def mutate(s):
        array, _, _ = s.tensors[name]
        raw = np.zeros(array.size * bytes_per_element, dtype=np.uint8)
        s.tensors[name] = (raw, ggml_type, list(array.shape))
    return mutate


variant("tensor_wrong_type", "blk.0.ffn_gate.weight stored as I8", "blk.0.ffn_gate.weight",
        retyped("blk.0.ffn_gate.weight", GGMLQuantizationType.I8, 1))
variant("tensor_i32_norm", "blk.0.attn_norm.weight stored as I32", "blk.0.attn_norm.weight",
        retyped("blk.0.attn_norm.weight", GGMLQuantizationType.I32, 4))


def nan_weights(name):
    def mutate(s):
        array, raw_dtype, raw_shape = s.tensors[name]
        s.tensors[name] = (np.full_like(array, np.nan), raw_dtype, raw_shape)
    return mutate


variant("output_norm_nan", "output_norm.weight is all NaN (every logit NaN)", "NaN",
        nan_weights("output_norm.weight"))


def offset_past_end(path):
    reader = GGUFReader(path, "r+")
    last = max(reader.tensors, key=lambda t: t.data_offset)
    # The tensor info's last part is its offset from the data section;
    # pushing it 1 MiB (aligned) past everything puts it outside the file.
    last.field.parts[-1][0] += 1 << 20
    reader.data.flush()
    return last.name


variant("data_offset_past_end", "the last tensor's data offset is 1 MiB past the end of the file",
        "output_norm.weight", post=offset_past_end)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])


variant("file_truncated", "the last 40 bytes of the data section cut off", "data section", post=truncate)

# The chat template.
TEMPLATE_ABUSE = [
    ("template_billions_of_iterations", "three nested loops of 100000 (10^15 iterations)", "work budget",
     "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
     "{% endfor %}{% endfor %}{% endfor %}" + TEMPLATE),
    ("template_recursion", "a macro that calls itself without end", "recursion",
     "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}" + TEMPLATE),
    ("template_huge_range", "range(10^10)", "range has too many elements",
     "{% for i in range(10000000000) %}{% endfor %}" + TEMPLATE),
    ("template_huge_output", "10^5 copies of a 10^8-byte string", "bytes of prompt",
     "{% for i in range(100000) %}{{ 'x' * 100000000 }}{% endfor %}" + TEMPLATE),
    ("template_undefined_name", "prints `no_such_variable`", "no_such_variable",
     "{{ no_such_variable }}" + TEMPLATE),
    ("template_undefined_attribute_chain", "iterates over `conversation.turns`", "conversation",
     "{% for t in conversation.turns %}{{ t }}{% endfor %}" + TEMPLATE),
    ("template_syntax_error", "a for block without endfor", "does not compile",
     "{% for message in messages %}{{ message.content }}"),
    ("template_include_file", "includes /etc/passwd", "/etc/passwd",
     "{% include '/etc/passwd' %}" + TEMPLATE),
    ("template_raises", "raise_exception('refusing to chat')", "refusing to chat",
     "{{ raise_exception('refusing to chat') }}"),
]
for name, change, error, source in TEMPLATE_ABUSE:
    variant(name, f"tokenizer.chat_template: {change}", error, with_key("tokenizer.chat_template", source, T.STRING))
variant("template_not_a_string", "tokenizer.chat_template is a uint32", "tokenizer.chat_template",
        with_key("tokenizer.chat_template", 7, T.UINT32))

# The architecture.
variant("architecture_unknown", "general.architecture = gpt-j", "gpt-j",
        with_key("general.architecture", "gpt-j", T.STRING))
variant("architecture_missing", "general.architecture removed", "general.architecture",
        without("general.architecture"))


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    manifest = []
    write(base(), OUT / "base.gguf")
    manifest.append({"file": "base.gguf", "change": "none (the valid control)", "error": None})
    names = set()
    for name, change, error, mutate, post in VARIANTS:
        assert name not in names, name
        names.add(name)
        spec = copy.deepcopy(base())
        if mutate:
            mutate(spec)
        path = OUT / f"{name}.gguf"
        write(spec, path)
        if post:
            post(path)
        manifest.append({"file": path.name, "change": change, "error": error})
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"{len(manifest) - 1} variants + control, {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
