//! `hanzo-candle generate` and `hanzo-candle chat`.

use crate::threads::ThreadsArg;
use anyhow::Context;
use candle_engine::chat::Message;
use candle_engine::generate::{generate_with, Event, FinishReason, GenerationParams};
use candle_engine::kv_cache::{CacheOptions, KvCache, KvPrecision};
use candle_engine::loader::Model;
use candle_engine::sampling::SamplingParams;
use candle_engine::scheduler::{Scheduler, SchedulerOptions};
use candle_engine::Backend;
use candle_serve::models;
use std::io::Write;
use std::time::{Duration, Instant};

/// Prompt tokens processed per forward step (the KV cache is sized for it).
const PREFILL_CHUNK: usize = 512;

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// A .gguf file or a Hugging Face model directory. Default:
    /// SmolLM2-135M-Instruct Q4_1, fetched on first use into
    /// $HANZO_CANDLE_MODELS (default ~/.cache/hanzo-candle/models).
    #[arg(short, long)]
    pub model: Option<String>,
    /// Context size in tokens (default: the model's, at most 4096).
    #[arg(short, long, visible_alias = "ctx-size")]
    pub ctx: Option<usize>,
    #[command(flatten)]
    pub threads: ThreadsArg,
    /// Device to run on: cpu (our quantized kernels), or cuda:N / metal:N
    /// (candle ops and upstream QMatMul on that GPU; needs a build with
    /// `--features cuda` or `--features metal`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Element type of the KV cache: f16 (half the memory, llama.cpp's
    /// default rounding) or f32 (exact).
    #[arg(long, value_enum, default_value_t = KvCacheType::F16)]
    kv_cache: KvCacheType,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KvCacheType {
    F16,
    F32,
}

impl ModelArgs {
    pub fn precision(&self) -> KvPrecision {
        match self.kv_cache {
            KvCacheType::F16 => KvPrecision::F16,
            KvCacheType::F32 => KvPrecision::F32,
        }
    }

    /// A one-sequence cache for `model` in the requested precision.
    fn new_cache(&self, model: &Model) -> anyhow::Result<KvCache> {
        Ok(model.decoder.new_cache(CacheOptions {
            max_step_tokens: PREFILL_CHUNK,
            precision: self.precision(),
            ..CacheOptions::default()
        })?)
    }
}

/// `-n/--n-predict`: how many tokens to generate, as llama.cpp's `-n`, in
/// every command that generates.
#[derive(clap::Args, Debug)]
pub struct NPredictArg {
    /// Tokens to generate, one forward each.
    #[arg(
        short = 'n',
        long = "n-predict",
        visible_aliases = ["max-tokens", "n-gen"],
        value_name = "N",
        default_value_t = 128
    )]
    pub tokens: usize,
}

#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    #[command(flatten)]
    n_predict: NPredictArg,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(
        long = "temp",
        visible_alias = "temperature",
        value_name = "T",
        default_value_t = 0.0
    )]
    temperature: f32,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one (0: off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Penalty for tokens seen in the last --repeat-last-n tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// How many recent tokens --repeat-penalty considers.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Random seed; the same seed gives the same output.
    #[arg(short, long, default_value_t = 299_792_458)]
    seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Format the prompt as a user message with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// The prompt.
    prompt: String,
}

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// System prompt.
    #[arg(long, visible_alias = "system-prompt")]
    system: Option<String>,
}

impl SamplingArgs {
    fn params(&self) -> GenerationParams {
        GenerationParams {
            max_tokens: self.n_predict.tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                seed: self.seed,
            },
            stop: self.stop.clone(),
            logprobs: None,
        }
    }
}

fn load(args: &ModelArgs) -> anyhow::Result<Model> {
    args.threads.apply()?;
    let backend = Backend::from_name(&args.device)?;
    let path = models::resolve(args.model.as_deref())?;
    let started = Instant::now();
    let model = Model::load_on(&path, args.ctx, backend)
        .with_context(|| format!("loading {}", path.display()))?;
    eprintln!(
        "Loaded {} in {:.2} s (context {}, device {})",
        path.display(),
        started.elapsed().as_secs_f64(),
        model.max_context,
        args.device
    );
    Ok(model)
}

pub fn run_generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let params = args.sampling.params();
    params.sampling.validate()?;
    let model = load(&args.model)?;
    let prompt = if args.chat {
        model
            .chat
            .render(&[Message::new("user", &args.prompt)], true)?
    } else {
        args.prompt.clone()
    };
    let ids = model.tokenizer.encode(&prompt, true)?;
    let mut cache = args.model.new_cache(&model)?;
    let mut scheduler = scheduler(&model, &mut cache)?;
    let stats = stream(&mut scheduler, &ids, &params)?;
    stats.report();
    Ok(())
}

pub fn run_chat(args: &ChatArgs) -> anyhow::Result<()> {
    let params = args.sampling.params();
    params.sampling.validate()?;
    let model = load(&args.model)?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::new("system", system));
    }
    let mut cache = args.model.new_cache(&model)?;
    // One scheduler for the whole conversation: each turn's prompt starts
    // with the previous turns, whose cache entries it reuses.
    let mut scheduler = scheduler(&model, &mut cache)?;
    eprintln!("Type a message and press Enter; an empty line or Ctrl-D quits.");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        messages.push(Message::new("user", line.trim_end()));
        let prompt = model.chat.render(&messages, true)?;
        let ids = model.tokenizer.encode(&prompt, true)?;
        match stream(&mut scheduler, &ids, &params) {
            Ok(stats) => {
                messages.push(Message::new("assistant", &stats.text));
                stats.report();
            }
            Err(e) => {
                messages.pop();
                eprintln!("error: {e:#}");
            }
        }
    }
}

struct Stats {
    text: String,
    prompt_tokens: usize,
    /// Prompt tokens reused from the previous turn's cache entries.
    cached_tokens: usize,
    generated: usize,
    prefill: Duration,
    decode: Duration,
    finish: FinishReason,
}

fn scheduler<'a>(model: &'a Model, cache: &'a mut KvCache) -> anyhow::Result<Scheduler<'a>> {
    let options = SchedulerOptions {
        step_tokens: PREFILL_CHUNK,
    };
    Ok(Scheduler::new(
        &model.decoder,
        &model.tokenizer,
        cache,
        options,
    )?)
}

fn stream(
    scheduler: &mut Scheduler<'_>,
    ids: &[u32],
    params: &GenerationParams,
) -> anyhow::Result<Stats> {
    let started = Instant::now();
    let mut prefill_done = None;
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let results = generate_with(
        scheduler,
        &[ids.to_vec()],
        params,
        &mut |event| match event {
            Event::PromptProcessed { .. } => prefill_done = Some(Instant::now()),
            Event::Text { text, .. } => {
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                    write_error.get_or_insert(e);
                }
            }
        },
    )?;
    writeln!(out)?;
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    let end = Instant::now();
    let prefill_done = prefill_done.unwrap_or(end);
    let result = results.into_iter().next().context("no result")?;
    Ok(Stats {
        generated: result.tokens.len(),
        text: result.text,
        prompt_tokens: result.prompt_tokens,
        cached_tokens: result.cached_tokens,
        prefill: prefill_done - started,
        decode: end - prefill_done,
        finish: result.finish,
    })
}

impl Stats {
    fn report(&self) {
        let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        eprintln!(
            "prompt {} tokens{}, {:.1} tok/s | generated {} tokens, {:.1} tok/s | time to first token {:.0} ms | peak RSS {} | stop: {:?}",
            self.prompt_tokens,
            match self.cached_tokens {
                0 => String::new(),
                n => format!(" ({n} reused)"),
            },
            rate(self.prompt_tokens - self.cached_tokens, self.prefill),
            self.generated,
            // The first token comes out of the prefill step.
            rate(self.generated.saturating_sub(1), self.decode),
            self.prefill.as_secs_f64() * 1e3,
            peak_rss(),
            self.finish
        );
    }
}

/// Peak resident set size from /proc (Linux), or "n/a".
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or_else(
            || "n/a".into(),
            |kib| format!("{:.0} MiB", kib as f64 / 1024.0),
        )
}
