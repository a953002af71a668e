//! The Hanzo Candle inference worker (HIP-19 §Execution Flow): an HTTP
//! server with the OpenAI API's chat and text completion endpoints in front
//! of one engine thread that batches every running request into each
//! forward step.

mod api;
mod engine;
pub mod models;
mod routes;

use anyhow::Context;
use candle_engine::kv_cache::KvPrecision;
use candle_engine::loader::Model;
use candle_engine::Backend;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::mpsc;

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// `-m`: a local path, or `None` for the default model.
    pub model: Option<String>,
    /// Context per sequence (default: the model's, at most 4096).
    pub ctx: Option<usize>,
    pub backend: Backend,
    pub precision: KvPrecision,
    /// Sequences decoded together (KV cache slots).
    pub slots: usize,
    /// Tokens of one forward step (decode and prompt chunks together).
    pub step_tokens: usize,
    /// Requests that may wait for a slot before new ones get 429.
    pub queue: usize,
    pub host: String,
    pub port: u16,
    /// Bearer token every `/v1` request must carry, if set.
    pub api_key: Option<String>,
    /// A request still running after this long is cancelled (504).
    pub timeout: std::time::Duration,
}

/// What handlers need once the model is loaded.
pub(crate) struct Loaded {
    pub model_id: String,
    pub tokenizer: Arc<candle_engine::tokenizer::Tokenizer>,
    pub chat: candle_engine::chat::ChatTemplate,
    pub max_context: usize,
    pub submissions: mpsc::Sender<engine::Submission>,
}

/// The server's shared state.
pub(crate) struct State {
    pub loaded: OnceLock<Loaded>,
    pub api_key: Option<String>,
    /// Choices admitted and not yet finished, against `max_in_flight`.
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub max_in_flight: usize,
    pub timeout: std::time::Duration,
    pub created: u64,
}

/// Serves until SIGTERM or Ctrl-C. The socket is bound first, so `/health`
/// answers 503 while the model loads, then 200.
pub fn run(options: ServeOptions) -> anyhow::Result<()> {
    if options.slots == 0 {
        anyhow::bail!("--slots must be at least 1");
    }
    if options.step_tokens < options.slots {
        anyhow::bail!(
            "--step-tokens ({}) must be at least --slots ({}): every running sequence decodes one token per step",
            options.step_tokens,
            options.slots
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(options))
}

async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("{}:{}", options.host, options.port)
        .parse()
        .with_context(|| format!("--host {} --port {}", options.host, options.port))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let max_in_flight = options.slots + options.queue;
    let state = Arc::new(State {
        loaded: OnceLock::new(),
        api_key: options.api_key.clone(),
        in_flight: Default::default(),
        max_in_flight,
        timeout: options.timeout,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    eprintln!("Listening on http://{addr}");
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let loader_state = state.clone();
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            if let Err(e) = load_and_run(&options, &loader_state, max_in_flight) {
                let _ = loaded_tx.send(e);
            }
        })?;
    let app = routes::router(state);
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
    tokio::select! {
        served = server => served.context("serving"),
        // The engine thread reports only a failure to load or run.
        Ok(error) = loaded_rx => Err(error),
    }
}

fn load_and_run(options: &ServeOptions, state: &State, queue: usize) -> anyhow::Result<()> {
    let path = models::resolve(options.model.as_deref())?;
    let started = Instant::now();
    let model = Model::load_on(&path, options.ctx, options.backend.clone())
        .with_context(|| format!("loading {}", path.display()))?;
    eprintln!(
        "Loaded {} in {:.2} s (context {}, {} slots)",
        path.display(),
        started.elapsed().as_secs_f64(),
        model.max_context,
        options.slots
    );
    let Model {
        decoder,
        tokenizer,
        chat,
        max_context,
    } = model;
    let tokenizer = Arc::new(tokenizer);
    let (submissions, receiver) = mpsc::channel(queue);
    let model_id = path
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let engine_options = engine::EngineOptions {
        slots: options.slots,
        max_context,
        step_tokens: options.step_tokens,
        precision: options.precision,
    };
    let _ = state.loaded.set(Loaded {
        model_id,
        tokenizer: tokenizer.clone(),
        chat,
        max_context,
        submissions,
    });
    engine::run(&decoder, &tokenizer, engine_options, receiver)?;
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    eprintln!("Shutting down: finishing running requests");
}
