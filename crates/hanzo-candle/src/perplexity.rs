//! `hanzo-candle perplexity`: a model's perplexity over a text with
//! llama.cpp's method, and its KL-divergence from a saved base run
//! (docs/PERPLEXITY.md).

use crate::threads::ThreadsArg;
use anyhow::{bail, Context};
use candle_engine::kv_cache::{CacheOptions, KvPrecision};
use candle_engine::loader::Model;
use candle_engine::perplexity::{
    evaluate, ChunkProgress, ChunkScorer, DecoderScorer, KldSummary, LlamaCppLogits, SavedLogits,
    Settings,
};
use candle_serve::models;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Tokens per forward step: bounds the logits held at once (rows x vocab).
const STEP_TOKENS: usize = 256;

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// A .gguf file or a Hugging Face model directory (not needed with
    /// --llamacpp-logits).
    #[arg(short, long)]
    model: Option<String>,
    /// The text to measure on (UTF-8). Optional with
    /// --kl-divergence-base, whose file holds its tokens.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(short, long, visible_alias = "ctx-size", default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most this many chunks (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    #[command(flatten)]
    threads: ThreadsArg,
    /// Element type of the KV cache (default f16; f32 with --reference).
    #[arg(long, value_enum)]
    kv_cache: Option<crate::generate::KvCacheType>,
    /// Run the exact reference: the same weights dequantized to f32, f32
    /// activations (no quantized matmul inputs) and an f32 KV cache.
    #[arg(long, visible_alias = "exact")]
    reference: bool,
    /// Save what a later --kl-divergence-base comparison needs to FILE.
    #[arg(long, value_name = "FILE")]
    save_logits: Option<PathBuf>,
    /// Log-probabilities kept per position by --save-logits.
    #[arg(long, default_value_t = 128)]
    save_top_k: usize,
    /// Compare with the base run saved in FILE: KL-divergence, top-1
    /// agreement and Δp statistics.
    #[arg(long, value_name = "FILE")]
    kl_divergence_base: Option<PathBuf>,
    /// Instead of running a model, replay the log-probabilities that
    /// llama.cpp's `llama-perplexity --kl-divergence-base FILE` saved, to
    /// compare llama.cpp's run with --kl-divergence-base by this tool's
    /// statistics.
    #[arg(long, value_name = "FILE", requires = "kl_divergence_base")]
    llamacpp_logits: Option<PathBuf>,
}

pub fn run(args: &PerplexityArgs) -> anyhow::Result<()> {
    let threads = args.threads.apply()?;
    let precision = match (args.kv_cache, args.reference) {
        (Some(crate::generate::KvCacheType::F16), true) => {
            bail!("--reference keeps its KV cache in f32; drop --kv-cache f16")
        }
        (Some(crate::generate::KvCacheType::F16), false) | (None, false) => KvPrecision::F16,
        (Some(crate::generate::KvCacheType::F32), _) | (None, true) => KvPrecision::F32,
    };
    if args.file.is_none() && args.kl_divergence_base.is_none() {
        bail!("give the text to measure with -f FILE (or a base run with --kl-divergence-base)");
    }
    let base = args
        .kl_divergence_base
        .as_ref()
        .map(|path| {
            let file = std::fs::File::open(path)
                .with_context(|| format!("opening base logits {}", path.display()))?;
            SavedLogits::read_from(&mut std::io::BufReader::new(file))
                .with_context(|| format!("reading base logits {}", path.display()))
        })
        .transpose()?;
    let text = args
        .file
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the text file {}", path.display()))
        })
        .transpose()?;

    if let Some(path) = &args.llamacpp_logits {
        let Some(base) = &base else {
            unreachable!("clap requires --kl-divergence-base")
        };
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening llama.cpp logits {}", path.display()))?;
        let mut reader = std::io::BufReader::new(file);
        let mut scorer = LlamaCppLogits::open(&mut reader)
            .with_context(|| format!("reading llama.cpp logits {}", path.display()))?;
        let settings = Settings {
            ctx: scorer.ctx,
            max_chunks: Some(base.chunks()),
            bos: None,
            top_k: args.save_top_k,
        };
        let tokens = base.tokens.clone();
        return measure(args, &tokens, &settings, &mut scorer, Some(base));
    }
    let Some(model_name) = &args.model else {
        bail!("give the model with -m MODEL (or replay llama.cpp's logits with --llamacpp-logits)");
    };
    let path = models::resolve(Some(model_name))?;
    let started = Instant::now();
    let mut model = Model::load(&path, Some(args.ctx))
        .with_context(|| format!("loading {}", path.display()))?;
    if args.reference {
        model.decoder = model.decoder.into_exact()?;
    }
    eprintln!(
        "loaded {} in {:.1} s ({threads} threads, {} KV cache{})",
        path.display(),
        started.elapsed().as_secs_f64(),
        match precision {
            KvPrecision::F16 => "f16",
            KvPrecision::F32 => "f32",
        },
        if args.reference {
            ", exact f32 reference"
        } else {
            ""
        }
    );
    let tokens = match (&text, &base) {
        (Some(text), _) => model.tokenizer.encode(text, true)?,
        (None, Some(base)) => base.tokens.clone(),
        (None, None) => unreachable!("checked above"),
    };
    eprintln!("the text is {} tokens", tokens.len());

    let mut cache = model.decoder.new_cache(CacheOptions {
        slots: 1,
        max_context: Some(args.ctx),
        max_step_tokens: STEP_TOKENS.min(args.ctx),
        precision,
    })?;
    let settings = Settings {
        ctx: args.ctx,
        max_chunks: args.chunks,
        bos: model
            .tokenizer
            .adds_bos()
            .then(|| model.tokenizer.bos())
            .flatten(),
        top_k: args.save_top_k,
    };
    let mut scorer = DecoderScorer {
        decoder: &model.decoder,
        cache: &mut cache,
    };
    measure(args, &tokens, &settings, &mut scorer, base.as_ref())
}

/// Runs the evaluation with progress on stderr, saves the logits if asked
/// and prints the results.
fn measure(
    args: &PerplexityArgs,
    tokens: &[u32],
    settings: &Settings,
    scorer: &mut dyn ChunkScorer,
    base: Option<&SavedLogits>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut progress = |p: &ChunkProgress| {
        let mut err = std::io::stderr().lock();
        if p.chunk == 1 {
            let per_chunk = started.elapsed().as_secs_f64();
            let _ = writeln!(
                err,
                "{per_chunk:.2} seconds per chunk, about {:.1} minutes for {} chunks",
                per_chunk * p.chunks as f64 / 60.0,
                p.chunks
            );
        }
        let _ = match p.kld {
            Some(kld) => write!(err, "[{}]{:.4} (KLD {kld:.6}),", p.chunk, p.ppl),
            None => write!(err, "[{}]{:.4},", p.chunk, p.ppl),
        };
        if p.chunk == p.chunks {
            let _ = writeln!(err);
        }
    };
    let evaluation = evaluate(
        tokens,
        settings,
        scorer,
        args.save_logits.is_some(),
        base,
        &mut progress,
    )?;

    if let (Some(path), Some(saved)) = (&args.save_logits, &evaluation.saved) {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        saved
            .write_to(&mut out)
            .and_then(|()| out.flush())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "saved the top {} log-probabilities of {} positions to {}",
            saved.top_k,
            saved.positions.len(),
            path.display()
        );
    }
    let stats = &evaluation.perplexity;
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5} ({} tokens scored)",
        stats.ppl(),
        stats.ppl_stderr(),
        stats.count()
    );
    if let Some(summary) = evaluation.kld.as_ref().and_then(|k| k.summary()) {
        print_kld(&summary);
    }
    Ok(())
}

fn print_kld(s: &KldSummary) {
    let pm = |e: candle_engine::perplexity::Estimate| format!("{:.6} ± {:.6}", e.value, e.stderr);
    let pct = |e: candle_engine::perplexity::Estimate| {
        format!("{:.3} ± {:.3} %", 100.0 * e.value, 100.0 * e.stderr)
    };
    let label = |f: f64, what: &str| match f {
        f if f >= 1.0 => format!("Maximum {what}"),
        f if f <= 0.0 => format!("Minimum {what}"),
        0.5 => format!("Median  {what}"),
        f => format!("{:4.1}%   {what}", 100.0 * f),
    };
    println!();
    println!(
        "====== Perplexity statistics ({} positions) ======",
        s.count
    );
    println!("Mean PPL(Q)                   : {}", pm(s.ppl));
    println!("Mean PPL(base)                : {}", pm(s.ppl_base));
    println!(
        "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%",
        100.0 * s.ln_ppl_correlation
    );
    println!("Mean ln(PPL(Q)/PPL(base))     : {}", pm(s.ln_ppl_ratio));
    println!("Mean PPL(Q)/PPL(base)         : {}", pm(s.ppl_ratio));
    println!("Mean PPL(Q)-PPL(base)         : {}", pm(s.ppl_diff));
    println!();
    println!("====== KL divergence statistics ======");
    println!("Mean    KLD: {}", pm(s.kld));
    println!(
        "Base probability outside its saved top-k: {:.4} % on average (the KLD above leaves out that share of the tails' own divergence)",
        100.0 * s.rest
    );
    for &(f, v) in &s.kld_percentiles {
        println!("{}: {v:10.6}", label(f, "KLD"));
    }
    println!();
    println!("====== Token probability statistics ======");
    println!("Mean    Δp: {}", pct(s.p_diff));
    for &(f, v) in &s.p_diff_percentiles {
        println!("{}: {:6.3}%", label(f, "Δp"), 100.0 * v);
    }
    println!("RMS Δp    : {}", pct(s.p_diff_rms));
    println!("Same top p: {}", pct(s.same_top));
}
