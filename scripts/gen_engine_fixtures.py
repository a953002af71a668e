#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers (PyTorch) for the engine's
decoder tests.

Run from the repository root with torch, transformers and safetensors:

    python3 scripts/gen_engine_fixtures.py

It writes `crates/candle-engine/tests/fixtures/tiny-llama/`: a randomly
initialised LlamaForCausalLM small enough to commit (config.json,
model.safetensors in f32), and beside it `tiny-llama-reference.safetensors`
with the token ids and transformers' logits for them (`logits`: [tokens,
vocab], float32).
"""
import pathlib

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/candle-engine/tests/fixtures/tiny-llama"


def main():
    torch.manual_seed(4)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        hidden_act="silu",
    )
    model = LlamaForCausalLM(config).eval()
    # Default init is tiny (std 0.02): make activations large enough that a
    # wrong rotation or mask shows in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    tokens = torch.tensor([[1, 17, 42, 5, 88, 3, 3, 60, 21, 9, 77, 30]])
    with torch.no_grad():
        logits = model(tokens).logits[0].float()
    save_file({"tokens": tokens[0].to(torch.int64).contiguous(), "logits": logits.contiguous()},
              str(OUT.parent / "tiny-llama-reference.safetensors"))
    (OUT / "generation_config.json").unlink(missing_ok=True)
    print(f"wrote {OUT}: logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
