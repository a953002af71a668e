//! `hanzo-candle bench`: load time, time to first token, prefill and decode
//! speed, peak memory, and decode speed against the memory-bandwidth limit.
//!
//! One repetition:
//! 1. load the model and allocate its KV cache (timed: "load");
//! 2. one forward over a prompt of the first `-p` length, plus the argmax of
//!    its last logits (timed: "time to first token", the first forward after
//!    loading, as a user sees it);
//! 3. `-n` tokens continuing that prompt, one forward each, the argmax
//!    between forwards untimed (decode after the prompt, tokens/s, sampling
//!    excluded; llama-bench's `tgN @ dP`);
//! 4. for each `-p` length, one forward over a fresh prompt of that length
//!    from an empty cache (prefill tokens/s; llama-bench's `ppN`);
//! 5. `-n` tokens from an empty cache, one forward each, as in 3 (decode
//!    tokens/s; llama-bench's `tgN`, the figure `bench/llm` compares).
//!
//! Prompt token `i` is `first + (i * 7919) % (vocab - first)` with
//! `first = min(100, vocab / 2)`: fixed ids away from the special tokens at
//! the start of most vocabularies, identical across engines.

use crate::generate::NPredictArg;
use crate::threads::ThreadsArg;
use anyhow::Context;
use candle_engine::kv_cache::{CacheOptions, KvCache, KvPrecision};
use candle_engine::loader::Model;
use candle_engine::Batch;
use candle_quant::gguf::GgufFile;
use candle_serve::models;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes streamed to measure the memory bandwidth: far larger than any
/// cache, small enough to allocate next to a model.
const BANDWIDTH_BUFFER_BYTES: usize = 1 << 30;
/// Passes over the buffer; the fastest counts, as for the decode rate the
/// bandwidth bounds.
const BANDWIDTH_PASSES: usize = 3;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A .gguf file or a Hugging Face model directory (default: SmolLM2-135M-Instruct Q4_1).
    #[arg(short, long)]
    model: Option<String>,
    #[command(flatten)]
    threads: ThreadsArg,
    /// Prompt lengths to time prefill at, comma-separated (llama-bench's -p);
    /// the first is also the prompt of TTFT and of the decode after a prompt.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "128,512"
    )]
    prompt_lengths: Vec<usize>,
    #[command(flatten)]
    n_predict: NPredictArg,
    /// Repetitions (each loads the model again); the median, min and max are reported.
    #[arg(short, long, visible_alias = "repetitions", default_value_t = 3)]
    repeats: usize,
    /// Element type of the KV cache (f16 is llama.cpp's default too).
    #[arg(long, value_enum, default_value_t = KvCacheType::F16)]
    kv_cache: KvCacheType,
    /// Memory bandwidth in GB/s for the roofline (default: measured here
    /// with a streaming read of 1 GiB on the benchmark's threads).
    #[arg(long, value_name = "GBPS")]
    bandwidth: Option<f64>,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KvCacheType {
    F16,
    F32,
}

/// Invalid `hanzo-candle bench` arguments.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench: {field} must be {expected}, got {found}")]
    InvalidArgument {
        field: &'static str,
        expected: &'static str,
        found: String,
    },
}

impl BenchArgs {
    fn validate(&self) -> Result<(), BenchError> {
        let invalid = |field, expected, found: String| {
            Err(BenchError::InvalidArgument {
                field,
                expected,
                found,
            })
        };
        if self.prompt_lengths.is_empty() || self.prompt_lengths.contains(&0) {
            return invalid(
                "--n-prompt",
                "one or more positive lengths",
                format!("{:?}", self.prompt_lengths),
            );
        }
        if self.n_predict.tokens == 0 {
            return invalid("--n-predict", "at least 1", "0".into());
        }
        if self.repeats == 0 {
            return invalid("--repeats", "at least 1", "0".into());
        }
        if let Some(gbps) = self.bandwidth {
            if !(gbps.is_finite() && gbps > 0.0) {
                return invalid("--bandwidth", "a positive number of GB/s", gbps.to_string());
            }
        }
        Ok(())
    }
}

/// Median, minimum and maximum of a metric over the repetitions.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "median": self.median, "min": self.min, "max": self.max })
    }

    fn show(&self, precision: usize) -> String {
        format!(
            "{:.p$} [{:.p$} - {:.p$}]",
            self.median,
            self.min,
            self.max,
            p = precision
        )
    }
}

/// The timings of one repetition.
struct Round {
    load: Duration,
    first_token: Duration,
    /// From an empty cache.
    decode_tokens_per_s: f64,
    /// Continuing the prompt of the first length.
    decode_after_prompt_tokens_per_s: f64,
    /// Same order as `BenchArgs::prompt_lengths`.
    prefill_tokens_per_s: Vec<f64>,
    kv_cache_bytes: usize,
    context: usize,
}

/// Runs the benchmark and prints the report (or, with `--json`, one JSON
/// object for scripts such as `bench/llm/run.sh`).
///
/// ```text
/// hanzo-candle bench -m SmolLM2-135M-Instruct.Q4_1.gguf -t 2 -p 128,512 -n 128
/// hanzo-candle bench -m model.gguf -p 64 -n 32 -r 5 --bandwidth 17 --json
/// ```
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    args.validate()?;
    let threads = args.threads.apply()?;
    let path = models::resolve(args.model.as_deref())?;
    let file_bytes = file_bytes(&path)?;

    let rounds = (0..args.repeats)
        .map(|_| round(&path, args))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Before the bandwidth buffer, which would otherwise be the peak.
    let peak_rss_bytes = peak_rss_bytes();
    let weight_bytes_per_token = weight_bytes_per_token(&path)?;
    let (bandwidth_gbps, bandwidth_source) = match args.bandwidth {
        Some(gbps) => (gbps, "given"),
        None => (measure_bandwidth(threads), "measured"),
    };

    let load = Spread::of(&collect(&rounds, |r| r.load.as_secs_f64()));
    let first_token_ms = Spread::of(&collect(&rounds, |r| r.first_token.as_secs_f64() * 1e3));
    let decode = Spread::of(&collect(&rounds, |r| r.decode_tokens_per_s));
    let decode_after_prompt = Spread::of(&collect(&rounds, |r| r.decode_after_prompt_tokens_per_s));
    let prefill: Vec<Spread> = (0..args.prompt_lengths.len())
        .map(|i| Spread::of(&collect(&rounds, |r| r.prefill_tokens_per_s[i])))
        .collect();
    let ceiling_tokens_per_s = bandwidth_gbps * 1e9 / weight_bytes_per_token as f64;
    let fraction = decode.median / ceiling_tokens_per_s;
    let (kv_cache_bytes, context) = (rounds[0].kv_cache_bytes, rounds[0].context);
    // What the process holds beyond the weights (mapped or read, they are
    // resident after a forward pass) and the KV cache: activations, scratch,
    // tokenizer, code. Negative when the OS has dropped weight pages.
    let rss_beyond_file_and_kv = peak_rss_bytes as i64 - file_bytes as i64 - kv_cache_bytes as i64;

    if args.json {
        let prefill: serde_json::Map<String, serde_json::Value> = args
            .prompt_lengths
            .iter()
            .zip(&prefill)
            .map(|(len, s)| (len.to_string(), s.json()))
            .collect();
        let report = serde_json::json!({
            "engine": "hanzo-candle",
            "model": path.display().to_string(),
            "threads": threads,
            "kernels": format!("{:?}", candle_quant::kernels::Isa::selected()),
            "repeats": args.repeats,
            "prompt_lengths": args.prompt_lengths,
            "decode_tokens": args.n_predict.tokens,
            "load_s": load.json(),
            "ttft_ms": first_token_ms.json(),
            "prefill_tok_s": prefill,
            "decode_tok_s": decode.json(),
            "decode_after_prompt_tok_s": decode_after_prompt.json(),
            "peak_rss_bytes": peak_rss_bytes,
            "file_bytes": file_bytes,
            "kv_cache_bytes": kv_cache_bytes,
            "peak_rss_beyond_file_and_kv_bytes": rss_beyond_file_and_kv,
            "kv_cache_type": format!("{:?}", args.kv_cache).to_lowercase(),
            "context": context,
            "weight_bytes_per_token": weight_bytes_per_token,
            "bandwidth_gbps": bandwidth_gbps,
            "bandwidth_source": bandwidth_source,
            "decode_ceiling_tok_s": ceiling_tokens_per_s,
            "decode_fraction_of_bandwidth_limit": fraction,
        });
        println!("{report}");
        return Ok(());
    }
    let mib = |bytes: f64| bytes / (1u64 << 20) as f64;
    println!("model      {}", path.display());
    println!(
        "setup      {threads} threads, {:?} kernels (HANZO_ISA), {} repetitions: \
         median [min - max]",
        candle_quant::kernels::Isa::selected(),
        args.repeats
    );
    println!("load       {} s", load.show(3));
    println!(
        "TTFT       {} ms (prompt of {} tokens)",
        first_token_ms.show(1),
        args.prompt_lengths[0]
    );
    for (len, s) in args.prompt_lengths.iter().zip(&prefill) {
        println!("pp{len:<8} {} tok/s", s.show(1));
    }
    println!(
        "tg{:<8} {} tok/s (from an empty cache, sampling excluded)",
        args.n_predict.tokens,
        decode.show(1)
    );
    println!(
        "{:<10} {} tok/s (continuing the first prompt)",
        format!("tg{} @ d{}", args.n_predict.tokens, args.prompt_lengths[0]),
        decode_after_prompt.show(1)
    );
    println!(
        "memory     peak RSS {:.1} MiB = file {:.1} + KV cache {:.1} ({context} positions) {:+.1} MiB",
        mib(peak_rss_bytes as f64),
        mib(file_bytes as f64),
        mib(kv_cache_bytes as f64),
        mib(rss_beyond_file_and_kv as f64)
    );
    println!(
        "roofline   {:.1} MiB of weights per token at {bandwidth_gbps:.1} GB/s ({bandwidth_source}): \
         at most {ceiling_tokens_per_s:.1} tok/s; decode reaches {:.0}%",
        mib(weight_bytes_per_token as f64),
        fraction * 100.0
    );
    Ok(())
}

fn collect(rounds: &[Round], metric: impl Fn(&Round) -> f64) -> Vec<f64> {
    rounds.iter().map(metric).collect()
}

/// Prompt token ids of `len` tokens for a vocabulary of `vocab` (see the
/// module documentation).
fn prompt(len: usize, vocab: usize) -> Vec<u32> {
    let first = 100.min(vocab / 2);
    (0..len)
        .map(|i| (first + (i * 7919) % (vocab - first)) as u32)
        .collect()
}

fn argmax(logits: &candle_core::Tensor) -> anyhow::Result<u32> {
    let values = logits.flatten_all()?.to_vec1::<f32>()?;
    let (best, _) = values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        });
    Ok(best as u32)
}

/// `len` tokens of slot 0 from position `start`, asking for the last
/// token's logits only, as generation does.
fn batch(start: usize, tokens: &[u32]) -> Batch {
    let mut batch = Batch::single(0, start, tokens);
    batch.logits_for = vec![tokens.len() - 1];
    batch
}

fn round(path: &Path, args: &BenchArgs) -> anyhow::Result<Round> {
    let first_len = args.prompt_lengths[0];
    let longest = args
        .prompt_lengths
        .iter()
        .copied()
        .max()
        .unwrap_or(first_len);
    let context = longest.max(first_len + args.n_predict.tokens);

    let started = Instant::now();
    let model = Model::load(path, Some(context))
        .with_context(|| format!("bench: loading {}", path.display()))?;
    let precision = match args.kv_cache {
        KvCacheType::F16 => KvPrecision::F16,
        KvCacheType::F32 => KvPrecision::F32,
    };
    let mut cache = model.decoder.new_cache(CacheOptions {
        max_step_tokens: longest,
        precision,
        ..CacheOptions::default()
    })?;
    let load = started.elapsed();
    let vocab = model.decoder.config().vocab_size;

    let first_prompt = prompt(first_len, vocab);
    let started = Instant::now();
    let logits = model
        .decoder
        .forward(&batch(0, &first_prompt), &mut cache)?;
    let next = argmax(&logits)?;
    let first_token = started.elapsed();

    let decoding_after_prompt = decode(&model, &mut cache, first_len, next, args.n_predict.tokens)?;

    let mut prefill_tokens_per_s = Vec::with_capacity(args.prompt_lengths.len());
    for &len in &args.prompt_lengths {
        cache.clear(0);
        let tokens = prompt(len, vocab);
        let started = Instant::now();
        model.decoder.forward(&batch(0, &tokens), &mut cache)?;
        prefill_tokens_per_s.push(len as f64 / started.elapsed().as_secs_f64());
    }

    cache.clear(0);
    let decoding = decode(
        &model,
        &mut cache,
        0,
        prompt(1, vocab)[0],
        args.n_predict.tokens,
    )?;
    let rate = |time: Duration| args.n_predict.tokens as f64 / time.as_secs_f64();
    Ok(Round {
        load,
        first_token,
        decode_tokens_per_s: rate(decoding),
        decode_after_prompt_tokens_per_s: rate(decoding_after_prompt),
        prefill_tokens_per_s,
        kv_cache_bytes: cache.bytes(),
        context,
    })
}

/// Time of `count` forwards of one token each into `cache`, the first
/// `token` at `start`, each next one the argmax of the last (untimed).
fn decode(
    model: &Model,
    cache: &mut KvCache,
    start: usize,
    mut token: u32,
    count: usize,
) -> anyhow::Result<Duration> {
    let mut time = Duration::ZERO;
    for position in start..start + count {
        let started = Instant::now();
        let logits = model.decoder.forward(&batch(position, &[token]), cache)?;
        time += started.elapsed();
        token = argmax(&logits)?;
    }
    Ok(time)
}

/// Size of the model: the file, or every file of a model directory.
fn file_bytes(path: &Path) -> anyhow::Result<u64> {
    let size = |p: &Path| -> anyhow::Result<u64> {
        Ok(std::fs::metadata(p)
            .with_context(|| format!("bench: reading the size of {}", p.display()))?
            .len())
    };
    if !path.is_dir() {
        return size(path);
    }
    let mut total = 0;
    for entry in
        std::fs::read_dir(path).with_context(|| format!("bench: listing {}", path.display()))?
    {
        let entry = entry?.path();
        if entry.is_file() {
            total += size(&entry)?;
        }
    }
    Ok(total)
}

/// Bytes of weights one decode step streams from memory: every tensor,
/// except that of the token embedding and the output projection only one
/// is read in full (the output; when the two are tied, the embedding is
/// the output), the embedding otherwise contributing one row.
fn weight_bytes_per_token(path: &Path) -> anyhow::Result<u64> {
    let (tensors, embedding, output) = if path.is_dir() {
        (
            safetensors_sizes(path)?,
            "model.embed_tokens.weight",
            "lm_head.weight",
        )
    } else {
        let file = GgufFile::open(path)?;
        let sizes = file
            .tensor_infos()
            .iter()
            .map(|t| (t.name.clone(), t.size))
            .collect();
        (sizes, "token_embd.weight", "output.weight")
    };
    let total: u64 = tensors.iter().map(|(_, size)| size).sum();
    let size_of = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
    Ok(match (size_of(embedding), size_of(output)) {
        (Some(embedding), Some(_)) => total - embedding,
        _ => total,
    })
}

/// (name, bytes) of every tensor in the `*.safetensors` files of `dir`.
fn safetensors_sizes(dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let mut sizes = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("bench: listing {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "safetensors") {
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("bench: reading {}", path.display()))?;
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
            .with_context(|| format!("bench: parsing {}", path.display()))?;
        for (name, info) in metadata.tensors() {
            let (start, end) = info.data_offsets;
            sizes.push((name, (end - start) as u64));
        }
    }
    Ok(sizes)
}

/// Peak resident set size of this process (`VmHWM`), or 0 where /proc is
/// unavailable.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Memory read bandwidth in GB/s: the fastest of a few passes in which
/// `threads` threads each sum their share of a 1 GiB buffer.
fn measure_bandwidth(threads: usize) -> f64 {
    let words = BANDWIDTH_BUFFER_BYTES / 8;
    // Written, not just allocated: untouched pages would all map the one
    // zero page and read from cache.
    let mut buffer = vec![0u64; words];
    let share = words.div_ceil(threads);
    std::thread::scope(|scope| {
        for (i, chunk) in buffer.chunks_mut(share).enumerate() {
            scope.spawn(move || {
                for (j, word) in chunk.iter_mut().enumerate() {
                    *word = (i * share + j) as u64;
                }
            });
        }
    });
    let mut best = 0f64;
    for _ in 0..BANDWIDTH_PASSES {
        let started = Instant::now();
        std::thread::scope(|scope| {
            for chunk in buffer.chunks(share) {
                scope.spawn(move || {
                    // Wrapping integer sums vectorise; the result is kept
                    // so the reads cannot be optimised away.
                    std::hint::black_box(chunk.iter().fold(0u64, |a, &w| a.wrapping_add(w)))
                });
            }
        });
        best = best.max(BANDWIDTH_BUFFER_BYTES as f64 / started.elapsed().as_secs_f64() / 1e9);
    }
    best
}
