//! `hanzo-candle sample`: Bayesian logistic regression by NUTS on a CSV file,
//! printed as a posterior summary table.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use candle_hamiltonian::models::{
    read_csv, sample_logistic_regression, LogisticRegression, SamplingConfig,
};
use candle_hamiltonian::{summary_table, MetricKind, Phase};

/// Sample the posterior of a Bayesian logistic regression with NUTS.
///
/// The model is y ~ Bernoulli(sigmoid(intercept + x·beta)) with independent
/// Normal(0, prior_scale²) priors; every CSV column except the label is a
/// predictor. Warm-up is Stan's windowed adaptation, pooled over chains.
#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// CSV file: a header row naming the columns, then numeric rows.
    pub csv: PathBuf,
    /// Name of the 0/1 outcome column.
    #[arg(long, default_value = "y")]
    pub label: String,
    /// Number of chains, run together as one batch.
    #[arg(long, default_value_t = 4)]
    pub chains: usize,
    /// Warm-up (adaptation) iterations per chain.
    #[arg(long, default_value_t = 1000)]
    pub warmup: usize,
    /// Draws kept per chain.
    #[arg(long, default_value_t = 1000)]
    pub draws: usize,
    /// Random seed; the same seed gives the same draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximum NUTS tree depth (at most 2^depth - 1 gradients per draw).
    #[arg(long, default_value_t = 10)]
    pub max_tree_depth: usize,
    /// Target mean acceptance statistic for step-size adaptation.
    #[arg(long, default_value_t = 0.8)]
    pub target_accept: f64,
    /// Adapt a dense mass matrix instead of a diagonal one.
    #[arg(long)]
    pub dense_mass: bool,
    /// Standard deviation of the Normal priors on the coefficients.
    #[arg(long, default_value_t = 10.0)]
    pub prior_scale: f64,
    /// Do not draw a progress bar on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

pub fn run(args: &SampleArgs) -> anyhow::Result<()> {
    let origin = args.csv.display().to_string();
    let table = read_csv(&args.csv)?;
    let model = LogisticRegression::from_table(&table, &args.label, args.prior_scale, &origin)?;
    let names = model.names.clone();
    let config = SamplingConfig {
        chains: args.chains,
        num_warmup: args.warmup,
        num_draws: args.draws,
        seed: args.seed,
        max_tree_depth: args.max_tree_depth,
        target_acceptance: args.target_accept,
        metric: if args.dense_mass {
            MetricKind::Dense
        } else {
            MetricKind::Diagonal
        },
    };
    let started = std::time::Instant::now();
    let mut bar = ProgressBar::new(args.warmup, args.draws, !args.no_progress);
    let trace = sample_logistic_regression(model, &config, |phase, i| bar.update(phase, i))
        .context("sampling failed")?;
    bar.finish();
    println!(
        "logistic regression on {origin}: {} rows, {} coefficients, {:.2} s",
        table.rows.len(),
        names.len(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", summary_table(&names, &trace)?);
    Ok(())
}

/// A one-line stderr progress bar, redrawn at most 100 times per phase.
struct ProgressBar {
    warmup: usize,
    draws: usize,
    enabled: bool,
    last_percent: Option<usize>,
}

impl ProgressBar {
    fn new(warmup: usize, draws: usize, enabled: bool) -> Self {
        ProgressBar {
            warmup,
            draws,
            enabled,
            last_percent: None,
        }
    }

    fn update(&mut self, phase: Phase, iteration: usize) {
        if !self.enabled {
            return;
        }
        let (label, total, offset) = match phase {
            Phase::Warmup => ("warmup  ", self.warmup, 0),
            Phase::Sampling => ("sampling", self.draws, 101),
        };
        let percent = (iteration + 1) * 100 / total.max(1);
        if self.last_percent == Some(offset + percent) {
            return;
        }
        self.last_percent = Some(offset + percent);
        let filled = percent * 30 / 100;
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r{label} [{}{}] {:>3}% {}/{}",
            "#".repeat(filled),
            ".".repeat(30 - filled),
            percent,
            iteration + 1,
            total
        );
        let _ = stderr.flush();
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}
