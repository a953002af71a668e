//! Convergence diagnostics of Vehtari, Gelman, Simpson, Carpenter & Bürkner
//! (2021), computed the way Stan's `stan::analyze` computes them: split
//! chains, rank normalisation with Blom's offsets and average ranks for
//! ties, Geyer's initial monotone sequence on the pooled autocovariance.

use crate::error::{Error, Result};

/// Checks that there is at least one chain and all have the same length;
/// returns that length.
fn draws_per_chain<C: AsRef<[f64]>>(op: &'static str, chains: &[C]) -> Result<usize> {
    let Some(first) = chains.first() else {
        return Err(Error::Length {
            op,
            what: "number of chains",
            expected: 1,
            got: 0,
        });
    };
    let n = first.as_ref().len();
    if let Some(bad) = chains.iter().find(|c| c.as_ref().len() != n) {
        return Err(Error::Length {
            op,
            what: "chain (all chains must have equal length)",
            expected: n,
            got: bad.as_ref().len(),
        });
    }
    Ok(n)
}

/// Splits every chain into its first and second half (dropping the middle
/// draw of odd-length chains).
fn split_chains<C: AsRef<[f64]>>(chains: &[C]) -> Vec<Vec<f64>> {
    let mut split = Vec::with_capacity(2 * chains.len());
    for chain in chains {
        let chain = chain.as_ref();
        let half = chain.len() / 2;
        split.push(chain[..half].to_vec());
        split.push(chain[chain.len() - half..].to_vec());
    }
    split
}

/// Finite everywhere and not constant within any chain: the diagnostics are
/// undefined (NaN) otherwise.
fn is_finite_and_varies(chains: &[Vec<f64>]) -> bool {
    chains.iter().all(|c| {
        let (lo, hi) = c
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        c.iter().all(|x| x.is_finite()) && hi - lo > 1e-12 * hi.abs().max(lo.abs()).max(1e-300)
    })
}

/// Quantile of `values` by linear interpolation between order statistics
/// (Hyndman & Fan type 7, R's default).
pub fn quantile(values: &[f64], prob: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let h = (sorted.len() - 1) as f64 * prob.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Standard normal quantile Φ⁻¹(p), by Newton's method on Φ from 0: Φ is
/// convex left of 0 and concave right of it, so the iteration approaches the
/// root monotonically without overshooting.
pub(crate) fn normal_quantile(p: f64) -> f64 {
    if !(p > 0.0 && p < 1.0) {
        return if p == 0.0 {
            f64::NEG_INFINITY
        } else if p == 1.0 {
            f64::INFINITY
        } else {
            f64::NAN
        };
    }
    let cdf = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
    let density = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let mut x = 0.0f64;
    for _ in 0..500 {
        let step = (cdf(x) - p) / density(x);
        x -= step;
        if step.abs() <= 1e-15 * (1.0 + x.abs()) {
            break;
        }
    }
    x
}

/// Replaces every draw by Φ⁻¹((r − 3/8) / (S + 1/4)) of its rank r among
/// all S draws (ties get their average rank).
fn rank_normalize(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = chains[0].len();
    let mut indexed: Vec<(f64, usize)> = chains
        .iter()
        .flatten()
        .copied()
        .enumerate()
        .map(|(i, x)| (x, i))
        .collect();
    indexed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let size = indexed.len() as f64;
    let mut out = vec![vec![0.0; n]; chains.len()];
    let mut i = 0;
    while i < indexed.len() {
        let mut j = i + 1;
        while j < indexed.len() && indexed[j].0 == indexed[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let average_rank = (i + 1 + j) as f64 / 2.0;
        let z = normal_quantile((average_rank - 0.375) / (size + 0.25));
        for &(_, index) in &indexed[i..j] {
            out[index / n][index % n] = z;
        }
        i = j;
    }
    out
}

/// Effective sample size of already split chains (equal lengths ≥ 4).
fn ess_of_split(chains: &[Vec<f64>]) -> f64 {
    let m = chains.len();
    let n = chains[0].len();
    let means: Vec<f64> = chains
        .iter()
        .map(|c| c.iter().sum::<f64>() / n as f64)
        .collect();
    // Mean over chains of the biased (divided by n) lag-t autocovariance;
    // computed per lag on demand since the sum is truncated early.
    let mean_autocov = |lag: usize| -> f64 {
        chains
            .iter()
            .zip(&means)
            .map(|(c, mu)| {
                (0..n - lag)
                    .map(|i| (c[i] - mu) * (c[i + lag] - mu))
                    .sum::<f64>()
                    / n as f64
            })
            .sum::<f64>()
            / m as f64
    };
    let nf = n as f64;
    let within = mean_autocov(0) * nf / (nf - 1.0);
    let mut var_plus = within * (nf - 1.0) / nf;
    if m > 1 {
        let grand = means.iter().sum::<f64>() / m as f64;
        var_plus += means.iter().map(|x| (x - grand).powi(2)).sum::<f64>() / (m as f64 - 1.0);
    }
    let rho = |lag: usize| 1.0 - (within - mean_autocov(lag)) / var_plus;
    let mut rho_hat = vec![0.0; n];
    let mut even = 1.0;
    let mut odd = rho(1);
    rho_hat[0] = even;
    rho_hat[1] = odd;
    // Geyer's initial positive sequence over pairs (t+1, t+2), made
    // monotone as it goes.
    let mut t = 1;
    while t + 4 < n && even + odd > 0.0 && !(even + odd).is_nan() {
        even = rho(t + 1);
        odd = rho(t + 2);
        if even + odd >= 0.0 {
            rho_hat[t + 1] = even;
            rho_hat[t + 2] = odd;
        }
        if rho_hat[t + 1] + rho_hat[t + 2] > rho_hat[t - 1] + rho_hat[t] {
            rho_hat[t + 1] = (rho_hat[t - 1] + rho_hat[t]) / 2.0;
            rho_hat[t + 2] = rho_hat[t + 1];
        }
        t += 2;
    }
    let max_t = t;
    if even > 0.0 {
        rho_hat[max_t + 1] = even;
    }
    let total = (m * n) as f64;
    let tau = -1.0 + 2.0 * rho_hat[..max_t].iter().sum::<f64>() + rho_hat[max_t + 1];
    // Caps the estimate at S·log10(S) for antithetic chains.
    total / tau.max(1.0 / total.log10())
}

/// Bulk and tail effective sample size of split, rank-normalised chains
/// (Stan's `split_rank_normalized_ess`).
///
/// chains: `[chains][draws]`. Returns `(bulk, tail)`, both NaN when a chain
/// is constant or non-finite or fewer than 4 draws remain per split chain.
pub fn split_rank_normalized_ess<C: AsRef<[f64]>>(chains: &[C]) -> Result<(f64, f64)> {
    draws_per_chain("split_rank_normalized_ess", chains)?;
    let split = split_chains(chains);
    if split[0].len() < 4 || !is_finite_and_varies(&split) {
        return Ok((f64::NAN, f64::NAN));
    }
    let bulk = ess_of_split(&rank_normalize(&split));
    let all: Vec<f64> = split.iter().flatten().copied().collect();
    let indicator = |keep: &dyn Fn(f64) -> bool| -> Vec<Vec<f64>> {
        split
            .iter()
            .map(|c| c.iter().map(|&x| if keep(x) { 1.0 } else { 0.0 }).collect())
            .collect()
    };
    let (q05, q95) = (quantile(&all, 0.05), quantile(&all, 0.95));
    let ess_indicator = |chains: Vec<Vec<f64>>| {
        if is_finite_and_varies(&chains) {
            ess_of_split(&chains)
        } else {
            f64::NAN
        }
    };
    let tail_05 = ess_indicator(indicator(&|x| x <= q05));
    let tail_95 = ess_indicator(indicator(&|x| x >= q95));
    let tail = match (tail_05.is_nan(), tail_95.is_nan()) {
        (true, _) => tail_95,
        (_, true) => tail_05,
        _ => tail_05.min(tail_95),
    };
    Ok((bulk, tail))
}

/// Effective sample size of the mean of split (not rank-normalised) chains,
/// the one that gives the Monte-Carlo standard error sd/√ESS of a posterior
/// mean. chains: `[chains][draws]`; NaN as for [`split_rank_normalized_ess`].
pub fn ess_mean<C: AsRef<[f64]>>(chains: &[C]) -> Result<f64> {
    draws_per_chain("ess_mean", chains)?;
    let split = split_chains(chains);
    if split[0].len() < 4 || !is_finite_and_varies(&split) {
        return Ok(f64::NAN);
    }
    Ok(ess_of_split(&split))
}

/// Potential scale reduction of (already split) chains.
fn rhat_of_split(chains: &[Vec<f64>]) -> f64 {
    let m = chains.len() as f64;
    let n = chains[0].len() as f64;
    let means: Vec<f64> = chains.iter().map(|c| c.iter().sum::<f64>() / n).collect();
    let grand = means.iter().sum::<f64>() / m;
    let between = n / (m - 1.0) * means.iter().map(|x| (x - grand).powi(2)).sum::<f64>();
    let within = chains
        .iter()
        .zip(&means)
        .map(|(c, mu)| c.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (n - 1.0))
        .sum::<f64>()
        / m;
    ((between / within + n - 1.0) / n).sqrt()
}

/// Split rank-normalised R̂ for the bulk and for the tails (R̂ of the folded
/// draws |x − median|), as Stan's `split_rank_normalized_rhat`.
///
/// chains: `[chains][draws]`. Returns `(bulk, tail)`; NaN when a chain is
/// constant or non-finite or fewer than 2 draws remain per split chain.
pub fn split_rank_normalized_rhat<C: AsRef<[f64]>>(chains: &[C]) -> Result<(f64, f64)> {
    draws_per_chain("split_rank_normalized_rhat", chains)?;
    let split = split_chains(chains);
    if split[0].len() < 2 || !is_finite_and_varies(&split) {
        return Ok((f64::NAN, f64::NAN));
    }
    let bulk = rhat_of_split(&rank_normalize(&split));
    let all: Vec<f64> = split.iter().flatten().copied().collect();
    let median = quantile(&all, 0.5);
    let folded: Vec<Vec<f64>> = split
        .iter()
        .map(|c| c.iter().map(|x| (x - median).abs()).collect())
        .collect();
    let tail = rhat_of_split(&rank_normalize(&folded));
    Ok((bulk, tail))
}

/// The one R̂ to report: the larger of the bulk and tail values.
/// chains: `[chains][draws]`.
pub fn rhat<C: AsRef<[f64]>>(chains: &[C]) -> Result<f64> {
    let (bulk, tail) = split_rank_normalized_rhat(chains)?;
    Ok(bulk.max(tail))
}

/// Posterior summary of one scalar quantity.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub sd: f64,
    pub q05: f64,
    pub q95: f64,
    pub rhat: f64,
    pub ess_bulk: f64,
    pub ess_tail: f64,
    /// Monte-Carlo standard error of the mean, sd/√ESS_mean.
    pub mcse_mean: f64,
}

/// Mean, sd, 5%/95% quantiles, R̂, bulk/tail ESS and MCSE of the mean.
/// chains: `[chains][draws]`.
pub fn summarize<C: AsRef<[f64]>>(chains: &[C]) -> Result<Summary> {
    let (ess_bulk, ess_tail) = split_rank_normalized_ess(chains)?;
    let all: Vec<f64> = chains
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect();
    let n = all.len() as f64;
    let mean = all.iter().sum::<f64>() / n;
    let sd = (all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    Ok(Summary {
        mean,
        sd,
        q05: quantile(&all, 0.05),
        q95: quantile(&all, 0.95),
        rhat: rhat(chains)?,
        ess_bulk,
        ess_tail,
        mcse_mean: sd / ess_mean(chains)?.sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_inverts_known_values() {
        // Published values of Φ⁻¹; Newton converges to ~1e-15 relative.
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
        assert!((normal_quantile(0.5)).abs() < 1e-15);
        assert!((normal_quantile(1e-6) + 4.753_424_308_822_899).abs() < 1e-10);
    }

    #[test]
    fn quantile_is_type_7() {
        // R: quantile(c(1, 2, 3, 4), 0.05) = 1.15 (type 7).
        assert!((quantile(&[4.0, 1.0, 3.0, 2.0], 0.05) - 1.15).abs() < 1e-12);
    }

    #[test]
    fn ess_of_independent_draws_is_about_the_number_of_draws() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let chains: Vec<Vec<f64>> = (0..4)
            .map(|_| {
                (0..1000)
                    .map(|_| rng.sample(rand_distr::StandardNormal))
                    .collect()
            })
            .collect();
        let (bulk, tail) = split_rank_normalized_ess(&chains).unwrap();
        // For i.i.d. draws ESS/S has sampling sd of roughly 5% at S = 4000;
        // 25% bounds are a fact-level check, not a fit.
        assert!((bulk / 4000.0 - 1.0).abs() < 0.25, "bulk {bulk}");
        assert!((tail / 4000.0 - 1.0).abs() < 0.25, "tail {tail}");
        let r = rhat(&chains).unwrap();
        assert!(r < 1.01, "rhat {r}");
    }

    #[test]
    fn unequal_chains_are_an_error() {
        let chains = vec![vec![1.0, 2.0, 3.0], vec![1.0, 2.0]];
        assert!(matches!(
            split_rank_normalized_ess(&chains),
            Err(Error::Length {
                expected: 3,
                got: 2,
                ..
            })
        ));
    }
}
