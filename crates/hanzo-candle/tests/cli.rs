//! The binary end to end on a tiny GGUF model written in-test: generation
//! works and is reproducible, and bad input gives a clear error and a
//! non-zero exit, never a panic.

use candle_quant::gguf::{GgmlType, GgufWriter, Value, ValueType};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HIDDEN: usize = 32;
const FFN: usize = 48;

/// Specials, then letters and the byte-level space `Ġ`: enough to encode
/// plain prompts without merges.
fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    v.extend(('a'..='z').chain('A'..='Z').map(|c| c.to_string()));
    v.push("Ġ".into());
    v.extend(('0'..='7').map(|c| c.to_string()));
    v.push("Ċ".into());
    v
}

fn tiny_model(dir: &Path, architecture: &str) -> PathBuf {
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
        ("context_length", 64),
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
    let kv = HIDDEN / 2;
    for (name, rows, cols) in [
        ("token_embd.weight", n, HIDDEN),
        ("blk.0.attn_q.weight", HIDDEN, HIDDEN),
        ("blk.0.attn_k.weight", kv, HIDDEN),
        ("blk.0.attn_v.weight", kv, HIDDEN),
        ("blk.0.attn_output.weight", HIDDEN, HIDDEN),
        ("blk.0.ffn_gate.weight", FFN, HIDDEN),
        ("blk.0.ffn_up.weight", FFN, HIDDEN),
        ("blk.0.ffn_down.weight", HIDDEN, FFN),
    ] {
        w.add_tensor(
            name,
            GgmlType::F32,
            &[cols as u64, rows as u64],
            values(rows * cols, 0.5),
        )
        .unwrap();
    }
    for name in [
        "blk.0.attn_norm.weight",
        "blk.0.ffn_norm.weight",
        "output_norm.weight",
    ] {
        let ones: Vec<u8> = (0..HIDDEN).flat_map(|_| 1f32.to_le_bytes()).collect();
        w.add_tensor(name, GgmlType::F32, &[HIDDEN as u64], ones)
            .unwrap();
    }
    let path = dir.join(format!("tiny-{architecture}.gguf"));
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hanzo-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hanzo-candle"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failed run: non-zero exit, an error message containing `needle`, and
/// no panic.
fn assert_clean_failure(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn generate_streams_text_and_reports_speed_reproducibly() {
    let dir = temp_dir("gen");
    let model = tiny_model(&dir, "llama");
    let model = model.to_str().unwrap();
    let greedy = run(&["generate", "-m", model, "-n", "6", "hello world"]);
    assert!(greedy.status.success(), "{}", stderr(&greedy));
    let err = stderr(&greedy);
    assert!(
        err.contains("tok/s") && err.contains("time to first token") && err.contains("peak RSS"),
        "{err}"
    );
    let again = run(&["generate", "-m", model, "-n", "6", "hello world"]);
    assert_eq!(
        greedy.stdout, again.stdout,
        "greedy decoding must be deterministic"
    );
    let sampled = |seed: &str| {
        run(&[
            "generate", "-m", model, "-n", "8", "-t", "1.0", "--seed", seed, "abc",
        ])
        .stdout
    };
    assert_eq!(
        sampled("3"),
        sampled("3"),
        "the same seed must give the same text"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn chat_template_fallback_and_stop_strings_work() {
    let dir = temp_dir("chat");
    let model = tiny_model(&dir, "llama");
    let out = run(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--chat",
        "-n",
        "4",
        "--stop",
        "a",
        "hi",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains('a'),
        "stop string leaked"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_fails_cleanly() {
    let dir = temp_dir("bad");
    let model = tiny_model(&dir, "llama");
    let model = model.to_str().unwrap();
    assert_clean_failure(
        &run(&["generate", "-m", "/nonexistent/model.gguf", "x"]),
        "does not exist",
    );
    assert_clean_failure(
        &run(&["generate", "-m", "HuggingFaceTB/SmolLM2-135M", "x"]),
        "Hub",
    );
    let truncated = dir.join("truncated.gguf");
    let bytes = std::fs::read(model).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    assert_clean_failure(
        &run(&["generate", "-m", truncated.to_str().unwrap(), "x"]),
        "truncated.gguf",
    );
    assert_clean_failure(
        &run(&["inspect", truncated.to_str().unwrap()]),
        "truncated.gguf",
    );
    let mamba = tiny_model(&dir, "mamba");
    let out = run(&["generate", "-m", mamba.to_str().unwrap(), "x"]);
    assert_clean_failure(&out, "mamba");
    assert!(
        stderr(&out).contains("llama"),
        "the supported list is missing: {}",
        stderr(&out)
    );
    let long_prompt = "abcdefgh".repeat(3);
    assert_clean_failure(
        &run(&["generate", "-m", model, "--ctx", "16", &long_prompt]),
        "context",
    );
    assert_clean_failure(
        &run(&["generate", "-m", model, "--ctx", "999", "x"]),
        "trained for",
    );
    assert_clean_failure(
        &run(&["generate", "-m", model, "--top-p", "1.5", "x"]),
        "top_p",
    );
    assert_clean_failure(
        &run(&["generate", "-m", model, "--temperature=-1", "x"]),
        "temperature",
    );
    assert_clean_failure(
        &run(&["generate", "-m", model, "--device", "tpu:0", "x"]),
        "unknown device",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
