#!/usr/bin/env python3
"""Reference outputs for the encoder tests (`crates/candle-engine/tests/encoder.rs`),
from sentence-transformers and Hugging Face `transformers` (PyTorch, f32).

    scripts/fetch-models.sh minilm
    /root/venvs/ref/bin/python scripts/gen_encoder_fixtures.py            # everything
    /root/venvs/ref/bin/python scripts/gen_encoder_fixtures.py --minilm   # just the real model
    /root/venvs/ref/bin/python scripts/gen_encoder_fixtures.py --tiny     # just the tiny models

Needs torch, transformers, tokenizers, safetensors, sentencepiece and
sentence-transformers; `LLAMA_CPP` (a llama.cpp source tree; the one vendored
in the llama-cpp-python sdist works, `scripts/build-llamacpp.sh
--configure-only` fetches it) for the GGUF conversions.

It writes, under `crates/candle-engine/tests/fixtures/encoders/`:
- `minilm.json`: for the committed SENTENCES (English, multilingual, emoji,
  and texts longer than the model's 256 tokens), what
  sentence-transformers' `encode` returns for all-MiniLM-L6-v2 (mean
  pooling, normalised), with each text's token count after truncation and
  whether it was truncated.
- one directory per tiny random model (`bert`, `roberta`, `xlm-roberta`,
  `bert-reranker`, `xlm-roberta-reranker`), saved with `save_pretrained`
  (f32 safetensors, `tokenizer.json` of a tokenizer trained here on a few
  sentences), and beside it `<name>.json`: per text the token ids and
  token types transformers' tokenizer gives, the `last_hidden_state`, and
  the mean-, CLS- and last-token-pooled vectors; for rerankers the logits
  of (query, document) pairs. `roberta` carries sentence-transformers
  files (CLS pooling, Normalize) whose result is `pipeline`;
  `xlm-roberta` a `max_seq_length` of 12 that cuts the longer texts.
  The XLM-RoBERTa tokenizer is a SentencePiece unigram model trained here,
  shipped as `sentencepiece.bpe.model` beside its `tokenizer.json` as
  XLM-R, BGE-M3 and multilingual E5 ship theirs.
- `bert.gguf`, `roberta.gguf`, `xlm-roberta.gguf`,
  `xlm-roberta-reranker.gguf`: `convert_hf_to_gguf.py <dir> --outtype f32`.

The weights are random with a wide spread (std 0.2, LayerNorm weights
around 1) so that every part of the network matters to the result.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/candle-engine/tests/fixtures/encoders"
MODELS = pathlib.Path(os.environ.get("HANZO_CANDLE_MODELS", pathlib.Path.home() / ".cache/hanzo-candle/models"))

LONG = (
    "The history of the printing press begins in the fifteenth century, when movable type "
    "made books cheaper to produce and easier to distribute across Europe. "
)
SENTENCES = [
    "This is an example sentence.",
    "Each sentence is converted to a vector.",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Berlin ist die Hauptstadt von Deutschland.",
    "La tour Eiffel se trouve à Paris, en France.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "I love pizza 🍕🍕 and ice cream 🍦! 😀👍",
    "   Leading and trailing spaces, UPPER case, numbers 12345 and punctuation?!   ",
    LONG * 12,
    "A short one.",
    LONG * 9 + "And a different ending to this long text.",
]

TINY_TEXTS = [
    "hello world",
    "the cat sat on the mat.",
    "a longer sentence about dogs and cats and birds that keeps going on",
    "",
    "UPPER lower 123",
]
QUERIES = [
    ("what sat on the mat?", ["the cat sat on the mat.", "dogs and birds", "hello world, hello"]),
    ("birds", ["a bird sings", "nothing at all here really, just words and more words"]),
]
TRAINING = [
    "the cat sat on the mat. the dog sat on the log.",
    "hello world! a longer sentence about dogs and cats and birds that keeps going on.",
    "what is this? UPPER lower 123 456 nothing at all here really, just words.",
    "a bird sings in the morning and the cat sleeps",
]


def minilm():
    from sentence_transformers import SentenceTransformer

    path = MODELS / "all-MiniLM-L6-v2"
    model = SentenceTransformer(str(path), device="cpu")
    vectors = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False, batch_size=4)
    tok = model.tokenizer
    limit = model.max_seq_length
    items = []
    for text, vector in zip(SENTENCES, vectors):
        full = len(tok(text, truncation=False)["input_ids"])
        items.append(
            {
                "text": text,
                "tokens": min(full, limit),
                "truncated": full > limit,
                "embedding": [float(v) for v in vector],
            }
        )
    assert any(i["truncated"] for i in items)
    write(OUT / "minilm.json", {"max_seq_length": limit, "items": items})


def write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False) + "\n")
    print("wrote", path.relative_to(ROOT))


def tokenizer_for(kind):
    """A fast tokenizer of the family's kind, trained on TRAINING, and the
    files the model directory ships beside its `tokenizer.json`."""
    from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer
    from transformers import BertTokenizerFast, RobertaTokenizerFast

    if kind == "bert":
        raw = BertWordPieceTokenizer(lowercase=True)
        raw.train_from_iterator(TRAINING, vocab_size=120, min_frequency=1)
        return BertTokenizerFast(tokenizer_object=raw._tokenizer), {}
    if kind == "roberta":
        raw = ByteLevelBPETokenizer()
        raw.train_from_iterator(
            TRAINING, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        )
        return RobertaTokenizerFast(tokenizer_object=raw._tokenizer), {}
    return xlm_roberta_tokenizer()


def xlm_roberta_tokenizer():
    """XLM-R's tokenizer as `transformers` builds it from a SentencePiece
    unigram model (fairseq's id shift, `<mask>` last), the model trained on
    TRAINING; the model file goes beside it as `sentencepiece.bpe.model`."""
    import io
    import tempfile

    import sentencepiece as spm
    from transformers import XLMRobertaTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING),
        model_writer=model,
        vocab_size=90,
        model_type="unigram",
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    with tempfile.TemporaryDirectory() as tmp:
        (pathlib.Path(tmp) / "sentencepiece.bpe.model").write_bytes(model.getvalue())
        # Loading the directory converts the model (fairseq's id shift);
        # the constructor's vocab_file would not read it.
        tok = XLMRobertaTokenizer.from_pretrained(tmp)
    return tok, {"sentencepiece.bpe.model": model.getvalue()}


def tiny(name, kind, reranker=False, st=None, max_len=None):
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        RobertaConfig,
        RobertaModel,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
        XLMRobertaModel,
    )

    torch.manual_seed(sum(map(ord, name)))
    tok, tokenizer_files = tokenizer_for(kind)
    common = dict(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_act="gelu",
        layer_norm_eps=1e-12 if kind == "bert" else 1e-5,
        num_labels=1,
    )
    if kind == "bert":
        config = BertConfig(type_vocab_size=2, **common)
        cls = BertForSequenceClassification if reranker else BertModel
    elif kind == "roberta":
        config = RobertaConfig(type_vocab_size=1, pad_token_id=tok.pad_token_id, **common)
        cls = RobertaModel
    else:
        config = XLMRobertaConfig(type_vocab_size=1, pad_token_id=tok.pad_token_id, **common)
        cls = XLMRobertaForSequenceClassification if reranker else XLMRobertaModel
    model = cls(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "LayerNorm.weight" in pname:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    directory = OUT / name
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    for file, content in tokenizer_files.items():
        (directory / file).write_bytes(content)
    if st is not None:
        pooling, normalize = st
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "modules.json").write_text(json.dumps(modules, indent=2))
        (directory / "1_Pooling").mkdir()
        (directory / "1_Pooling/config.json").write_text(
            json.dumps({"word_embedding_dimension": 32, f"pooling_mode_{pooling}": True})
        )
    if max_len is not None:
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len}))
    # Files the engine does not read.
    for extra in ["special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt"]:
        (directory / extra).unlink(missing_ok=True)

    reference = {}
    if reranker:
        pairs = []
        for query, docs in QUERIES:
            enc = tok([query] * len(docs), docs, padding=True, return_tensors="pt")
            with torch.no_grad():
                logits = model(**enc).logits[:, 0]
            pairs.append({"query": query, "docs": docs, "scores": [float(v) for v in logits]})
        reference["rerank"] = pairs
    else:
        items = []
        limit = max_len or config.max_position_embeddings - (0 if kind == "bert" else config.pad_token_id + 1)
        for text in TINY_TEXTS:
            full = tok(text)["input_ids"]
            enc = tok(text, truncation=True, max_length=limit, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state[0]
            items.append(
                {
                    "text": text,
                    "ids": enc["input_ids"][0].tolist(),
                    "type_ids": enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))[0].tolist(),
                    "truncated": len(full) > limit,
                    "hidden": [float(v) for v in hidden.flatten()],
                    "mean": [float(v) for v in hidden.mean(0)],
                    "cls": [float(v) for v in hidden[0]],
                    "last": [float(v) for v in hidden[-1]],
                }
            )
        reference["items"] = items
        if st is not None:
            pooling, normalize = st
            key = {"cls_token": "cls", "mean_tokens": "mean", "lasttoken": "last"}[pooling]
            pipeline = []
            for item in items:
                v = torch.tensor(item[key])
                if normalize:
                    v = torch.nn.functional.normalize(v, dim=0)
                pipeline.append([float(x) for x in v])
            reference["pipeline"] = pipeline
    write(OUT / f"{name}.json", reference)
    return directory


def gguf(directory, pre):
    """llama.cpp's converter on `directory`. It recognises a tokenizer's
    pre-tokenizer by hashing what it makes of a test text, and knows only
    published tokenizers; the ones trained here split text as plain BERT
    (WordPiece, lowercase: llama.cpp's `default`) or RoBERTa (byte-level
    BPE with GPT-2's regex: `roberta-bpe`, what stsb-roberta-base gets), so
    the check is answered with `pre`. XLM-R's SentencePiece vocabulary needs
    no such check."""
    llama_cpp = os.environ.get("LLAMA_CPP")
    if not llama_cpp:
        sys.exit("set LLAMA_CPP to a llama.cpp source tree for the GGUF conversion")
    out = directory.with_suffix(".gguf")
    runner = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/gguf-py']\n"
        "import conversion.base as base\n"
        "pre = sys.argv[2]\n"
        "base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre\n"
        "import convert_hf_to_gguf\n"
        "sys.argv = ['convert_hf_to_gguf.py'] + sys.argv[3:]\n"
        "convert_hf_to_gguf.main()\n"
    )
    subprocess.run(
        [sys.executable, "-c", runner, llama_cpp, pre, str(directory), "--outtype", "f32", "--outfile", str(out)],
        check=True,
    )
    print("wrote", out.relative_to(ROOT))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minilm", action="store_true", help="only the all-MiniLM-L6-v2 fixture")
    parser.add_argument("--tiny", action="store_true", help="only the tiny models and their GGUF files")
    args = parser.parse_args()
    if not args.tiny:
        minilm()
    if args.minilm:
        return
    gguf(tiny("bert", "bert"), "default")
    gguf(tiny("roberta", "roberta", st=("cls_token", True)), "roberta-bpe")
    gguf(tiny("xlm-roberta", "xlm-roberta", st=("mean_tokens", False), max_len=12), "default")
    tiny("bert-reranker", "bert", reranker=True)
    gguf(tiny("xlm-roberta-reranker", "xlm-roberta", reranker=True), "default")


if __name__ == "__main__":
    main()
