//! The binary end to end on a tiny GGUF model written in-test: generation
//! works and is reproducible, and bad input gives a clear error and a
//! non-zero exit, never a panic.

mod common;

use common::{temp_dir, tiny_model};
use std::collections::BTreeMap;
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
            "generate", "-m", model, "-n", "8", "--temp", "1.0", "-s", seed, "-t", "1", "abc",
        ])
        .stdout
    };
    assert_eq!(
        sampled("3"),
        sampled("3"),
        "the same seed must give the same text"
    );
    // llama.cpp's long names are aliases of ours.
    let aliased = run(&[
        "generate",
        "-m",
        model,
        "--n-predict",
        "8",
        "--temperature",
        "1.0",
        "--seed",
        "3",
        "--threads",
        "1",
        "abc",
    ]);
    assert_eq!(aliased.stdout, sampled("3"));
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
        &run(&["generate", "-m", model, "--temp=-1", "x"]),
        "temperature",
    );
    assert_clean_failure(
        &run(&["generate", "-m", model, "-t", "0", "x"]),
        "--threads must be at least 1, got 0",
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

#[test]
fn sample_summarises_a_posterior_and_names_bad_csv_positions() {
    let dir = temp_dir("sample");
    let data = dir.join("data.csv");
    // x alternates sign; y = 1 mostly where x > 0, with two exceptions so
    // that the posterior stays proper.
    let mut csv = String::from("x,y\n");
    for i in 0..40 {
        let x = if i % 2 == 0 {
            0.1 * i as f64
        } else {
            -0.1 * i as f64
        };
        let y = u8::from(x > 0.0) ^ u8::from(i == 4 || i == 7);
        csv += &format!("{x},{y}\n");
    }
    std::fs::write(&data, csv).unwrap();
    let data = data.to_str().unwrap();
    let out = run(&[
        "sample",
        data,
        "--warmup",
        "100",
        "--draws",
        "100",
        "-s",
        "1",
        "--no-progress",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "intercept",
        "\nx ",
        "R-hat",
        "divergences:",
        "4 chains x 100 draws",
    ] {
        assert!(table.contains(needle), "`{needle}` missing from:\n{table}");
    }

    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "x,y\n0.5,1\n0.2,oops\n").unwrap();
    let bad = bad.to_str().unwrap();
    assert_clean_failure(
        &run(&["sample", bad]),
        &format!("{bad}:3:2: column `y`: expected a finite number, found \"oops\""),
    );
    let two = dir.join("two.csv");
    std::fs::write(&two, "x,y\n0.5,1\n0.2,2\n").unwrap();
    assert_clean_failure(
        &run(&["sample", two.to_str().unwrap()]),
        ":3:2: label column `y` must be 0 or 1, found 2",
    );
    assert_clean_failure(
        &run(&["sample", two.to_str().unwrap(), "--label", "z"]),
        "names no column (columns: x, y)",
    );
    assert_clean_failure(
        &run(&["sample", "/nonexistent/data.csv"]),
        "reading /nonexistent/data.csv",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The options of `hanzo-candle COMMAND --help` as (short letter, long
/// name) pairs; long-only options have no letter.
fn options(command: &str) -> Vec<(Option<char>, String)> {
    let out = run(&[command, "--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let (short, rest) = match line.as_bytes() {
                [b'-', c, b',', b' ', ..] if *c != b'-' => (Some(*c as char), &line[4..]),
                _ => (None, line),
            };
            let long = rest.strip_prefix("--")?;
            let end = long.find([' ', '=']).unwrap_or(long.len());
            Some((short, long[..end].to_string()))
        })
        .collect()
}

#[test]
fn every_flag_means_the_same_in_every_command() {
    const COMMANDS: [&str; 8] = [
        "generate", "chat", "serve", "inspect", "quantize", "sample", "demo", "bench",
    ];
    let mut long_of_short: BTreeMap<char, (String, &str)> = BTreeMap::new();
    let mut short_of_long: BTreeMap<String, (Option<char>, &str)> = BTreeMap::new();
    for command in COMMANDS {
        for (short, long) in options(command) {
            if let Some(c) = short {
                let (first, seen_in) = long_of_short.entry(c).or_insert((long.clone(), command));
                assert_eq!(
                    *first, long,
                    "-{c} is --{first} in `{seen_in}` but --{long} in `{command}`"
                );
            }
            let (first, seen_in) = short_of_long
                .entry(long.clone())
                .or_insert((short, command));
            assert_eq!(
                *first, short,
                "--{long} has short {first:?} in `{seen_in}` but {short:?} in `{command}`"
            );
        }
    }
    // llama.cpp's meanings of the letters users type most.
    for (c, long) in [
        ('m', "model"),
        ('t', "threads"),
        ('n', "n-predict"),
        ('c', "ctx"),
        ('s', "seed"),
        ('p', "n-prompt"),
        ('r', "repeats"),
    ] {
        assert_eq!(long_of_short.get(&c).map(|(l, _)| l.as_str()), Some(long));
    }
    assert!(short_of_long.contains_key("temp"));
}
