//! Ready-made targets: Bayesian logistic regression, the model behind
//! `hanzo-candle sample`.

use crate::error::{parameter, Error, Result};
use crate::potential::Potential;

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
                format!("{} at index {i}", labels[i]),
            ));
        }
        let mut design = Vec::with_capacity(labels.len() * (d + 1));
        // Indexed rather than chunked: with no predictors (d = 0) every
        // observation still contributes its intercept row.
        for i in 0..labels.len() {
            design.push(1.0);
            design.extend_from_slice(&features[i * d..(i + 1) * d]);
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
    fn gradient_matches_central_differences() {
        let features = [0.5, -1.0, 1.5, 0.3, -0.7, 2.0];
        let names = vec!["a".to_string(), "b".to_string()];
        let model = LogisticRegression::new(names, &features, vec![1.0, 0.0, 1.0], 2.0).unwrap();
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

    #[test]
    fn bad_labels_and_shapes_are_typed_errors() {
        let names = vec!["a".to_string()];
        let err =
            LogisticRegression::new(names.clone(), &[1.0, 2.0], vec![0.0, 2.0], 1.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "LogisticRegression::new: parameter `labels` must be 0 or 1, got 2 at index 1"
        );
        let err = LogisticRegression::new(names, &[1.0], vec![0.0, 1.0], 1.0).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Length {
                    expected: 2,
                    got: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
}
