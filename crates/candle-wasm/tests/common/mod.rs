//! A tiny GGUF whose greedy output is known by construction, so the tests
//! check generation against arithmetic rather than against our own output.
//!
//! Every attention and feed-forward weight is zero, so each block adds
//! nothing and the last hidden state is the token's embedding, one-hot at
//! the token's id. After the final RMS norm (weights 1) that is
//! `sqrt(HIDDEN)` at the id and 0 elsewhere, and `output.weight` row `j` is
//! one-hot at every id whose successor is `j`: the successor's logit is
//! `sqrt(HIDDEN)` (about 17), every other logit 0. The successor of the
//! byte `a`..`y` is the next letter, of `z` the end-of-sequence token, and
//! of every other token `a`. So greedy decoding after "...x" is "yz" and
//! then ends with EOS. Zeros and ones survive Q8_0 (ones within 1e-4).

#![allow(dead_code)]

use candle_quant::gguf::{GgmlType, GgufWriter, Value, ValueType};
use candle_quant::QuantType;

/// `<unk> <s> </s> <|im_start|> <|im_end|>`, then the 256 byte tokens.
pub const SPECIAL: [&str; 5] = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"];
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
const VOCAB: usize = SPECIAL.len() + 256;
const HIDDEN: usize = 288;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FFN: usize = 64;
const LAYERS: usize = 2;
pub const CONTEXT: usize = 256;
const TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The id of byte `b`.
pub fn byte(b: u8) -> u32 {
    (SPECIAL.len() + b as usize) as u32
}

fn successor(id: usize) -> usize {
    match id.checked_sub(SPECIAL.len()).map(|b| b as u8) {
        Some(b @ b'a'..=b'y') => byte(b + 1) as usize,
        Some(b'z') => EOS as usize,
        _ => byte(b'a') as usize,
    }
}

/// The model's file, for `general.architecture` = `architecture`.
pub fn tiny_gguf(architecture: &str) -> Vec<u8> {
    let mut w = GgufWriter::new();
    let arch = architecture;
    w.add_metadata("general.architecture", arch).unwrap();
    for (key, value) in [
        ("block_count", LAYERS),
        ("context_length", CONTEXT),
        ("embedding_length", HIDDEN),
        ("feed_forward_length", FFN),
        ("attention.head_count", HEADS),
        ("attention.head_count_kv", KV_HEADS),
        ("rope.dimension_count", HEAD_DIM),
    ] {
        w.add_metadata(&format!("{arch}.{key}"), value as u32)
            .unwrap();
    }
    w.add_metadata(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5f32)
        .unwrap();
    let tokens: Vec<String> = SPECIAL
        .iter()
        .map(|s| s.to_string())
        .chain((0..=255u8).map(|b| format!("<0x{b:02X}>")))
        .collect();
    // SentencePiece token types: 2 unknown, 3 control, 6 byte.
    let types: Vec<i32> = [2, 3, 3, 3, 3]
        .into_iter()
        .chain(std::iter::repeat_n(6, 256))
        .collect();
    w.add_metadata("tokenizer.ggml.model", "llama").unwrap();
    w.add_metadata("tokenizer.ggml.tokens", Value::string_array(tokens))
        .unwrap();
    w.add_metadata(
        "tokenizer.ggml.token_type",
        Value::array(ValueType::I32, types),
    )
    .unwrap();
    w.add_metadata(
        "tokenizer.ggml.scores",
        Value::array(ValueType::F32, vec![0f32; VOCAB]),
    )
    .unwrap();
    w.add_metadata("tokenizer.ggml.bos_token_id", BOS).unwrap();
    w.add_metadata("tokenizer.ggml.eos_token_id", EOS).unwrap();
    w.add_metadata("tokenizer.ggml.add_space_prefix", false)
        .unwrap();
    w.add_metadata("tokenizer.chat_template", TEMPLATE).unwrap();

    let q8 = GgmlType::from_id(QuantType::Q8_0.ggml_id()).unwrap();
    let matrix = |w: &mut GgufWriter, name: &str, rows: usize, values: Vec<f32>| {
        let cols = values.len() / rows;
        let bytes = candle_quant::quant::quantize(QuantType::Q8_0, &values).unwrap();
        w.add_tensor(name, q8, &[cols as u64, rows as u64], bytes)
            .unwrap();
    };
    let mut embedding = vec![0f32; VOCAB * HIDDEN];
    let mut output = vec![0f32; VOCAB * HIDDEN];
    for id in 0..VOCAB {
        embedding[id * HIDDEN + id] = 1.0;
        output[successor(id) * HIDDEN + id] = 1.0;
    }
    matrix(&mut w, "token_embd.weight", VOCAB, embedding);
    matrix(&mut w, "output.weight", VOCAB, output);
    let zeros = |rows: usize, cols: usize| vec![0f32; rows * cols];
    let ones: Vec<u8> = (0..HIDDEN).flat_map(|_| 1f32.to_le_bytes()).collect();
    for l in 0..LAYERS {
        let kv = KV_HEADS * HEAD_DIM;
        matrix(
            &mut w,
            &format!("blk.{l}.attn_q.weight"),
            HIDDEN,
            zeros(HIDDEN, HIDDEN),
        );
        matrix(
            &mut w,
            &format!("blk.{l}.attn_k.weight"),
            kv,
            zeros(kv, HIDDEN),
        );
        matrix(
            &mut w,
            &format!("blk.{l}.attn_v.weight"),
            kv,
            zeros(kv, HIDDEN),
        );
        matrix(
            &mut w,
            &format!("blk.{l}.attn_output.weight"),
            HIDDEN,
            zeros(HIDDEN, HIDDEN),
        );
        matrix(
            &mut w,
            &format!("blk.{l}.ffn_gate.weight"),
            FFN,
            zeros(FFN, HIDDEN),
        );
        matrix(
            &mut w,
            &format!("blk.{l}.ffn_up.weight"),
            FFN,
            zeros(FFN, HIDDEN),
        );
        matrix(
            &mut w,
            &format!("blk.{l}.ffn_down.weight"),
            HIDDEN,
            zeros(HIDDEN, FFN),
        );
        for norm in ["attn_norm", "ffn_norm"] {
            w.add_tensor(
                &format!("blk.{l}.{norm}.weight"),
                GgmlType::F32,
                &[HIDDEN as u64],
                ones.clone(),
            )
            .unwrap();
        }
    }
    w.add_tensor("output_norm.weight", GgmlType::F32, &[HIDDEN as u64], ones)
        .unwrap();
    w.to_bytes().unwrap()
}
