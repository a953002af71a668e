//! The binary end to end on a tiny GGUF model written in-test: generation
//! works and is reproducible, and bad input gives a clear error and a
//! non-zero exit, never a panic.

mod common;

use common::{temp_dir, tiny_model};
use std::process::{Command, Output};

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
    let model = tiny_model(&dir, "llama", false);
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
    let model = tiny_model(&dir, "llama", false);
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
    let model = tiny_model(&dir, "llama", false);
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
    let mamba = tiny_model(&dir, "mamba", false);
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
    // The test build has no GPU support compiled in.
    assert_clean_failure(
        &run(&["generate", "-m", model, "--device", "cuda:0", "x"]),
        "--features cuda",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
