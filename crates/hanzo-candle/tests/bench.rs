//! `hanzo-candle bench` end to end on tiny GGUF models written in-test: the
//! JSON report has every metric with sane values (the byte counts exactly as
//! the file's tensors add up), and bad arguments give clear errors. Speeds
//! are only checked to be positive and finite: timings are never asserted.

mod common;

use common::{matrix_shapes, temp_dir, tiny_model, HIDDEN, KV_DIM, NORMS};
use serde_json::Value as Json;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hanzo-candle"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

fn json_report(args: &[&str]) -> Json {
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn number(report: &Json, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Json::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {report}"))
}

/// A median/min/max summary of positive, finite values in order.
fn assert_positive_spread(report: &Json, key: &str) {
    let [median, min, max] =
        ["median", "min", "max"].map(|field| number(report, &format!("/{key}/{field}")));
    assert!(
        min.is_finite() && max.is_finite() && min > 0.0,
        "{key}: {min} {max}"
    );
    assert!(
        min <= median && median <= max,
        "{key}: {min} {median} {max}"
    );
}

/// Bytes of the f32 tensors one decode step reads in full: all of them but
/// the token embedding when a separate output projection exists (then only
/// one embedding row is looked up per token).
fn expected_weight_bytes(separate_output: bool) -> f64 {
    let matrices: usize = matrix_shapes(separate_output)
        .iter()
        .filter(|(name, _)| !(separate_output && *name == "token_embd.weight"))
        .map(|(_, [rows, cols])| rows * cols * 4)
        .sum();
    (matrices + NORMS.len() * HIDDEN * 4) as f64
}

#[test]
fn json_report_has_every_metric_with_consistent_values() {
    let dir = temp_dir("json");
    let model = tiny_model(&dir, "llama", false);
    let report = json_report(&[
        "-m",
        model.to_str().unwrap(),
        "-t",
        "1",
        "-p",
        "8,16",
        "-n",
        "4",
        "-r",
        "2",
        "--json",
    ]);
    assert_eq!(report["engine"], "hanzo-candle");
    assert_eq!(report["threads"], 1);
    assert_eq!(report["repeats"], 2);
    assert_eq!(report["decode_tokens"], 4);
    assert_eq!(report["prompt_lengths"], serde_json::json!([8, 16]));
    for key in [
        "load_s",
        "ttft_ms",
        "decode_tok_s",
        "decode_after_prompt_tok_s",
        "prefill_tok_s/8",
        "prefill_tok_s/16",
    ] {
        assert_positive_spread(&report, key);
    }
    assert_eq!(
        number(&report, "/file_bytes"),
        std::fs::metadata(&model).unwrap().len() as f64
    );
    assert_eq!(
        number(&report, "/weight_bytes_per_token"),
        expected_weight_bytes(false)
    );
    // The cache must hold the longest prompt and the first prompt plus the
    // decoded tokens: max(16, 8 + 4).
    assert_eq!(report["context"], 16);
    // One layer's f16 keys and values for every position, at least.
    let kv_floor = (2 * 16 * KV_DIM * 2) as f64;
    assert!(number(&report, "/kv_cache_bytes") >= kv_floor, "{report}");
    assert!(number(&report, "/peak_rss_bytes") > 0.0);
    assert_eq!(report["bandwidth_source"], "measured");
    let bandwidth = number(&report, "/bandwidth_gbps");
    assert!(bandwidth.is_finite() && bandwidth > 0.0);
    // fraction = decode rate × bytes per token ÷ bandwidth, by definition;
    // 1e-9 relative allows only for the rounding of the printed f64s.
    let fraction = number(&report, "/decode_fraction_of_bandwidth_limit");
    let expected =
        number(&report, "/decode_tok_s/median") * expected_weight_bytes(false) / (bandwidth * 1e9);
    assert!(
        (fraction - expected).abs() <= 1e-9 * expected,
        "{fraction} vs {expected}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn separate_output_projection_and_given_bandwidth_are_accounted() {
    let dir = temp_dir("untied");
    let model = tiny_model(&dir, "llama", true);
    let report = json_report(&[
        "-m",
        model.to_str().unwrap(),
        "-p",
        "4",
        "-n",
        "2",
        "-r",
        "1",
        "--kv-cache",
        "f32",
        "--bandwidth",
        "12.5",
        "--json",
    ]);
    assert_eq!(
        number(&report, "/weight_bytes_per_token"),
        expected_weight_bytes(true)
    );
    assert_eq!(report["bandwidth_source"], "given");
    assert_eq!(number(&report, "/bandwidth_gbps"), 12.5);
    // The ceiling is bandwidth ÷ bytes per token; 1e-9 relative as above.
    let ceiling = number(&report, "/decode_ceiling_tok_s");
    let expected = 12.5e9 / expected_weight_bytes(true);
    assert!((ceiling - expected).abs() <= 1e-9 * expected);
    // One layer's f32 keys and values for max(4, 4 + 2) positions, at least.
    assert!(number(&report, "/kv_cache_bytes") >= (2 * 6 * KV_DIM * 4) as f64);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn text_report_names_each_metric() {
    let dir = temp_dir("text");
    let model = tiny_model(&dir, "llama", false);
    let out = run(&[
        "-m",
        model.to_str().unwrap(),
        "-p",
        "4,8",
        "-n",
        "3",
        "-r",
        "1",
        "--bandwidth",
        "10",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for label in [
        "load", "TTFT", "pp4", "pp8", "tg3 ", "tg3 @ d4", "peak RSS", "KV cache", "roofline",
    ] {
        assert!(text.contains(label), "`{label}` missing from:\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A failed run: non-zero exit, an error message containing `needle`, and
/// no panic.
fn assert_clean_failure(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure for {args:?}: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn bad_arguments_fail_with_clear_errors() {
    let dir = temp_dir("bad");
    let model = tiny_model(&dir, "llama", false);
    let model = model.to_str().unwrap();
    assert_clean_failure(&["-m", "/nonexistent/model.gguf"], "does not exist");
    assert_clean_failure(
        &["-m", model, "-p", "0"],
        "--n-prompt must be one or more positive lengths, got [0]",
    );
    assert_clean_failure(&["-m", model, "-p", "8,0"], "--n-prompt");
    assert_clean_failure(
        &["-m", model, "-t", "0"],
        "--threads must be at least 1, got 0",
    );
    assert_clean_failure(&["-m", model, "-n", "0"], "--n-predict must be at least 1");
    assert_clean_failure(&["-m", model, "-r", "0"], "--repeats must be at least 1");
    assert_clean_failure(
        &["-m", model, "--bandwidth", "0"],
        "--bandwidth must be a positive number",
    );
    assert_clean_failure(&["-m", model, "-p", "abc"], "invalid value");
    // 60 prompt tokens + 8 decoded do not fit the 64 trained positions.
    assert_clean_failure(&["-m", model, "-p", "60", "-n", "8"], "trained for");
    std::fs::remove_dir_all(&dir).unwrap();
}
