//! `hanzo-candle embed` and `hanzo-candle rerank`: sentence embeddings and
//! cross-encoder scores as JSON lines on stdout.

use crate::threads::ThreadsArg;
use anyhow::{bail, Context};
use candle_engine::{Embedder, Reranker};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    /// A sentence-embedding model: a Hugging Face directory (BERT, RoBERTa,
    /// XLM-RoBERTa; sentence-transformers pooling files when present) or a
    /// GGUF file of llama.cpp's `bert` architecture (from its converter or
    /// `hanzo-candle quantize`).
    #[arg(short, long)]
    model: PathBuf,
    /// L2-normalise the vectors (whatever the model's own setting).
    #[arg(long)]
    normalize: bool,
    /// A file with one text per line (empty lines are skipped).
    #[arg(short, long, conflicts_with = "texts")]
    file: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[command(flatten)]
    threads: ThreadsArg,
    /// The texts to embed.
    texts: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RerankArgs {
    /// A cross-encoder: a Hugging Face directory with a sequence
    /// classification head (BertForSequenceClassification,
    /// XLMRobertaForSequenceClassification, ...) or its `bert` GGUF file.
    #[arg(short, long)]
    model: PathBuf,
    /// The query the documents are scored against.
    #[arg(short, long)]
    query: String,
    /// A file with one document per line (empty lines are skipped).
    #[arg(short, long, conflicts_with = "docs")]
    file: Option<PathBuf>,
    #[command(flatten)]
    threads: ThreadsArg,
    /// The documents to score.
    docs: Vec<String>,
}

/// The texts from the arguments or the file; none at all is an error.
fn inputs(args: &[String], file: Option<&PathBuf>) -> anyhow::Result<Vec<String>> {
    let texts: Vec<String> = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
        None => args.to_vec(),
    };
    if texts.is_empty() {
        bail!("no input: give texts as arguments or --file with one per line");
    }
    Ok(texts)
}

pub fn run_embed(args: &EmbedArgs) -> anyhow::Result<()> {
    args.threads.apply()?;
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1, got 0");
    }
    let texts = inputs(&args.texts, args.file.as_ref())?;
    let mut embedder =
        Embedder::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    if args.normalize {
        embedder.set_normalize(true);
    }
    // Once untimed, so that the timing below does not include faulting the
    // mapped weights in.
    embedder.embed(&[texts[0].as_str()])?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let mut embeddings = Vec::with_capacity(texts.len());
    for batch in refs.chunks(args.batch_size) {
        embeddings.extend(embedder.embed_detailed(batch)?);
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    for (index, (text, e)) in texts.iter().zip(&embeddings).enumerate() {
        if e.truncated {
            eprintln!(
                "note: input {index} was truncated to {} tokens (the model's max_seq_length)",
                e.tokens
            );
        }
        let line = serde_json::json!({
            "index": index,
            "text": text,
            "tokens": e.tokens,
            "truncated": e.truncated,
            "embedding": e.vector,
        });
        writeln!(out, "{line}")?;
    }
    let tokens: usize = embeddings.iter().map(|e| e.tokens).sum();
    eprintln!(
        "embedded {} texts ({tokens} tokens) in {seconds:.3} s: {:.1} texts/s, batches of {}",
        texts.len(),
        texts.len() as f64 / seconds,
        args.batch_size
    );
    Ok(())
}

pub fn run_rerank(args: &RerankArgs) -> anyhow::Result<()> {
    args.threads.apply()?;
    let docs = inputs(&args.docs, args.file.as_ref())?;
    let reranker =
        Reranker::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let scores = reranker.score(&args.query, &refs)?;
    let mut out = std::io::stdout().lock();
    for (index, (doc, s)) in docs.iter().zip(&scores).enumerate() {
        if s.truncated {
            eprintln!(
                "note: pair {index} was truncated to {} tokens (the model's limit)",
                s.tokens
            );
        }
        let line = serde_json::json!({
            "index": index,
            "text": doc,
            "score": s.score,
            "tokens": s.tokens,
            "truncated": s.truncated,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}
