//! Times upstream candle's `quantized_llama` / `quantized_gemma3` as
//! `hanzo-candle bench` times our engine and llama-bench llama.cpp, and
//! prints one JSON object.
//!
//!   upstream-candle-bench MODEL.gguf PROMPT_LENGTHS DECODE_TOKENS REPEATS
//!   e.g. upstream-candle-bench smollm2.gguf 128,512 128 3
//!
//! Per repetition: load (file open to ready); time to first token (the first
//! forward over a prompt of the first length, plus its argmax); one timed
//! forward over a fresh prompt of each length from an empty cache (ppN);
//! then decode of DECODE_TOKENS tokens from an empty cache, one per forward,
//! argmax outside the timed region (tgN). Prompt token `i` is
//! `100 + (i * 7919) % (vocab - 100)`, the same ids as ours. Threads come
//! from `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` (candle's own pools).

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_gemma3, quantized_llama};
use std::time::Instant;

enum Model {
    Llama(quantized_llama::ModelWeights),
    Gemma3(quantized_gemma3::ModelWeights),
}

impl Model {
    fn load(path: &str) -> Result<(Self, usize)> {
        let mut file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
        let content = gguf_file::Content::read(&mut file)?;
        let architecture = content
            .metadata
            .get("general.architecture")
            .context("no general.architecture")?
            .to_string()?
            .clone();
        let vocab = content
            .tensor_infos
            .get("token_embd.weight")
            .context("no token_embd.weight")?
            .shape
            .dims()[0];
        let model = match architecture.as_str() {
            "llama" => Self::Llama(quantized_llama::ModelWeights::from_gguf(
                content,
                &mut file,
                &Device::Cpu,
            )?),
            "gemma3" => Self::Gemma3(quantized_gemma3::ModelWeights::from_gguf(
                content,
                &mut file,
                &Device::Cpu,
            )?),
            other => bail!("architecture {other} is not benchmarked"),
        };
        Ok((model, vocab))
    }

    /// tokens at positions `start..`; returns the next token (argmax of the
    /// last position's logits) and the seconds the forward took.
    fn step(&mut self, tokens: &[u32], start: usize) -> Result<(u32, f64)> {
        let input = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
        let began = Instant::now();
        let logits = match self {
            Self::Llama(m) => m.forward(&input, start)?,
            Self::Gemma3(m) => m.forward(&input, start)?,
        };
        let seconds = began.elapsed().as_secs_f64();
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        let next = logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                if l > best.1 {
                    (i, l)
                } else {
                    best
                }
            })
            .0;
        Ok((next as u32, seconds))
    }
}

fn prompt(len: usize, vocab: usize) -> Vec<u32> {
    (0..len)
        .map(|i| (100 + (i * 7919) % (vocab - 100)) as u32)
        .collect()
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// `{"median": .., "min": .., "max": ..}`
fn summary(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    format!(
        "{{\"median\": {median}, \"min\": {}, \"max\": {}}}",
        values[0],
        values[n - 1]
    )
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, lengths, decode_tokens, repeats] = args.as_slice() else {
        bail!("usage: upstream-candle-bench MODEL.gguf PROMPT_LENGTHS DECODE_TOKENS REPEATS");
    };
    let lengths: Vec<usize> = lengths
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let decode_tokens: usize = decode_tokens.parse()?;
    let repeats: usize = repeats.parse()?;
    if lengths.is_empty() || lengths.contains(&0) || decode_tokens == 0 || repeats == 0 {
        bail!("prompt lengths, decode tokens and repeats must be positive");
    }

    let (mut load, mut ttft, mut decode) = (vec![], vec![], vec![]);
    let mut prefill = vec![vec![]; lengths.len()];
    for _ in 0..repeats {
        let began = Instant::now();
        let (mut model, vocab) = Model::load(path)?;
        load.push(began.elapsed().as_secs_f64());

        let began = Instant::now();
        model.step(&prompt(lengths[0], vocab), 0)?;
        ttft.push(began.elapsed().as_secs_f64() * 1e3);

        // Position 0 makes both models drop their KV cache.
        for (rates, &len) in prefill.iter_mut().zip(&lengths) {
            let (_, seconds) = model.step(&prompt(len, vocab), 0)?;
            rates.push(len as f64 / seconds);
        }

        let (mut next, mut decode_seconds) = (prompt(1, vocab)[0], 0.0);
        for position in 0..decode_tokens {
            let (token, seconds) = model.step(&[next], position)?;
            decode_seconds += seconds;
            next = token;
        }
        decode.push(decode_tokens as f64 / decode_seconds);
    }
    let prefill: Vec<String> = lengths
        .iter()
        .zip(prefill)
        .map(|(len, rates)| format!("\"{len}\": {}", summary(rates)))
        .collect();
    println!(
        "{{\"engine\": \"candle 0.11.1\", \"model\": {path:?}, \"repeats\": {repeats}, \
         \"decode_tokens\": {decode_tokens}, \"load_s\": {}, \"ttft_ms\": {}, \
         \"prefill_tok_s\": {{{}}}, \"decode_tok_s\": {}, \"peak_rss_bytes\": {}}}",
        summary(load),
        summary(ttft),
        prefill.join(", "),
        summary(decode),
        peak_rss_bytes()
    );
    Ok(())
}
