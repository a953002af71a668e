//! `hanzo-candle`: the Hanzo Candle command-line tool.

mod bench;
mod csv;
mod demo;
mod embed;
mod generate;
mod inspect;
mod perplexity;
mod quantize;
mod sample;
mod serve;
mod threads;

use clap::{Parser, Subcommand};

/// Hanzo Candle: LLM inference, HIP-19 tensor operations and Hamiltonian
/// sampling on top of candle.
///
/// Start with `hanzo-candle generate "Once upon a time"` (downloads the
/// default model, SmolLM2-135M-Instruct, on first use), or
/// `hanzo-candle chat` for a conversation.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text from a prompt, streaming it to stdout; speed figures go to stderr.
    Generate(generate::GenerateArgs),
    /// Chat interactively with a model using its chat template.
    Chat(generate::ChatArgs),
    /// Serve the model over HTTP with the OpenAI API (chat and text
    /// completions, streaming or not), batching concurrent requests.
    Serve(serve::ServeArgs),
    /// Embed texts with a sentence-embedding model (BERT family), one JSON
    /// line per text.
    Embed(embed::EmbedArgs),
    /// Score documents against a query with a cross-encoder, one JSON line
    /// per document.
    Rerank(embed::RerankArgs),
    /// Print a GGUF file's metadata and tensor table (validating it first).
    Inspect(inspect::InspectArgs),
    /// Quantize a Hugging Face safetensors directory to a GGUF file
    /// (q4_k_m, q5_k_m, q8_0, q4_0) that this tool and llama.cpp load.
    Quantize(quantize::QuantizeArgs),
    /// Bayesian logistic regression on a CSV file by NUTS, with a posterior summary.
    Sample(sample::SampleArgs),
    /// Demonstrate the HIP-19 operation surface: dtype promotion, softmax,
    /// RoPE and tiled causal attention on a long random sequence.
    Demo(demo::DemoArgs),
    /// Time loading, time to first token, prefill and decode, and compare
    /// decode with the memory-bandwidth limit.
    Bench(bench::BenchArgs),
    /// Measure a model's perplexity over a text (llama.cpp's method), and
    /// its KL-divergence from a saved base run, e.g. the exact reference.
    Perplexity(perplexity::PerplexityArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate(args) => generate::run_generate(&args),
        Command::Chat(args) => generate::run_chat(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Embed(args) => embed::run_embed(&args),
        Command::Rerank(args) => embed::run_rerank(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Quantize(args) => quantize::run(&args),
        Command::Sample(args) => sample::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Perplexity(args) => perplexity::run(&args),
    }
}
