#!/usr/bin/env python3
"""Tiny random-weight transformers models, one per decoder family, with
reference logits for the engine's family tests (`tests/families.rs`).

    /root/venvs/ref/bin/python scripts/gen_family_fixtures.py

For each family it writes `crates/candle-engine/tests/fixtures/families/<family>/`:
`config.json` and `model.safetensors` (f32) as `save_pretrained` writes them,
and beside that directory `<family>-reference.safetensors` (outside it, so
that the engine does not take it for weights) with `tokens` (prompt followed by greedily decoded
tokens, int64), `prompt_len` (int64 scalar) and `logits` ([tokens, vocab]
f32): the prompt's logits from one prefill, then one row per decode step run
through transformers' own KV cache. Attention is eager so that softcapping
and sliding windows follow the reference formulas exactly.
"""
import pathlib

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
COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-6)

FAMILIES = {
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**COMMON, rope_theta=10000.0, tie_word_embeddings=True)),
    "qwen3": (Qwen3ForCausalLM, Qwen3Config(**COMMON, head_dim=16, rope_theta=1000000.0,
                                            tie_word_embeddings=True)),
    "gemma2": (Gemma2ForCausalLM, Gemma2Config(
        **COMMON, head_dim=16, sliding_window=4, query_pre_attn_scalar=24,
        attn_logit_softcapping=1.5, final_logit_softcapping=2.5, rope_theta=10000.0,
        hidden_activation="gelu_pytorch_tanh")),
    # A head_dim (24) unrelated to hidden / heads, as in the real models;
    # the global layer uses linear RoPE scaling, the local one its own base.
    "gemma3": (Gemma3ForCausalLM, Gemma3TextConfig(
        **{**COMMON, "num_attention_heads": 2, "num_key_value_heads": 1}, head_dim=24,
        sliding_window=4, layer_types=["sliding_attention", "full_attention"],
        query_pre_attn_scalar=20,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        hidden_activation="gelu_pytorch_tanh")),
    "phi3": (Phi3ForCausalLM, Phi3Config(**COMMON, rope_theta=10000.0, tie_word_embeddings=False,
                                         pad_token_id=0, sliding_window=None)),
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


def main():
    for family, (cls, config) in FAMILIES.items():
        torch.manual_seed(7)
        config._attn_implementation = "eager"
        model = cls(config).eval()
        randomize(model)
        out = OUT / family
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        (out / "generation_config.json").unlink(missing_ok=True)
        tokens, logits = reference_logits(model)
        save_file({"tokens": torch.tensor(tokens, dtype=torch.int64),
                   "prompt_len": torch.tensor(len(PROMPT), dtype=torch.int64),
                   "logits": logits.contiguous()}, str(OUT / f"{family}-reference.safetensors"))
        size = sum(f.stat().st_size for f in out.iterdir()) + (OUT / f"{family}-reference.safetensors").stat().st_size
        print(f"{family}: {len(tokens)} tokens, logits {tuple(logits.shape)}, {size} bytes")


if __name__ == "__main__":
    main()
