//! `hanzo-candle serve`: the OpenAI-compatible inference worker.

use crate::generate::ModelArgs;
use candle_engine::Backend;
use candle_serve::{ModelOptions, ServeOptions};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Serve several models, described in a TOML file (see docs/SERVER.md);
    /// fields an entry leaves out take this command line's values.
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    config: Option<std::path::PathBuf>,
    /// Sequences decoded together (KV cache slots).
    #[arg(long, visible_alias = "parallel", default_value_t = 8)]
    slots: usize,
    /// Tokens run in one forward step, decode and prompt chunks together:
    /// smaller keeps streams smooth while long prompts arrive.
    #[arg(long, default_value_t = 256)]
    step_tokens: usize,
    /// Requests that may wait for a free slot; beyond them the server
    /// answers 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 endpoints (/health stays
    /// open).
    #[arg(long, env = "HANZO_CANDLE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Seconds a request may run, queueing included; then it is cancelled
    /// and answered 504 (or, streaming, ended with an error event).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    timeout: u64,
    /// Seconds running requests may take to finish after SIGTERM (or
    /// Ctrl-C); then they are cancelled and the server exits 0.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    grace: u64,
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    args.model.threads.apply()?;
    let model = ModelOptions {
        name: None,
        source: args.model.model.clone(),
        ctx: args.model.ctx,
        backend: Backend::from_name(&args.model.device)?,
        precision: args.model.precision(),
        slots: args.slots,
        step_tokens: args.step_tokens,
    };
    let models = match &args.config {
        Some(path) => candle_serve::config::read(path, &model)?,
        None => vec![model],
    };
    candle_serve::run(ServeOptions {
        models,
        queue: args.queue,
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone(),
        timeout: std::time::Duration::from_secs(args.timeout),
        grace: std::time::Duration::from_secs(args.grace),
    })
}
