//! `hanzo-candle serve` as a real process with SmolLM2, driven by the
//! official `openai` Python client (scripts/openai_client_test.py): both
//! endpoints streaming and not, parameters, stop strings, concurrent requests
//! against their outputs alone, errors, overload and disconnects. Then
//! SIGTERM ends the server with status 0.
//!
//! The Python interpreter is `$HANZO_OPENAI_PYTHON`, else the venv
//! scripts/test.sh makes (`~/.cache/hanzo-candle/openai-venv`), else
//! `python3`; it needs `pip install openai`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const MODEL_ID: &str = "SmolLM2-135M-Instruct.Q4_1";

fn models_dir() -> PathBuf {
    std::env::var_os("HANZO_CANDLE_MODELS").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/hanzo-candle/models"),
        PathBuf::from,
    )
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HANZO_OPENAI_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(std::env::var("HOME").unwrap())
        .join(".cache/hanzo-candle/openai-venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Status line and body of a plain GET.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

fn start(args: &[&str]) -> Server {
    let model = models_dir().join(MODEL_FILE);
    assert!(
        model.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        model.display()
    );
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hanzo-candle"));
    command.arg("serve");
    if !args.contains(&"--config") {
        command.arg("-m").arg(&model);
    }
    let child = command
        .args(["--port", &port.to_string(), "-t", "2"])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match get(port, "/health") {
            Some((200, body)) => {
                assert!(body.contains("ok"), "{body}");
                return server;
            }
            // 503 while the model loads, or not listening yet.
            Some((503, body)) => assert!(body.contains("loading"), "{body}"),
            Some((status, body)) => panic!("/health answered {status}: {body}"),
            None => {}
        }
        assert!(Instant::now() < deadline, "the server did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_client(mode: &str, server: &Server, key: &str) {
    run_client_with(mode, server, MODEL_ID, key, &[]);
}

fn run_client_with(mode: &str, server: &Server, model: &str, key: &str, extra: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openai_client_test.py");
    let python = python();
    let output = Command::new(&python)
        .arg(&script)
        .args([
            mode,
            &format!("http://127.0.0.1:{}", server.port),
            model,
            key,
        ])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("ok"),
        "{mode} client checks failed ({}; needs `pip install openai`, see .ci/run):\n{stdout}\n{stderr}",
        python.display()
    );
}

#[test]
fn the_openai_client_gets_what_the_api_promises() {
    // Fewer slots than the 16 concurrent requests: some of them queue.
    let server = start(&["--slots", "8", "--api-key", "test-key"]);
    run_client("main", &server, "test-key");
    // Still healthy after every error case.
    assert_eq!(get(server.port, "/health").map(|r| r.0), Some(200));
}

#[test]
fn overload_is_429_and_disconnected_or_timed_out_requests_free_their_slot() {
    let server = start(&["--slots", "1", "--queue", "1", "--timeout", "5"]);
    run_client("small", &server, "unused");
    assert_eq!(get(server.port, "/health").map(|r| r.0), Some(200));
}

#[test]
fn several_models_from_a_config_file_are_served_by_name() {
    let dir = std::env::temp_dir().join(format!("hanzo-serve-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("models.toml");
    let model = models_dir().join(MODEL_FILE);
    std::fs::write(
        &config,
        format!(
            "[[model]]\nsource = {path:?}\nslots = 2\n\n\
             [[model]]\nname = \"second\"\nsource = {path:?}\nslots = 1\nkv_cache = \"f32\"\n",
            path = model.display().to_string()
        ),
    )
    .unwrap();
    let server = start(&["--config", config.to_str().unwrap()]);
    run_client("config", &server, "unused");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn encoders_answer_embeddings_and_rerank() {
    let minilm = models_dir().join("all-MiniLM-L6-v2");
    assert!(
        minilm.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-models.sh minilm",
        minilm.display()
    );
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../candle-engine/tests/fixtures/encoders");
    let dir = std::env::temp_dir().join(format!("hanzo-serve-encoders-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("models.toml");
    std::fs::write(
        &config,
        format!(
            "[[model]]\nname = \"minilm\"\nsource = {:?}\n\n[[model]]\nname = \"reranker\"\nsource = {:?}\n",
            minilm.display().to_string(),
            fixtures.join("bert-reranker").display().to_string()
        ),
    )
    .unwrap();
    let server = start(&["--config", config.to_str().unwrap()]);
    run_client_with(
        "encoders",
        &server,
        "minilm",
        "unused",
        &[fixtures.to_str().unwrap()],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sends a completion request on a new connection and returns it, unread.
fn send_completion(port: u16, max_tokens: usize, stream: bool) -> TcpStream {
    let body = format!(
        r#"{{"model":"{MODEL_ID}","prompt":"Once upon a time","max_tokens":{max_tokens},"temperature":0,"stream":{stream}}}"#
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// A running sequence, per `/metrics`.
fn wait_until_running(port: u16, sequences: usize) {
    let wanted = format!("hanzo_candle_running_sequences{{model=\"{MODEL_ID}\"}} {sequences}\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(port, "/metrics").is_some_and(|(_, body)| body.contains(&wanted)) {
        assert!(Instant::now() < deadline, "never {sequences} running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_finishes_short_requests_cancels_long_ones_after_the_grace_period_and_exits_0() {
    let mut server = start(&["--slots", "2", "--grace", "3"]);
    let mut long = send_completion(server.port, 4000, true);
    let mut short = send_completion(server.port, 16, false);
    wait_until_running(server.port, 2);
    let signalled = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "exited before the grace period although a request was running"
    );
    let mut answer = String::new();
    short.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains(r#""finish_reason":"length""#),
        "the short request finished: {answer}"
    );
    let mut streamed = String::new();
    let _ = long.read_to_string(&mut streamed);
    assert!(
        streamed.starts_with("HTTP/1.1 200") && !streamed.contains("[DONE]"),
        "the long stream was cut: {streamed}"
    );
}
