//! Ready-made targets: Bayesian logistic regression from a CSV file, the
//! model behind `hanzo-candle sample`.

use std::path::Path;

use crate::error::{parameter, Error, Result};
use crate::potential::Potential;

/// A numeric CSV table with a header row.
#[derive(Clone, Debug)]
pub struct Table {
    pub columns: Vec<String>,
    /// `[rows][columns]`.
    pub rows: Vec<Vec<f64>>,
}

/// Reads a comma-separated file whose first line names the columns and whose
/// other lines hold numbers; errors name the line and column at fault.
pub fn read_csv(path: impl AsRef<Path>) -> Result<Table> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_csv(&text, &path.display().to_string())
}

/// Parses CSV text (see [`read_csv`]); `origin` names it in errors.
pub fn parse_csv(text: &str, origin: &str) -> Result<Table> {
    let csv_error = |line: usize, column: usize, message: String| Error::Csv {
        path: origin.to_string(),
        line,
        column,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| csv_error(1, 1, "empty file: expected a header row".into()))?;
    let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    let mut rows = Vec::new();
    for (line, content) in lines {
        let fields: Vec<&str> = content.split(',').collect();
        if fields.len() != columns.len() {
            return Err(csv_error(
                line,
                fields.len().min(columns.len()) + 1,
                format!("expected {} fields, found {}", columns.len(), fields.len()),
            ));
        }
        let row = fields
            .iter()
            .enumerate()
            .map(|(col, field)| match field.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(csv_error(
                    line,
                    col + 1,
                    format!(
                        "column `{}`: expected a finite number, found {field:?}",
                        columns[col]
                    ),
                )),
            })
            .collect::<Result<Vec<f64>>>()?;
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(csv_error(2, 1, "no data rows after the header".into()));
    }
    Ok(Table { columns, rows })
}

/// Bayesian logistic regression y ~ Bernoulli(σ(α + xᵀβ)) with independent
/// N(0, prior_scale²) priors on α and β. Its coordinates are
/// `[intercept, β₁, …, β_d]`.
#[derive(Clone, Debug)]
pub struct LogisticRegression {
    /// Parameter names, `["intercept", feature names…]`.
    pub names: Vec<String>,
    /// `[n, d + 1]` row-major, a leading column of ones for the intercept.
    design: Vec<f64>,
    labels: Vec<f64>,
    prior_precision: f64,
}

impl LogisticRegression {
    /// features: `[n, d]` row-major; labels: `[n]` of 0/1.
    pub fn new(
        feature_names: Vec<String>,
        features: &[f64],
        labels: Vec<f64>,
        prior_scale: f64,
    ) -> Result<Self> {
        const OP: &str = "LogisticRegression::new";
        let d = feature_names.len();
        if features.len() != labels.len() * d {
            return Err(Error::Length {
                op: OP,
                what: "features (n × d)",
                expected: labels.len() * d,
                got: features.len(),
            });
        }
        if !(prior_scale > 0.0 && prior_scale.is_finite()) {
            return Err(parameter(
                OP,
                "prior_scale",
                "must be finite and positive",
                prior_scale,
            ));
        }
        if let Some(i) = labels.iter().position(|&y| y != 0.0 && y != 1.0) {
            return Err(parameter(
                OP,
                "labels",
                "must be 0 or 1",
                format!("{} at row {i}", labels[i]),
            ));
        }
        let mut design = Vec::with_capacity(labels.len() * (d + 1));
        for row in features.chunks_exact(d.max(1)).take(labels.len()) {
            design.push(1.0);
            design.extend_from_slice(&row[..d]);
        }
        let mut names = vec!["intercept".to_string()];
        names.extend(feature_names);
        Ok(LogisticRegression {
            names,
            design,
            labels,
            prior_precision: 1.0 / (prior_scale * prior_scale),
        })
    }

    /// Uses column `label` of `table` as the 0/1 outcome and every other
    /// column as a predictor.
    pub fn from_table(table: &Table, label: &str, prior_scale: f64, origin: &str) -> Result<Self> {
        let label_col = table
            .columns
            .iter()
            .position(|c| c == label)
            .ok_or_else(|| {
                parameter(
                    "LogisticRegression::from_table",
                    "label",
                    "must name a column of the CSV header",
                    format!("{label:?} (columns: {})", table.columns.join(", ")),
                )
            })?;
        let mut features = Vec::new();
        let mut labels = Vec::with_capacity(table.rows.len());
        for (i, row) in table.rows.iter().enumerate() {
            let y = row[label_col];
            if y != 0.0 && y != 1.0 {
                return Err(Error::Csv {
                    path: origin.to_string(),
                    // Data rows start on line 2, after the header.
                    line: i + 2,
                    column: label_col + 1,
                    message: format!("label column `{label}` must be 0 or 1, found {y}"),
                });
            }
            labels.push(y);
            features.extend(
                row.iter()
                    .enumerate()
                    .filter(|(c, _)| *c != label_col)
                    .map(|(_, v)| *v),
            );
        }
        let names = table
            .columns
            .iter()
            .enumerate()
            .filter(|(c, _)| *c != label_col)
            .map(|(_, n)| n.clone())
            .collect();
        Self::new(names, &features, labels, prior_scale)
    }

    /// Negative log posterior (up to a constant) at `beta` (`[d + 1]`),
    /// writing its gradient into `grad` (`[d + 1]`).
    pub fn potential_and_gradient(&self, beta: &[f64], grad: &mut [f64]) -> f64 {
        let k = beta.len();
        let mut u = 0.0;
        for (g, b) in grad.iter_mut().zip(beta) {
            *g = self.prior_precision * b;
            u += 0.5 * self.prior_precision * b * b;
        }
        // Blocks of rows: the transcendental part runs as one branch-free
        // loop over the block, which the compiler vectorises.
        const BLOCK: usize = 64;
        let (mut eta, mut residual, mut terms) = ([0.0; BLOCK], [0.0; BLOCK], [0.0; BLOCK]);
        for (rows, labels) in self.design.chunks(BLOCK * k).zip(self.labels.chunks(BLOCK)) {
            let m = labels.len();
            for (e, x) in eta.iter_mut().zip(rows.chunks_exact(k)) {
                *e = crate::metric::dot(x, beta);
            }
            for i in 0..m {
                // log(1 + e^η) and σ(η) from one exp(−|η|), which never overflows.
                let e = crate::fastmath::exp_neg(eta[i].abs());
                let softplus = eta[i].max(0.0) + crate::fastmath::log1p_unit(e);
                let inverse = 1.0 / (1.0 + e);
                let sigmoid = if eta[i] >= 0.0 { inverse } else { e * inverse };
                terms[i] = softplus - labels[i] * eta[i];
                residual[i] = sigmoid - labels[i];
            }
            u += terms[..m].iter().sum::<f64>();
            for (x, r) in rows.chunks_exact(k).zip(&residual[..m]) {
                for (g, x) in grad.iter_mut().zip(x) {
                    *g = crate::fastmath::mul_add(*r, *x, *g);
                }
            }
        }
        u
    }
}

impl Potential for LogisticRegression {
    fn dim(&self) -> usize {
        self.names.len()
    }

    fn evaluate(
        &mut self,
        positions: &[f64],
        potentials: &mut [f64],
        gradients: &mut [f64],
    ) -> Result<()> {
        let k = self.dim();
        for ((beta, g), u) in positions
            .chunks_exact(k)
            .zip(gradients.chunks_exact_mut(k))
            .zip(potentials.iter_mut())
        {
            *u = self.potential_and_gradient(beta, g);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_csv_names_line_and_column() {
        let err = parse_csv("a,b,y\n1,2,0\n3,oops,1\n", "data.csv").unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.csv:3:2: column `b`: expected a finite number, found \"oops\""
        );
        let err = parse_csv("a,b,y\n1,2\n", "data.csv").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("data.csv:2:3: expected 3 fields, found 2"));
    }

    #[test]
    fn non_binary_label_is_rejected_with_its_position() {
        let table = parse_csv("a,y\n1,0\n2,2\n", "d.csv").unwrap();
        let err = LogisticRegression::from_table(&table, "y", 1.0, "d.csv").unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.csv:3:2: label column `y` must be 0 or 1, found 2"
        );
        let err = LogisticRegression::from_table(&table, "label", 1.0, "d.csv").unwrap_err();
        assert!(err.to_string().contains("columns: a, y"));
    }

    #[test]
    fn gradient_matches_central_differences() {
        let table = parse_csv("a,b,y\n0.5,-1,1\n1.5,0.3,0\n-0.7,2,1\n", "t").unwrap();
        let model = LogisticRegression::from_table(&table, "y", 2.0, "t").unwrap();
        let beta = [0.3, -0.2, 0.7];
        let mut grad = [0.0; 3];
        model.potential_and_gradient(&beta, &mut grad);
        let mut scratch = [0.0; 3];
        for i in 0..3 {
            let (mut hi, mut lo) = (beta, beta);
            hi[i] += 1e-6;
            lo[i] -= 1e-6;
            let fd = (model.potential_and_gradient(&hi, &mut scratch)
                - model.potential_and_gradient(&lo, &mut scratch))
                / 2e-6;
            // Central differences with h = 1e-6 are accurate to ~1e-9 here.
            assert!(
                (fd - grad[i]).abs() < 1e-7,
                "coordinate {i}: {fd} vs {}",
                grad[i]
            );
        }
    }
}

/// Settings of [`sample_logistic_regression`].
#[derive(Clone, Debug)]
pub struct SamplingConfig {
    pub chains: usize,
    pub num_warmup: usize,
    pub num_draws: usize,
    pub seed: u64,
    pub max_tree_depth: usize,
    pub target_acceptance: f64,
    pub metric: crate::MetricKind,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            chains: 4,
            num_warmup: 1000,
            num_draws: 1000,
            seed: 0,
            max_tree_depth: 10,
            target_acceptance: 0.8,
            metric: crate::MetricKind::Diagonal,
        }
    }
}

/// Samples the posterior of `model` with NUTS after Stan's warm-up; chains
/// start uniformly in [−2, 2] and everything is reproducible from the seed.
pub fn sample_logistic_regression(
    model: LogisticRegression,
    config: &SamplingConfig,
    progress: impl FnMut(crate::Phase, usize),
) -> Result<crate::Trace> {
    use crate::Kernel;
    use rand::SeedableRng;
    if config.chains == 0 {
        return Err(parameter("sample", "chains", "must be at least 1", 0));
    }
    let dim = model.dim();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let init = crate::runner::uniform_initial_positions(&mut rng, config.chains, dim, 2.0);
    let mut nuts = crate::Nuts::new(model, 1.0)?.with_max_tree_depth(config.max_tree_depth)?;
    let state = nuts.init_from_slice(&init)?;
    let warmup = crate::WarmupConfig {
        num_warmup: config.num_warmup,
        target_acceptance: config.target_acceptance,
        metric: config.metric,
        initial_step_size: 1.0,
    };
    crate::run(
        &mut nuts,
        &mut rng,
        state,
        &warmup,
        config.num_draws,
        progress,
    )
}
