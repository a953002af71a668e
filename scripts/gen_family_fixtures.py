#!/usr/bin/env python3
"""Tiny random-weight transformers models, one per decoder family, their
llama.cpp GGUF conversions, and reference logits for the engine's family
tests (`tests/families.rs`).

    LLAMA_CPP=/path/to/llama.cpp /root/venvs/ref/bin/python scripts/gen_family_fixtures.py

Needs torch, transformers, safetensors and sentencepiece, and a llama.cpp
source tree (`LLAMA_CPP`; the one vendored in the llama-cpp-python sdist
works): its own `convert_hf_to_gguf.py` makes the GGUF files, importing the
`gguf` package of the same tree.

For each family it writes `crates/candle-engine/tests/fixtures/families/<family>/`:
`config.json` and `model.safetensors` (f32) as `save_pretrained` writes them,
and `tokenizer.model`, a 96-piece SentencePiece model trained here on a
pangram (the converter refuses a directory without a tokenizer; the tests
never tokenize). Beside that directory (outside it, so that the engine does
not take them for weights):
- `<family>.gguf`: `convert_hf_to_gguf.py <family>/ --outtype f32`.
- `<family>-reference.safetensors`: `tokens` (prompt followed by greedily
  decoded tokens, int64), `prompt_len` (int64 scalar) and `logits`
  ([tokens, vocab] f32): the prompt's logits from one prefill, then one row
  per decode step run through transformers' own KV cache. Attention is eager
  so that softcapping and sliding windows follow the reference formulas
  exactly.
- `<family>-gguf-reference.safetensors`, for Gemma only: the same for the
  model the GGUF file describes. The converter drops `query_pre_attn_scalar`
  and llama.cpp scales Gemma's queries by 1/sqrt(head_dim) (src/models/gemma2.cpp
  and gemma3.cpp, all but the 27B models); the fixtures use another scalar so
  that the Hugging Face path is tested on it, so transformers runs the same
  weights again with `query_pre_attn_scalar = head_dim`.
"""
import io
import os
import pathlib
import subprocess
import sys

import sentencepiece
import torch
from safetensors.torch import save_file
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig,
                          Phi3Config, Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/candle-engine/tests/fixtures/families"
PROMPT = [2, 17, 42, 5, 88, 3, 3, 60, 21]
DECODE_STEPS = 4

# Small enough to commit (< 300 KB each) yet with grouped-query attention
# (4 query heads over 2 KV heads) and, where the family has them, one
# sliding-window layer (window 4, shorter than the 13 tokens) and one global.
# Special ids as in the tokenizer below.
COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2)

# Gemma 3 has llama.cpp's fixed pattern, 5 sliding layers then 1 global,
# since the converter writes no pattern for it: six narrower layers, with a
# head_dim (24) unrelated to hidden / heads, as in the real models; the
# global layer uses linear RoPE scaling, the sliding ones their own base.
GEMMA3 = {**COMMON, "hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 6,
          "num_attention_heads": 2, "num_key_value_heads": 1}

FAMILIES = {
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**COMMON, rope_theta=10000.0, tie_word_embeddings=True)),
    "qwen3": (Qwen3ForCausalLM, Qwen3Config(**COMMON, head_dim=16, rope_theta=1000000.0,
                                            tie_word_embeddings=True)),
    "gemma2": (Gemma2ForCausalLM, Gemma2Config(
        **COMMON, head_dim=16, sliding_window=4, query_pre_attn_scalar=24,
        attn_logit_softcapping=1.5, final_logit_softcapping=2.5, rope_theta=10000.0,
        hidden_activation="gelu_pytorch_tanh")),
    "gemma3": (Gemma3ForCausalLM, Gemma3TextConfig(
        **GEMMA3, head_dim=24, sliding_window=4,
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
        query_pre_attn_scalar=20,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        hidden_activation="gelu_pytorch_tanh")),
    "phi3": (Phi3ForCausalLM, Phi3Config(**COMMON, rope_theta=10000.0, tie_word_embeddings=False,
                                         sliding_window=None)),
}


def randomize(model):
    # Default init is tiny (std 0.02): make activations large enough that a
    # wrong rotation, norm or mask shows in the logits. Gemma norms hold
    # w in (1 + w), so centre them on 0 rather than 1.
    gemma = "gemma" in model.config.model_type
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((0.0 if gemma else 1.0) + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))


def reference_logits(model):
    with torch.no_grad():
        out = model(torch.tensor([PROMPT]), use_cache=True)
        rows = list(out.logits[0].float())
        tokens = list(PROMPT)
        cache = out.past_key_values
        for _ in range(DECODE_STEPS):
            tokens.append(int(rows[-1].argmax()))
            out = model(torch.tensor([[tokens[-1]]]), past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            rows.append(out.logits[0, -1].float())
    return tokens, torch.stack(rows)


def save_reference(model, path):
    tokens, logits = reference_logits(model)
    save_file({"tokens": torch.tensor(tokens, dtype=torch.int64),
               "prompt_len": torch.tensor(len(PROMPT), dtype=torch.int64),
               "logits": logits.contiguous()}, str(path))
    return tokens, logits


def tokenizer_model():
    """A deterministic SentencePiece BPE model with exactly the fixtures'
    96 ids (pad 0, eos 1, bos 2, unk 3, as in COMMON); identity
    normalization keeps the file at about 1 KB."""
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex bad jam".split()
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=COMMON["vocab_size"],
        model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3, character_coverage=1.0,
        normalization_rule_name="identity", num_threads=1, minloglevel=2)
    return model.getvalue()


def convert_to_gguf(converter, model_dir, gguf_path):
    subprocess.run([sys.executable, str(converter), str(model_dir), "--outtype", "f32",
                    "--outfile", str(gguf_path)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def main():
    llama_cpp = os.environ.get("LLAMA_CPP")
    converter = pathlib.Path(llama_cpp or ".") / "convert_hf_to_gguf.py"
    if not llama_cpp or not converter.is_file():
        sys.exit("set LLAMA_CPP to a llama.cpp source tree (it must hold convert_hf_to_gguf.py)")
    tokenizer = tokenizer_model()
    for family, (cls, config) in FAMILIES.items():
        torch.manual_seed(7)
        config._attn_implementation = "eager"
        model = cls(config).eval()
        randomize(model)
        out = OUT / family
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        (out / "generation_config.json").unlink(missing_ok=True)
        (out / "tokenizer.model").write_bytes(tokenizer)
        tokens, logits = save_reference(model, OUT / f"{family}-reference.safetensors")
        convert_to_gguf(converter, out, OUT / f"{family}.gguf")
        if family.startswith("gemma"):
            as_llama_cpp = cls(config.__class__(**{**config.to_dict(), "query_pre_attn_scalar": config.head_dim}))
            as_llama_cpp.config._attn_implementation = "eager"
            as_llama_cpp.load_state_dict(model.state_dict())
            save_reference(as_llama_cpp.eval(), OUT / f"{family}-gguf-reference.safetensors")
        files = [*out.iterdir(), *OUT.glob(f"{family}.gguf"), *OUT.glob(f"{family}-*.safetensors")]
        print(f"{family}: {len(tokens)} tokens, logits {tuple(logits.shape)}, "
              f"{sum(f.stat().st_size for f in files)} bytes in {len(files)} files")


if __name__ == "__main__":
    main()
