//! Our NUTS against an independent implementation: the posterior of a small
//! Bayesian logistic regression as sampled by NumPyro (4 × 20000 draws,
//! `scripts/hamiltonian_numpyro_logistic.py`).

use candle_hamiltonian::diagnostics::{ess_mean, summarize};
use candle_hamiltonian::models::LogisticRegression;
use candle_hamiltonian::{sample_nuts, SamplingConfig};

/// The fixture's predictors x1..x3 and label y (its last column), after a
/// header line.
fn read_fixture_data(path: &str) -> (Vec<String>, Vec<f64>, Vec<f64>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    assert_eq!(header.last().map(String::as_str), Some("y"));
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    for line in lines {
        let row: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        assert_eq!(row.len(), header.len(), "{path}: {line}");
        features.extend_from_slice(&row[..row.len() - 1]);
        labels.push(row[row.len() - 1]);
    }
    (header[..header.len() - 1].to_vec(), features, labels)
}

#[test]
fn logistic_posterior_matches_numpyro_within_monte_carlo_error() {
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let (predictors, features, labels) =
        read_fixture_data(&format!("{dir}/numpyro_logistic_data.csv"));
    let model = LogisticRegression::new(predictors, &features, labels, 2.5).unwrap();
    let names = model.names.clone();
    let config = SamplingConfig {
        num_warmup: 500,
        num_draws: 1000,
        seed: 3,
        ..Default::default()
    };
    let trace = sample_nuts(model, &config, |_, _| {}).unwrap();
    assert_eq!(trace.divergences(), 0);

    let reference =
        std::fs::read_to_string(format!("{dir}/numpyro_logistic_posterior.csv")).unwrap();
    for (j, line) in reference.lines().skip(1).enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], names[j]);
        let [mean, sd, mcse] = [1, 2, 3].map(|i| fields[i].parse::<f64>().unwrap());
        let chains = trace.chains_of(j);
        let ours = summarize(&chains).unwrap();
        // Both estimates are noisy; their difference has standard error
        // √(mcse_ours² + mcse_numpyro²). |z| < 4 fails with probability 6e-5
        // per check when the samplers target the same posterior.
        let z_mean = (ours.mean - mean) / ours.mcse_mean.hypot(mcse);
        assert!(
            z_mean.abs() < 4.0,
            "{}: mean {} vs NumPyro {mean}, z = {z_mean}",
            names[j],
            ours.mean
        );
        // The sd's standard error: sd·√(1/(2·ESS)) for near-Gaussian draws,
        // with ESS of the squared deviations; NumPyro's own error is ~1/20 of ours.
        let squared: Vec<Vec<f64>> = chains
            .iter()
            .map(|c| c.iter().map(|x| (x - ours.mean).powi(2)).collect())
            .collect();
        let se_sd = ours.sd / (2.0 * ess_mean(&squared).unwrap()).sqrt();
        let z_sd = (ours.sd - sd) / se_sd;
        assert!(
            z_sd.abs() < 4.0,
            "{}: sd {} vs NumPyro {sd}, z = {z_sd}",
            names[j],
            ours.sd
        );
    }
}
