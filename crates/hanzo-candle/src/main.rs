//! `hanzo-candle`: the Hanzo Candle command-line tool.

mod demo;

use clap::{Parser, Subcommand};

/// Hanzo Candle: HIP-19 tensor operations and inference on top of candle.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Demonstrate the HIP-19 operation surface: dtype promotion, softmax,
    /// RoPE and tiled causal attention on a long random sequence.
    Demo(demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo(args) => demo::run(&args),
    }
}
