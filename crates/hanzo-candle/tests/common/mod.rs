//! The tiny GGUF model the binary's end-to-end tests run on, written
//! in-test so that no test needs a downloaded model.

use candle_quant::gguf::{GgmlType, GgufWriter, Value, ValueType};
use std::path::{Path, PathBuf};

pub const HIDDEN: usize = 32;
pub const FFN: usize = 48;
pub const KV_DIM: usize = HIDDEN / 2;
pub const TRAINED_CONTEXT: usize = 64;

/// Specials, then letters, the byte-level space `Ġ`, digits and newline
/// `Ċ`: enough to encode plain prompts without merges.
pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    v.extend(('a'..='z').chain('A'..='Z').map(|c| c.to_string()));
    v.push("Ġ".into());
    v.extend(('0'..='7').map(|c| c.to_string()));
    v.push("Ċ".into());
    v
}

/// The matrices of the one-layer model as (name, [rows, cols]), in the order
/// they are written; with `separate_output`, an output projection besides
/// the token embedding.
pub fn matrix_shapes(separate_output: bool) -> Vec<(&'static str, [usize; 2])> {
    let n = vocab().len();
    let mut shapes = vec![
        ("token_embd.weight", [n, HIDDEN]),
        ("blk.0.attn_q.weight", [HIDDEN, HIDDEN]),
        ("blk.0.attn_k.weight", [KV_DIM, HIDDEN]),
        ("blk.0.attn_v.weight", [KV_DIM, HIDDEN]),
        ("blk.0.attn_output.weight", [HIDDEN, HIDDEN]),
        ("blk.0.ffn_gate.weight", [FFN, HIDDEN]),
        ("blk.0.ffn_up.weight", [FFN, HIDDEN]),
        ("blk.0.ffn_down.weight", [HIDDEN, FFN]),
    ];
    if separate_output {
        shapes.push(("output.weight", [n, HIDDEN]));
    }
    shapes
}

/// The RMS norm weights ([HIDDEN] each, all ones).
pub const NORMS: [&str; 3] = [
    "blk.0.attn_norm.weight",
    "blk.0.ffn_norm.weight",
    "output_norm.weight",
];

/// A one-layer model of `architecture` with f32 weights and a byte-level
/// BPE vocabulary, written into `dir`.
pub fn tiny_model(dir: &Path, architecture: &str, separate_output: bool) -> PathBuf {
    let vocab = vocab();
    let n = vocab.len();
    let mut state = 7u64;
    let mut values = |count: usize, scale: f32| -> Vec<u8> {
        (0..count)
            .flat_map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale).to_le_bytes()
            })
            .collect()
    };
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", architecture)
        .unwrap();
    for (key, value) in [
        ("block_count", 1),
        ("context_length", TRAINED_CONTEXT),
        ("embedding_length", HIDDEN),
        ("feed_forward_length", FFN),
        ("attention.head_count", 2),
        ("attention.head_count_kv", 1),
        ("vocab_size", n),
    ] {
        w.add_metadata(&format!("{architecture}.{key}"), value as u32)
            .unwrap();
    }
    w.add_metadata(
        &format!("{architecture}.attention.layer_norm_rms_epsilon"),
        1e-5f32,
    )
    .unwrap();
    w.add_metadata("tokenizer.ggml.model", "gpt2").unwrap();
    w.add_metadata("tokenizer.ggml.pre", "gpt2").unwrap();
    w.add_metadata("tokenizer.ggml.tokens", Value::string_array(vocab.clone()))
        .unwrap();
    let types: Vec<Value> = (0..n)
        .map(|i| Value::from(if i < 3 { 3i32 } else { 1 }))
        .collect();
    w.add_metadata(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, types),
    )
    .unwrap();
    w.add_metadata(
        "tokenizer.ggml.merges",
        Value::string_array(Vec::<String>::new()),
    )
    .unwrap();
    w.add_metadata("tokenizer.ggml.eos_token_id", 2u32).unwrap();
    for (name, [rows, cols]) in matrix_shapes(separate_output) {
        w.add_tensor(
            name,
            GgmlType::F32,
            &[cols as u64, rows as u64],
            values(rows * cols, 0.5),
        )
        .unwrap();
    }
    for name in NORMS {
        let ones: Vec<u8> = (0..HIDDEN).flat_map(|_| 1f32.to_le_bytes()).collect();
        w.add_tensor(name, GgmlType::F32, &[HIDDEN as u64], ones)
            .unwrap();
    }
    let untied = if separate_output { "-untied" } else { "" };
    let path = dir.join(format!("tiny-{architecture}{untied}.gguf"));
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    path
}

/// A fresh directory for one test, unique to this process.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hanzo-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
