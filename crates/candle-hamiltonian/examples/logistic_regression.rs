//! The `hanzo-candle sample` command as a standalone example binary (it
//! compiles the CLI module itself, so the two cannot drift apart):
//!
//! ```text
//! cargo run --release -p candle-hamiltonian --example logistic_regression -- data.csv --label y
//! ```

#[path = "../../hanzo-candle/src/sample.rs"]
mod sample;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Bayesian logistic regression by NUTS from a CSV file")]
struct Cli {
    #[command(flatten)]
    args: sample::SampleArgs,
}

fn main() -> anyhow::Result<()> {
    sample::run(&Cli::parse().args)
}
