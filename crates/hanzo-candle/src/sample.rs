//! `hanzo-candle sample`: Bayesian logistic regression by NUTS on a CSV file,
//! printed as a posterior summary table.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use candle_hamiltonian::models::LogisticRegression;
use candle_hamiltonian::{sample_nuts, summary_table, MetricKind, Phase, SamplingConfig};

use crate::csv::{self, Table};

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
    #[arg(short, long, default_value_t = 0)]
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
    let table = csv::read(&args.csv)?;
    let model = logistic_regression(&table, &args.label, args.prior_scale)?;
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
    let trace =
        sample_nuts(model, &config, |phase, i| bar.update(phase, i)).context("sampling failed")?;
    bar.finish();
    println!(
        "logistic regression on {}: {} rows, {} coefficients, {:.2} s",
        table.origin,
        table.rows.len(),
        names.len(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", summary_table(&names, &trace)?);
    Ok(())
}

/// The model with column `label` of `table` as the 0/1 outcome and every
/// other column as a predictor.
fn logistic_regression(
    table: &Table,
    label: &str,
    prior_scale: f64,
) -> anyhow::Result<LogisticRegression> {
    let label_column = table
        .columns
        .iter()
        .position(|c| c == label)
        .with_context(|| {
            format!(
                "{}: --label {label:?} names no column (columns: {})",
                table.origin,
                table.columns.join(", ")
            )
        })?;
    let mut features = Vec::with_capacity(table.rows.len() * (table.columns.len() - 1));
    let mut labels = Vec::with_capacity(table.rows.len());
    for row in &table.rows {
        let y = row.values[label_column];
        if y != 0.0 && y != 1.0 {
            let message = format!("label column `{label}` must be 0 or 1, found {y}");
            return Err(table.error_at(row.line, label_column + 1, message).into());
        }
        labels.push(y);
        features.extend(without(&row.values, label_column));
    }
    let names = without(&table.columns, label_column).cloned().collect();
    Ok(LogisticRegression::new(
        names,
        &features,
        labels,
        prior_scale,
    )?)
}

/// The items of `row` except the one at `skip`.
fn without<T>(row: &[T], skip: usize) -> impl Iterator<Item = &T> {
    row.iter()
        .enumerate()
        .filter(move |(i, _)| *i != skip)
        .map(|(_, v)| v)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv::CsvError;

    fn table(text: &str) -> Table {
        csv::parse(text.as_bytes(), "d.csv").unwrap()
    }

    #[test]
    fn a_non_binary_label_names_its_line_and_column() {
        let err = logistic_regression(&table("a,y\n1,0\n\n2,2\n"), "y", 1.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.csv:4:2: label column `y` must be 0 or 1, found 2"
        );
        assert!(matches!(
            err.downcast_ref::<CsvError>(),
            Some(CsvError::At { line: 4, .. })
        ));
    }

    #[test]
    fn an_unknown_label_lists_the_columns() {
        let err = logistic_regression(&table("a,y\n1,0\n"), "label", 1.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.csv: --label \"label\" names no column (columns: a, y)"
        );
    }

    #[test]
    fn every_other_column_is_a_predictor_in_header_order() {
        let model = logistic_regression(&table("y,a,b\n1,0.5,2\n0,1,3\n"), "y", 1.0).unwrap();
        assert_eq!(model.names, ["intercept", "a", "b"]);
        let by_hand = LogisticRegression::new(
            vec!["a".into(), "b".into()],
            &[0.5, 2.0, 1.0, 3.0],
            vec![1.0, 0.0],
            1.0,
        )
        .unwrap();
        let beta = [0.1, -0.4, 0.3];
        let (mut g1, mut g2) = ([0.0; 3], [0.0; 3]);
        assert_eq!(
            model.potential_and_gradient(&beta, &mut g1),
            by_hand.potential_and_gradient(&beta, &mut g2)
        );
        assert_eq!(g1, g2);
    }
}
