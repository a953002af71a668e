#!/usr/bin/env python3
"""Reference logits from Hugging Face `transformers` (PyTorch, f32) for the
safetensors evidence of issue 4, and a llama.cpp check of our quantizer.

    scripts/fetch-models.sh smollm2
    /root/venvs/ref/bin/python scripts/gen_transformers_fixtures.py
    /root/venvs/ref/bin/python scripts/gen_transformers_fixtures.py --f16
    scripts/fetch-models.sh gemma3
    /root/venvs/ref/bin/python scripts/gen_transformers_fixtures.py --gemma3
    # not CI: llama.cpp on a file made by `hanzo-candle quantize`
    /root/venvs/ref/bin/python scripts/gen_transformers_fixtures.py \
        --llamacpp smollm2.q4_k_m.gguf [--ours ours.json]

The first form independently builds the f32 weights of SmolLM2-135M-Instruct
from its Q4_1 GGUF with gguf-py's dequantization (undoing llama.cpp's
query/key row permutation with numpy), runs `LlamaForCausalLM` on the
committed prompts (token ids) and writes
`crates/candle-engine/tests/fixtures/smollm2/transformers.json`:
- `prompts[].ids`: the token ids;
- `prompts[].positions[]`: at every position, the 16 highest logits
  (`ids`, `logits`);
- `prompts[].last_row_stride`, `prompts[].last_row`: the last position's
  logits for token ids 0, stride, 2*stride, ... (a spread sample of the
  whole vocabulary that keeps the fixture small);
- `prompts[].greedy`, `prompts[].greedy_margins`: the greedy 32-token
  continuation, generated one token at a time through transformers' KV
  cache, and at each step the gap between the two highest logits.

With `--f16` every weight is first rounded to f16 (PyTorch's `.half()`,
round to nearest even), as in a Hugging Face f16 checkpoint of the model,
and the model still computes in f32 (what our kernels do with f16 weights);
the result goes to `transformers-f16.json` beside the f32 fixture.

With `--gemma3` the same is done for Gemma-3-270M's Q4_K_M GGUF (gguf-py
dequantizes every tensor; the converter's `+1` on the RMS-norm weights is
undone, since transformers' Gemma norms multiply by `1 + w`), run by
`Gemma3ForCausalLM` in f32 with eager attention on the prompts of
`gemma3/llamacpp.json`, into `gemma3/transformers.json` (the last row sampled
every 29th token of the 262144: the same coverage in a fixture of similar size).
The GGUF does not record `query_pre_attn_scalar`; llama.cpp and our engine
scale by `1/sqrt(head_dim)`, which is Gemma-3-270M's own value (256).

The `--llamacpp` form loads a GGUF with llama-cpp-python and reports how far
llama.cpp's logits on the committed prompts are from the transformers f32
ones (and, with `--ours`, from a JSON of our engine's logits on the same
file, `{"prompts": [[[...vocab logits...] per position] per prompt]}`).
"""
import argparse
import json
import os
import pathlib

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "crates/candle-engine/tests/fixtures/smollm2/transformers.json"
FIXTURE_F16 = FIXTURE.with_name("transformers-f16.json")
FIXTURE_GEMMA3 = FIXTURE.parent.parent / "gemma3/transformers.json"
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_GEMMA3 = "gemma-3-270m-q4_k_m.gguf"
STRIDE_GEMMA3 = 29
TOP = 16
STRIDE = 7

# The prompts of llamacpp.json as SmolLM2's tokenizer encodes them: "The
# capital of France is", "Once upon a time, there was a little robot who",
# a chat-formatted request for a haiku, the head of a Python function and
# "Water boils at 100 degrees Celsius. Ice melts at".
PROMPTS = [
    [504, 3575, 282, 4649, 314],
    [6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 8085, 617],
    [1, 4093, 198, 19161, 253, 421, 30614, 563, 260, 3426, 30, 2, 198, 1, 520, 9531, 198],
    [1604, 3987, 46477, 24, 94, 727, 472, 1620, 14362, 260, 304, 29, 373, 24681, 46477, 1230, 7996, 198],
    [12615, 36411, 418, 216, 33, 32, 32, 5027, 20590, 30, 14267, 34294, 418],
]
# The prompts of gemma3/llamacpp.json as Gemma 3's tokenizer encodes them
# (with BOS): the same five texts.
PROMPTS_GEMMA3 = [
    [2, 818, 5279, 529, 7001, 563],
    [2, 14946, 3324, 496, 990, 236764, 993, 691, 496, 2268, 16775, 1015],
    [2, 105, 2364, 107, 6974, 496, 678, 20517, 1003, 506, 5442, 236761, 106, 107, 105, 4368, 107],
    [2, 2063, 10779, 78113, 236769, 236749, 1473, 107, 140, 12234, 13293, 506, 538, 236772, 594, 123466, 1548,
     29738, 107],
    [2, 17390, 104264, 657, 236743, 236770, 236771, 236771, 10674, 57356, 236761, 27631, 78008, 657],
]
CONTINUATION = 32


def model_path(name=MODEL):
    base = os.environ.get("HANZO_CANDLE_MODELS", os.path.expanduser("~/.cache/hanzo-candle/models"))
    return pathlib.Path(base) / name


def field(reader, key):
    return reader.fields[key].contents()


def unpermute(w, n_head):
    # llama.cpp's converter stored rows of each head as (half, 2) pairs;
    # transformers wants (2, half).
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequantized_tensors(reader):
    """Every tensor of the GGUF, dequantized by gguf-py, in transformers' shape."""
    tensors = {}
    for t in reader.tensors:
        shape = tuple(reversed([int(d) for d in t.shape]))
        tensors[t.name] = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
    return tensors


def transformers_state(tensors, layer_names, tied, convert):
    """GGUF tensor names to transformers' state-dict names; `layer_names`
    maps a block tensor's part (attn_q, ...) to its module, and
    `convert(part, w)` undoes what the converter did to a tensor ("token_embd",
    "output_norm" and "output" are the parts of the three outside blocks)."""
    outside = {"token_embd": "model.embed_tokens.weight", "output_norm": "model.norm.weight",
               "output": "lm_head.weight"}
    state = {}
    for name, w in tensors.items():
        part = name.split(".")[0] if name.count(".") == 1 else name.split(".")[2]
        w = convert(part, w)
        if part in outside:
            state[outside[part]] = w
        else:
            layer = name.split(".")[1]
            state[f"model.layers.{layer}.{layer_names[part]}.weight"] = w
    if tied:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state


def transformers_model(path, f16=False):
    reader = GGUFReader(str(path))
    heads = int(field(reader, "llama.attention.head_count"))
    kv_heads = int(field(reader, "llama.attention.head_count_kv"))
    hidden = int(field(reader, "llama.embedding_length"))
    tensors = dequantized_tensors(reader)
    config = LlamaConfig(
        vocab_size=int(field(reader, "llama.vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(field(reader, "llama.feed_forward_length")),
        num_hidden_layers=int(field(reader, "llama.block_count")),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=int(field(reader, "llama.rope.dimension_count")),
        max_position_embeddings=int(field(reader, "llama.context_length")),
        # The shortest decimal of the stored f32, as our exporter writes it.
        rms_norm_eps=float(str(np.float32(field(reader, "llama.attention.layer_norm_rms_epsilon")))),
        rope_theta=float(field(reader, "llama.rope.freq_base")),
        tie_word_embeddings="output.weight" not in tensors,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )
    names = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    unpermuted = {"attn_q": heads, "attn_k": kv_heads}
    state = transformers_state(
        tensors, names, config.tie_word_embeddings,
        lambda part, w: unpermute(w, unpermuted[part]) if part in unpermuted else w)
    model = LlamaForCausalLM(config).to(torch.float32)

    def weight(v):
        t = torch.from_numpy(np.array(v, dtype=np.float32, copy=True))
        return t.half().float() if f16 else t

    model.load_state_dict({k: weight(v) for k, v in state.items()}, strict=True)
    model.eval()
    return model


def gemma3_model(path):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    reader = GGUFReader(str(path))
    tensors = dequantized_tensors(reader)
    layers = int(field(reader, "gemma3.block_count"))
    config = Gemma3TextConfig(
        vocab_size=tensors["token_embd.weight"].shape[0],
        hidden_size=int(field(reader, "gemma3.embedding_length")),
        intermediate_size=int(field(reader, "gemma3.feed_forward_length")),
        num_hidden_layers=layers,
        num_attention_heads=int(field(reader, "gemma3.attention.head_count")),
        num_key_value_heads=int(field(reader, "gemma3.attention.head_count_kv")),
        head_dim=int(field(reader, "gemma3.attention.key_length")),
        query_pre_attn_scalar=int(field(reader, "gemma3.attention.key_length")),
        max_position_embeddings=int(field(reader, "gemma3.context_length")),
        rms_norm_eps=float(str(np.float32(field(reader, "gemma3.attention.layer_norm_rms_epsilon")))),
        sliding_window=int(field(reader, "gemma3.attention.sliding_window")),
        # llama.cpp's layout for Gemma 3: every sixth layer global.
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": float(field(reader, "gemma3.rope.freq_base"))},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        hidden_activation="gelu_pytorch_tanh",
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        tie_word_embeddings="output.weight" not in tensors,
        attn_implementation="eager",
    )
    names = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    # The converter stored Gemma's norm weights as 1 + w.
    state = transformers_state(
        tensors, names, config.tie_word_embeddings,
        lambda part, w: w - np.float32(1) if part.endswith("norm") else w)
    model = Gemma3ForCausalLM(config).to(torch.float32)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()},
                                                strict=False)
    # Only buffers transformers computes itself (the embedding scale) may be left.
    assert not unexpected and all("embed_scale" in k for k in missing), (missing, unexpected)
    model.eval()
    return model


def transformers_logits(model, prompts=PROMPTS):
    out = []
    with torch.no_grad():
        for ids in prompts:
            out.append(model(torch.tensor([ids])).logits[0].to(torch.float64).numpy())
    return out


def greedy(model, ids):
    """The greedy continuation, one token per step through transformers' KV
    cache (as a decoder generates), and at each step the gap between the two
    highest logits."""
    tokens, margins = [], []
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
        for _ in range(CONTINUATION):
            row = out.logits[0, -1].to(torch.float64)
            top2 = torch.topk(row, 2).values
            tokens.append(int(torch.argmax(row)))
            margins.append(float(top2[0] - top2[1]))
            out = model(torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens, margins


def generate(f16, gemma3=False):
    torch.set_num_threads(2)
    if gemma3:
        model, prompt_ids, stride, out, name = (gemma3_model(model_path(MODEL_GEMMA3)), PROMPTS_GEMMA3,
                                                STRIDE_GEMMA3, FIXTURE_GEMMA3, MODEL_GEMMA3)
    else:
        model, prompt_ids, stride = transformers_model(model_path(), f16), PROMPTS, STRIDE
        out, name = FIXTURE_F16 if f16 else FIXTURE, MODEL
    logits = transformers_logits(model, prompt_ids)
    prompts = []
    for ids, rows in zip(prompt_ids, logits):
        continuation, margins = greedy(model, ids)
        positions = []
        for row in rows:
            top = np.argsort(-row)[:TOP]
            positions.append({"ids": [int(i) for i in top], "logits": [float(row[i]) for i in top]})
        prompts.append(
            {
                "ids": ids,
                "positions": positions,
                "last_row_stride": stride,
                "last_row": [round(float(v), 6) for v in rows[-1][::stride]],
                "greedy": continuation,
                "greedy_margins": margins,
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": name, "weights": "f16" if f16 else "f32",
                               "transformers": __import__("transformers").__version__,
                               "torch": torch.__version__, "prompts": prompts}))
    print(f"wrote {out} ({out.stat().st_size} bytes)")


def llamacpp_check(gguf_path, ours_path):
    from llama_cpp import Llama

    reference = json.loads(FIXTURE.read_text())["prompts"]
    llm = Llama(model_path=str(gguf_path), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    ours = json.loads(pathlib.Path(ours_path).read_text())["prompts"] if ours_path else None
    worst_ref = worst_ours = 0.0
    agree_ref = agree_ours = total = 0
    for p, ref in enumerate(reference):
        llm.reset()
        llm.eval(ref["ids"])
        rows = np.array(llm.scores[: len(ref["ids"])], dtype=np.float64)
        for i, pos in enumerate(ref["positions"]):
            total += 1
            worst_ref = max(worst_ref, float(np.max(np.abs(rows[i][pos["ids"]] - np.array(pos["logits"])))))
            agree_ref += int(np.argmax(rows[i]) == pos["ids"][0])
            if ours is not None:
                mine = np.array(ours[p][i], dtype=np.float64)
                worst_ours = max(worst_ours, float(np.max(np.abs(rows[i] - mine))))
                agree_ours += int(np.argmax(rows[i]) == np.argmax(mine))
    print(f"llama.cpp on {gguf_path}: {total} positions")
    print(f"  vs transformers f32: top-1 agreement {agree_ref}/{total}, max |logit diff| on its top-{TOP} {worst_ref:.3f}")
    if ours is not None:
        print(f"  vs our engine on the same file: top-1 agreement {agree_ours}/{total}, max |logit diff| over the vocabulary {worst_ours:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llamacpp", type=pathlib.Path, help="check llama.cpp on this GGUF instead of writing the fixture")
    parser.add_argument("--ours", type=pathlib.Path, help="JSON of our engine's logits on the same GGUF")
    parser.add_argument("--f16", action="store_true", help="round every weight to f16 first (transformers-f16.json)")
    parser.add_argument("--gemma3", action="store_true", help="Gemma-3-270M Q4_K_M instead (gemma3/transformers.json)")
    args = parser.parse_args()
    if args.llamacpp:
        llamacpp_check(args.llamacpp, args.ours)
    else:
        generate(args.f16, args.gemma3)
