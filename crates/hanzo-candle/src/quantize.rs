//! `hanzo-candle quantize`: a Hugging Face safetensors directory to a GGUF
//! file for deployment (HIP-19: store in safetensors, quantize to GGUF for
//! the target).

use anyhow::Context;
use candle_quant::preset::Preset;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Presets (llama.cpp's mixtures, so files match what llama-quantize makes):
  q4_k_m  Q4_K weights; Q6_K for the output and for attn_v/ffn_down in the
          first and last eighth of the layers and every third between.
          The usual choice for CPU and Apple Silicon.
  q5_k_m  as q4_k_m with Q5_K: larger, closer to the original.
  q8_0    Q8_0 everywhere: nearly lossless, about half of f16.
  q4_0    Q4_0 weights, Q6_K output: the simplest 4-bit format.
Rows whose length is not a multiple of 256 cannot hold K-quant blocks and
fall back to Q5_0 / Q5_1 / Q8_0, as in llama.cpp. Norms stay f32.

Example:
  hanzo-candle quantize ./SmolLM2-135M-Instruct --to q4_k_m -o smollm2.q4_k_m.gguf
  hanzo-candle generate --model smollm2.q4_k_m.gguf \"Once upon a time\"")]
pub struct QuantizeArgs {
    /// A Hugging Face model directory: config.json, tokenizer.json, one or
    /// more *.safetensors (f32, f16 or bf16), and optionally
    /// tokenizer_config.json (chat template) and generation_config.json.
    /// Supported architectures: llama (LLaMA, Mistral, SmolLM), and the
    /// bert, roberta and xlm-roberta encoders (sentence embeddings and
    /// cross-encoders, e.g. all-MiniLM-L6-v2, BGE, E5).
    pub model_dir: PathBuf,

    /// The target mixture.
    #[arg(long, value_enum)]
    pub to: Target,

    /// Where to write the .gguf file (written to <OUTPUT>.partial first and
    /// renamed when complete).
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Target {
    #[value(name = "q4_k_m")]
    Q4KM,
    #[value(name = "q5_k_m")]
    Q5KM,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
}

impl From<Target> for Preset {
    fn from(t: Target) -> Self {
        match t {
            Target::Q4KM => Preset::Q4KM,
            Target::Q5KM => Preset::Q5KM,
            Target::Q8_0 => Preset::Q8_0,
            Target::Q4_0 => Preset::Q4_0,
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

pub fn run(args: &QuantizeArgs) -> anyhow::Result<()> {
    let preset = Preset::from(args.to);
    let started = Instant::now();
    eprintln!(
        "quantizing {} to {preset} -> {}",
        args.model_dir.display(),
        args.output.display()
    );
    let mut stderr = std::io::stderr().lock();
    let report = |p: candle_quant::gguf::Progress<'_>| {
        // Progress is best effort: a closed stderr must not stop the work.
        let _ = writeln!(
            stderr,
            "[{:>4}/{}] {:<28} {:>14} -> {:<5} {:>8.2} MiB  ({:.1}/{:.1} MiB)",
            p.index,
            p.count,
            p.tensor.name,
            format!("{:?}", p.tensor.shape),
            p.tensor.ty.name(),
            p.tensor_bytes as f64 / MIB,
            p.written as f64 / MIB,
            p.total as f64 / MIB,
        );
    };
    // An encoder (BERT, RoBERTa, XLM-R) becomes llama.cpp's `bert` layout; anything else
    // goes to the decoder converter, which names what it does not support.
    let encoder = args.model_dir.is_dir()
        && candle_engine::encoder::is_encoder(&args.model_dir).unwrap_or(false);
    let summary = if encoder {
        candle_engine::convert::quantize_encoder_dir(&args.model_dir, preset, &args.output, report)
    } else {
        candle_engine::convert::quantize_hf_dir(&args.model_dir, preset, &args.output, report)
    }
    .with_context(|| format!("quantizing {} to {preset}", args.model_dir.display()))?;
    let types: Vec<String> = summary
        .types
        .iter()
        .map(|(ty, n)| format!("{n} {}", ty.name()))
        .collect();
    eprintln!(
        "wrote {}: {} {} tensors ({}), {:.1} MiB from {:.1} MiB of safetensors in {:.1} s",
        args.output.display(),
        summary.tensors,
        summary.architecture,
        types.join(", "),
        summary.output_bytes as f64 / MIB,
        summary.input_bytes as f64 / MIB,
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}
