#!/usr/bin/env python3
"""Reference tokenizations of the Gemma-3 SentencePiece (`tokenizer.ggml.model
= llama`) vocabulary by llama.cpp, and renderings of its chat template by
`transformers`, for `crates/candle-engine/tests/tokenizer_gemma3.rs`.

    scripts/fetch-models.sh
    /root/venvs/ref/bin/python scripts/gen_tokenizer_fixtures.py

Needs llama-cpp-python, gguf, transformers and jinja2 in that venv. Writes
`crates/candle-engine/tests/fixtures/gemma3/tokenizer.json`:
- `cases`: for each corpus string (hand-written ones, then 150 random mixes
  drawn with a fixed seed), llama.cpp's ids (special tokens parsed)
  without and with BOS, and `llama_detokenize` of the ids without BOS both
  rendering special tokens and removing them, and of the ids with BOS
  removing them;
- `space_prefix_cases`: the same corpus through a copy of the file whose
  `tokenizer.ggml.add_space_prefix` is flipped to true (llama-2-style
  vocabularies), written to a temporary directory and deleted afterwards;
- `chat`: conversations rendered by transformers' Jinja environment through
  SmolLM2's embedded template and through the engine's Gemma fallback
  (this Gemma GGUF embeds no `tokenizer.chat_template`); the latter is
  checked here against llama.cpp's built-in `gemma` chat layout.
"""
import ctypes
import json
import os
import pathlib
import random
import re
import shutil
import string
import sys
import tempfile

import gguf
import llama_cpp
from llama_cpp import Llama
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from gen_llamacpp_fixtures import CORPUS as SMOLLM2_CORPUS  # noqa: E402

MODELS_DIR = pathlib.Path(os.environ.get("HANZO_CANDLE_MODELS", pathlib.Path.home() / ".cache/hanzo-candle/models"))
MODEL = MODELS_DIR / "gemma-3-270m-q4_k_m.gguf"
OUT = ROOT / "crates/candle-engine/tests/fixtures/gemma3/tokenizer.json"

GEMMA_CORPUS = [
    "<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nHi<end_of_turn>\n",
    "text<eos>more text<pad><unk><mask>[multimodal]<unused0><unused6241>",
    "<start_of_turn <end_of_turn> <start_of_turn>",
    " ",
    "   ",
    "\n",
    "\n\n\n\n\n\n",
    "\t",
    " \t \n \r\n",
    "trailing spaces   ",
    "   leading",
    "a  b   c    d     e",
    "12345678901234567890 3.14159e-10 -42 +7 1,000,000",
    "e\u0301 (combining acute) vs \u00e9, \ufb01 ligature, \u212b angstrom",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e, \u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645, \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002\u3053\u3093\u306b\u3061\u306f\u4e16\u754c\u3002\uc548\ub155\ud558\uc138\uc694",
    "Rare: \U0001d54f\U0001d560\U0001d55c \U00010348 \u2f00 \ua980 \U00020000 \U0002a6d6",
    "Control bytes: \x00\x01\x07\x1b[31m\x7f",
    "Literal \u2581 lower block and __ underscores",
    "\U0001f468\u200d\U0001f4bb\U0001f3f3\ufe0f\u200d\U0001f308 \u2764\ufe0f \U0001f44d\U0001f3fd",
    "<0x41> is not a byte token in text",
    "https://example.com/path?query=1&x=%20#frag",
    "    def f(x):\n        return x ** 2  # square\n",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "ALL CAPS TEXT, MiXeD cAsE, camelCaseIdentifier, snake_case_identifier",
]



def random_corpus(count=150, seed=0):
    """Strings drawn from a mix of scripts, whitespace, byte-fallback
    characters and special-token texts, to exercise merge orders no
    hand-written string reaches."""
    rng = random.Random(seed)
    pools = [
        string.ascii_letters, string.digits, string.punctuation, " \t\n\r",
        "\u00e9\u00e8\u00fc\u00f1\u00df\u00e5\u00f8\u0142\u017e\u0131",
        "\u4e00\u4e8c\u4e09\u4eba\u5927\u5c0f\u5929\u5730\u3042\u3044\u30ab\u30ca\uac00\ub098",
        "\u0391\u03b2\u03b3\u0414\u0436\u044f\u05d0\u05d1\u0627\u0628\u0915\u0916\u0e01",
        "\U0001f600\U0001f680\u2764\ufe0f\u200d\U0001f3fd\U0001d54f\U00010348\ua980\x00\x07\x7f\u2581",
    ]
    words = ["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>",
             "[multimodal]", "<unused7>", "<start_of_image>", "the", " and", "ing", "tion"]
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.15:
                parts.append(rng.choice(words))
            else:
                pool = rng.choice(pools)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
        out.append("".join(parts))
    return out


CORPUS = list(dict.fromkeys(SMOLLM2_CORPUS + GEMMA_CORPUS + random_corpus()))

CONVERSATIONS = [
    [
        {"role": "user", "content": "Hello! Who are you?"},
        {"role": "assistant", "content": "I am Gemma, a language model."},
        {"role": "user", "content": "  Write a haiku about the sea.  \n"},
    ],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
]


def llama_cpp_detokenize(llm, ids, remove_special, unparse_special):
    vocab = llm._model.vocab
    array = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab, array, len(ids), buf, size, remove_special, unparse_special)
    assert 0 <= n <= size, n
    return buf.raw[:n].decode("utf-8", errors="replace")


def tokenize_corpus(llm):
    cases = []
    for text in CORPUS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        ids_with_bos = llm.tokenize(text.encode(), add_bos=True, special=True)
        cases.append({
            "text": text,
            "ids": ids,
            "ids_with_bos": ids_with_bos,
            "detokenized": llama_cpp_detokenize(llm, ids, False, True),
            "detokenized_without_special": llama_cpp_detokenize(llm, ids, True, False),
            "detokenized_with_bos_without_special": llama_cpp_detokenize(llm, ids_with_bos, True, False),
        })
    return cases


def llama_cpp_chat(builtin, messages):
    array = (llama_cpp.llama_chat_message * len(messages))(
        *[llama_cpp.llama_chat_message(role=m["role"].encode(), content=m["content"].encode()) for m in messages])
    size = 65536
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(builtin, array, len(messages), True, buf, size)
    assert 0 <= n <= size, n
    return buf.raw[:n].decode()


def gemma_fallback_template():
    """The Gemma turn layout the engine falls back to (chat.rs's
    `GEMMA_TURNS`), for rendering by transformers' Jinja environment."""
    source = (ROOT / "crates/candle-engine/src/chat.rs").read_text()
    match = re.search(r'const GEMMA_TURNS: &str = r#"(.*?)"#;', source, re.S)
    return match.group(1)


def render_chats():
    """Templates rendered by transformers (jinja2 with its trim_blocks and
    lstrip_blocks settings): SmolLM2's embedded template, and the engine's
    Gemma fallback, which llama.cpp's built-in `gemma` layout must agree
    with (it leaves the BOS to the tokenizer, the template writes it)."""
    smollm2 = gguf.GGUFReader(MODELS_DIR / "SmolLM2-135M-Instruct.Q4_1.gguf")
    templates = [
        ("smollm2", smollm2.fields["tokenizer.chat_template"].contents(), "", "<|im_end|>", None),
        ("gemma3_fallback", gemma_fallback_template(), "<bos>", "<eos>", b"gemma"),
    ]
    chat = []
    for name, template, bos, eos, builtin in templates:
        for messages in CONVERSATIONS:
            rendered = render_jinja_template(conversations=[messages], chat_template=template,
                                             add_generation_prompt=True, bos_token=bos, eos_token=eos)[0][0]
            if builtin is not None:
                assert rendered == bos + llama_cpp_chat(builtin, messages), (rendered, llama_cpp_chat(builtin, messages))
            chat.append({"template": name, "source": template, "bos_token": bos, "eos_token": eos,
                         "messages": messages, "rendered": rendered})
    return chat


def main():
    llm = Llama(model_path=str(MODEL), vocab_only=True, verbose=False)
    cases = tokenize_corpus(llm)
    chat = render_chats()
    del llm

    with tempfile.TemporaryDirectory() as tmp:
        patched = pathlib.Path(tmp) / "gemma3-space-prefix.gguf"
        shutil.copyfile(MODEL, patched)
        reader = gguf.GGUFReader(patched, "r+")
        flag = reader.fields["tokenizer.ggml.add_space_prefix"]
        flag.parts[flag.data[0]][0] = 1
        del reader
        llm = Llama(model_path=str(patched), vocab_only=True, verbose=False)
        space_prefix_cases = tokenize_corpus(llm)
        del llm

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "model": MODEL.name,
        "llama_cpp_python": llama_cpp.__version__,
        "cases": cases,
        "space_prefix_cases": space_prefix_cases,
        "chat": chat,
    }, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
