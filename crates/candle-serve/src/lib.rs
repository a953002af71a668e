//! The Hanzo Candle inference worker (HIP-19 §Execution Flow): an HTTP
//! server with the OpenAI API's chat and text completion endpoints in front
//! of one engine thread that batches every running request into each
//! forward step.

mod api;
pub mod config;
mod embeddings;
mod engine;
mod metrics;
pub mod models;
mod routes;

use anyhow::Context;
use candle_engine::kv_cache::KvPrecision;
use candle_engine::loader::Model;
use candle_engine::Backend;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::mpsc;

/// One model the server serves.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// The `model` requests name; default: the file (or directory) name
    /// without extension.
    pub name: Option<String>,
    /// A local path, or `None` for the default model.
    pub source: Option<String>,
    /// Context per sequence (default: the model's, at most 4096).
    pub ctx: Option<usize>,
    pub backend: Backend,
    pub precision: KvPrecision,
    /// Sequences decoded together (KV cache slots).
    pub slots: usize,
    /// Tokens of one forward step (decode and prompt chunks together).
    pub step_tokens: usize,
}

impl ModelOptions {
    /// The id clients send as `model`.
    pub fn id(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| models::model_id(self.source.as_deref()))
    }
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub models: Vec<ModelOptions>,
    /// Requests per model that may wait for a slot before new ones get 429.
    pub queue: usize,
    pub host: String,
    pub port: u16,
    /// Bearer token every `/v1` request must carry, if set.
    pub api_key: Option<String>,
    /// A request still running after this long is cancelled (504).
    pub timeout: std::time::Duration,
    /// After SIGTERM, how long running requests may take to finish before
    /// they are cancelled and the server exits.
    pub grace: std::time::Duration,
}

/// What handlers need once a model is loaded.
pub(crate) enum Loaded {
    Generator(Box<Generator>),
    Encoder(embeddings::EncoderHandle),
}

/// A decoder: chat and text completions.
pub(crate) struct Generator {
    pub tokenizer: Arc<candle_engine::tokenizer::Tokenizer>,
    pub chat: candle_engine::chat::ChatTemplate,
    pub max_context: usize,
    pub submissions: mpsc::Sender<engine::Submission>,
}

/// A model of the server: known by name from the start, usable once loaded.
pub(crate) struct Served {
    pub id: String,
    pub loaded: OnceLock<Loaded>,
    /// Choices admitted and not yet finished, against `max_in_flight`.
    pub in_flight: AtomicUsize,
    pub max_in_flight: usize,
}

/// The server's shared state.
pub(crate) struct State {
    pub models: Vec<Served>,
    pub api_key: Option<String>,
    pub timeout: std::time::Duration,
    pub created: u64,
    pub metrics: metrics::Metrics,
}

/// Serves until SIGTERM or Ctrl-C. The socket is bound first, so `/health`
/// answers 503 while the models load, then 200.
pub fn run(options: ServeOptions) -> anyhow::Result<()> {
    validate(&options)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(options))
}

fn validate(options: &ServeOptions) -> anyhow::Result<()> {
    if options.models.is_empty() {
        anyhow::bail!("no model to serve");
    }
    let mut ids = std::collections::HashSet::new();
    for model in &options.models {
        let id = model.id();
        if !ids.insert(id.clone()) {
            anyhow::bail!("two models are named `{id}`; give each a distinct `name`");
        }
        if model.slots == 0 {
            anyhow::bail!("model `{id}`: slots must be at least 1");
        }
        if model.step_tokens < model.slots {
            anyhow::bail!(
                "model `{id}`: step tokens ({}) must be at least its slots ({}): every running sequence decodes one token per step",
                model.step_tokens,
                model.slots
            );
        }
    }
    Ok(())
}

async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("{}:{}", options.host, options.port)
        .parse()
        .with_context(|| format!("--host {} --port {}", options.host, options.port))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let state = Arc::new(State {
        models: options
            .models
            .iter()
            .map(|m| Served {
                id: m.id(),
                loaded: OnceLock::new(),
                in_flight: AtomicUsize::new(0),
                max_in_flight: m.slots + options.queue,
            })
            .collect(),
        api_key: options.api_key.clone(),
        timeout: options.timeout,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        metrics: metrics::Metrics::new(),
    });
    eprintln!("Listening on http://{addr}");
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
    // Each model has its own engine thread; their forward passes take turns
    // on the kernels' pool.
    for (index, model) in options.models.into_iter().enumerate() {
        let engine_state = state.clone();
        let failed = failed_tx.clone();
        std::thread::Builder::new()
            .name(format!("engine-{}", model.id()))
            .spawn(move || {
                if let Err(e) = load_and_run(&model, &engine_state, index) {
                    let _ = failed.send(e.context(format!("model `{}`", model.id())));
                }
            })?;
    }
    drop(failed_tx);
    let app = routes::router(state);
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel();
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        shutdown_signal().await;
        let _ = stopping_tx.send(());
    });
    let grace_over = async {
        if stopping.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(options.grace).await;
    };
    tokio::select! {
        served = server => served.context("serving"),
        // An engine thread reports only a failure to load or run.
        Some(error) = failed_rx.recv() => Err(error),
        // Dropping the server closes the connections still open, which
        // cancels their sequences.
        _ = grace_over => {
            eprintln!("Grace period over: cancelled the requests still running");
            Ok(())
        }
    }
}

fn load_and_run(options: &ModelOptions, state: &State, index: usize) -> anyhow::Result<()> {
    let path = models::resolve(options.source.as_deref())?;
    let started = Instant::now();
    if candle_engine::encoder::is_encoder(&path)? {
        let model = candle_engine::encoder::Model::load(&path)
            .with_context(|| format!("loading {}", path.display()))?;
        let served = &state.models[index];
        let (jobs, receiver) = mpsc::channel(served.max_in_flight);
        let handle = embeddings::EncoderHandle::new(&model, jobs);
        eprintln!(
            "Loaded {} as `{}` in {:.2} s ({})",
            path.display(),
            served.id,
            started.elapsed().as_secs_f64(),
            match handle.dimension {
                Some(d) => format!("embeddings of {d} dimensions"),
                None => "reranker".into(),
            }
        );
        let _ = served.loaded.set(Loaded::Encoder(handle));
        embeddings::run(&model, receiver);
        return Ok(());
    }
    let model = Model::load_on(&path, options.ctx, options.backend.clone())
        .with_context(|| format!("loading {}", path.display()))?;
    let served = &state.models[index];
    eprintln!(
        "Loaded {} as `{}` in {:.2} s (context {}, slots {})",
        path.display(),
        served.id,
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
    let (submissions, receiver) = mpsc::channel(served.max_in_flight);
    let engine_options = engine::EngineOptions {
        slots: options.slots,
        max_context,
        step_tokens: options.step_tokens,
        precision: options.precision,
    };
    let _ = served.loaded.set(Loaded::Generator(Box::new(Generator {
        tokenizer: tokenizer.clone(),
        chat,
        max_context,
        submissions,
    })));
    engine::run(
        &decoder,
        &tokenizer,
        engine_options,
        receiver,
        engine::Reporting {
            metrics: &state.metrics,
            model: &served.id,
        },
    )?;
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
    eprintln!("Shutting down: no new connections; finishing running requests");
}
