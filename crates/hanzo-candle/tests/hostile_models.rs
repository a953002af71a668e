//! Hostile model files (HIP-19 §Security: a model file is input from
//! strangers). `tests/fixtures/hostile/` holds a tiny valid llama GGUF and
//! single-change variants of it, written by gguf-py through
//! `scripts/gguf_make_hostile.py`; its `manifest.json` says what each
//! variant changed and a substring its error must contain. Every variant must
//! end in that error, with no panic, within a time and memory bound, both
//! from the binary and from the library in-process; the unchanged control
//! must generate.

#![cfg(unix)]

use candle_engine::chat::Message;
use candle_engine::generate::{generate, GenerationParams};
use candle_engine::kv_cache::{CacheOptions, KvPrecision};
use candle_engine::loader::Model;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Every variant fails while loading or within its first step; the control
/// generates in well under a second. 20 s leaves room for a loaded machine
/// while still catching a hang.
const TIME_LIMIT: Duration = Duration::from_secs(20);

/// Address space of the binary. The control generates within 20 MiB and
/// fails to start within 15 (`HANZO_NUM_THREADS=2 prlimit --as=$((20<<20))
/// target/debug/hanzo-candle generate --chat -m .../base.gguf -n 4 hi`);
/// 1 GiB leaves room for other builds and allocators, while an allocation
/// sized from an unchecked count (a 2^62-layer table, a RoPE table for 2^40
/// positions, a terabyte prompt) passes it at once and fails.
const ADDRESS_SPACE_LIMIT: u64 = 1 << 30;

/// Thread pools sized to the machine would make the address space depend on
/// the core count.
const THREADS: &str = "2";

/// Tokens the binary is asked for; enough for every step to run.
const MAX_TOKENS: usize = 4;

struct Case {
    file: String,
    change: String,
    /// None for the control.
    error: Option<String>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile")
}

fn manifest() -> Vec<Case> {
    let path = fixtures().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "missing {}: run /root/venvs/ref/bin/python scripts/gguf_make_hostile.py ({e})",
            path.display()
        )
    });
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    entries
        .into_iter()
        .map(|entry| Case {
            file: entry["file"].as_str().unwrap().to_string(),
            change: entry["change"].as_str().unwrap().to_string(),
            error: entry["error"].as_str().map(str::to_string),
        })
        .collect()
}

struct Run {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs `generate --chat -m FILE -n 4 "hi"` under the address-space limit,
/// killing it after [`TIME_LIMIT`] (`status` is then `None`).
fn run_binary(model: &Path) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hanzo-candle"));
    command
        .args(["generate", "--chat", "-m"])
        .arg(model)
        .args(["-n", &MAX_TOKENS.to_string(), "hi"])
        .env("HANZO_NUM_THREADS", THREADS)
        .env("RAYON_NUM_THREADS", THREADS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setrlimit, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE_LIMIT,
                rlim_max: ADDRESS_SPACE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("the hanzo-candle binary starts");
    wait_with_deadline(child)
}

fn wait_with_deadline(mut child: Child) -> Run {
    // Readers drain the pipes so that a chatty child cannot block on a full
    // pipe while we wait for it.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIME_LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// What is wrong with the binary's run on a variant that must fail with an
/// error containing `needle`, if anything.
fn binary_problem(run: &Run, needle: &str) -> Option<String> {
    let Some(status) = run.status else {
        return Some(format!("still running after {TIME_LIMIT:?}; killed"));
    };
    if status.success() {
        return Some("exited 0".into());
    }
    if status.code().is_none() {
        return Some(format!("killed by a signal ({status}): {}", run.stderr));
    }
    if run.stderr.contains("panicked at") {
        return Some(format!("panicked: {}", run.stderr));
    }
    if !run.stderr.contains(needle) {
        return Some(format!("error lacks `{needle}`: {}", run.stderr.trim()));
    }
    None
}

#[test]
fn the_unchanged_control_generates() {
    let run = run_binary(&fixtures().join("base.gguf"));
    assert_eq!(
        run.status.and_then(|s| s.code()),
        Some(0),
        "the control must generate: {}",
        run.stderr
    );
    assert!(run.stderr.contains("generated"), "{}", run.stderr);
    assert!(!run.stdout.trim().is_empty(), "no text: {}", run.stderr);
}

#[test]
fn every_hostile_variant_ends_in_an_error_naming_the_problem_from_the_binary() {
    let cases: Vec<Case> = manifest()
        .into_iter()
        .filter(|c| c.error.is_some())
        .collect();
    assert!(cases.len() >= 40, "only {} variants", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let run = run_binary(&fixtures().join(&case.file));
            binary_problem(&run, case.error.as_deref().unwrap())
                .map(|problem| format!("{} ({}): {problem}", case.file, case.change))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} variants:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The binary's pipeline through the library: load, chat template, encode,
/// a few greedy tokens. The error as text.
fn load_and_generate(path: &Path) -> Result<String, String> {
    let text = |e: candle_engine::Error| e.to_string();
    let model = Model::load(path, None).map_err(text)?;
    let prompt = model
        .chat
        .render(&[Message::new("user", "hi")], true)
        .map_err(text)?;
    let ids = model.tokenizer.encode(&prompt, true).map_err(text)?;
    let mut cache = model
        .decoder
        .new_cache(CacheOptions {
            slots: 1,
            max_context: Some(model.max_context),
            max_step_tokens: ids.len(),
            precision: KvPrecision::F32,
        })
        .map_err(text)?;
    let params = GenerationParams {
        max_tokens: MAX_TOKENS,
        ..GenerationParams::default()
    };
    let generated = generate(
        &model.decoder,
        &model.tokenizer,
        &mut cache,
        &[ids],
        &params,
        &mut |_| {},
    )
    .map_err(text)?;
    Ok(generated.into_iter().map(|g| g.text).collect())
}

#[test]
fn every_hostile_variant_ends_in_an_error_naming_the_problem_in_process() {
    let mut failures = Vec::new();
    for case in manifest() {
        let path = fixtures().join(&case.file);
        match (load_and_generate(&path), &case.error) {
            (Ok(_), None) => {}
            (Err(e), None) => failures.push(format!("{}: the control failed: {e}", case.file)),
            (Ok(_), Some(_)) => failures.push(format!("{} ({}): loaded", case.file, case.change)),
            (Err(e), Some(needle)) if !e.to_string().contains(needle.as_str()) => {
                failures.push(format!(
                    "{} ({}): error lacks `{needle}`: {e}",
                    case.file, case.change
                ))
            }
            (Err(_), Some(_)) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
