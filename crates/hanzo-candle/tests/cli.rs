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
fn the_second_chat_turn_reuses_the_first_turns_cache_entries() {
    let dir = temp_dir("chat-turns");
    let model = tiny_model(&dir, "llama", false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hanzo-candle"))
        .args(["chat", "-m", model.to_str().unwrap(), "-n", "3", "-t", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nagain\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let reports: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.contains("prompt "))
        .map(str::to_string)
        .collect();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(!reports[0].contains("reused"), "{}", reports[0]);
    assert!(reports[1].contains(" reused)"), "{}", reports[1]);
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
fn perplexity_saves_compares_and_refuses_mismatched_input() {
    let dir = temp_dir("ppl");
    let model = tiny_model(&dir, "llama", false);
    let model = model.to_str().unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // One token per letter or space: 44 tokens per sentence.
    let sentence = "the quick brown fox jumps over the lazy dog ";
    std::fs::write(path("text.txt"), sentence.repeat(3)).unwrap();
    std::fs::write(path("other.txt"), sentence.replace("fox", "cat").repeat(3)).unwrap();
    std::fs::write(path("short.txt"), "abc").unwrap();
    let ppl = |extra: &[&str]| {
        let mut args = vec!["perplexity", "-m", model, "--ctx", "16", "-t", "1"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let text = path("text.txt");
    let base = path("base.bin");
    let out = ppl(&["-f", &text, "--save-logits", &base, "--save-top-k", "8"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // 132 tokens: 8 chunks of 16, 7 scored tokens each.
    assert!(
        stdout.contains("Final estimate: PPL = ") && stdout.contains("(56 tokens scored)"),
        "{stdout}"
    );
    assert!(stderr(&out).contains("[8]"), "{}", stderr(&out));
    // The same run against itself; the base alone gives the tokens.
    let out = ppl(&["--kl-divergence-base", &base]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Stored log-probabilities are f32: the self-divergence is 0 to ~1e-7.
    let kld: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Mean    KLD:"))
        .and_then(|rest| rest.split('±').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no mean KLD in {stdout}"));
    assert!(kld.abs() < 1e-6, "{stdout}");
    assert!(stdout.contains("Same top p: 100.000"), "{stdout}");
    // The tiny model's weights are f32: its exact reference is itself.
    let out = ppl(&["-f", &text, "--reference", "--kl-divergence-base", &base]);
    assert!(out.status.success(), "{}", stderr(&out));

    assert_clean_failure(&ppl(&["-f", &path("missing.txt")]), "missing.txt");
    assert_clean_failure(&ppl(&["-f", &path("short.txt")]), "at least 32");
    assert_clean_failure(&ppl(&[]), "-f FILE");
    assert_clean_failure(
        &ppl(&["-f", &path("other.txt"), "--kl-divergence-base", &base]),
        "differ from the base logits' at token",
    );
    assert_clean_failure(
        &ppl(&["-f", &text, "--kl-divergence-base", &text]),
        "bad magic",
    );
    let mut bytes = std::fs::read(&base).unwrap();
    let vocab = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
    bytes[16..20].copy_from_slice(&(vocab + 1).to_le_bytes());
    std::fs::write(path("wider.bin"), &bytes).unwrap();
    assert_clean_failure(
        &ppl(&["-f", &text, "--kl-divergence-base", &path("wider.bin")]),
        "vocabulary",
    );
    assert_clean_failure(
        &run(&[
            "perplexity",
            "-m",
            model,
            "-f",
            &text,
            "--ctx",
            "8",
            "--kl-divergence-base",
            &base,
        ]),
        "--ctx 16",
    );
    assert_clean_failure(
        &ppl(&["-f", &text, "--reference", "--kv-cache", "f16"]),
        "--reference",
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
    const COMMANDS: [&str; 11] = [
        "generate",
        "embed",
        "rerank",
        "chat",
        "serve",
        "inspect",
        "quantize",
        "sample",
        "demo",
        "bench",
        "perplexity",
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
