//! Stan's windowed warm-up, pooled across chains: one dual-averaging step
//! size driven by the chains' mean acceptance statistic, and one metric
//! estimated from every chain's draws in doubling windows.

use std::ops::Range;

use rand::Rng;

use crate::error::{parameter, Result};
use crate::kernel::{Info, Kernel, State};
use crate::metric::Metric;
use crate::potential::Potential;
use crate::trajectory::{EnergyCheck, Leapfrog, Point};

/// Which inverse mass matrix warm-up estimates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Diagonal,
    Dense,
}

/// Warm-up settings; the defaults are Stan's.
#[derive(Clone, Debug)]
pub struct WarmupConfig {
    pub num_warmup: usize,
    /// Target of the mean acceptance statistic, in (0, 1).
    pub target_acceptance: f64,
    pub metric: MetricKind,
    /// Step size the heuristic search starts from.
    pub initial_step_size: f64,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        WarmupConfig {
            num_warmup: 1000,
            target_acceptance: 0.8,
            metric: MetricKind::Diagonal,
            initial_step_size: 1.0,
        }
    }
}

impl WarmupConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.target_acceptance > 0.0 && self.target_acceptance < 1.0) {
            return Err(parameter(
                "warmup",
                "target_acceptance",
                "must lie in (0, 1)",
                self.target_acceptance,
            ));
        }
        if !(self.initial_step_size > 0.0 && self.initial_step_size.is_finite()) {
            return Err(parameter(
                "warmup",
                "initial_step_size",
                "must be finite and positive",
                self.initial_step_size,
            ));
        }
        Ok(())
    }
}

/// Nesterov dual averaging of log ε (Hoffman & Gelman 2014) with Stan's
/// constants γ = 0.05, t₀ = 10, κ = 0.75 and μ = log(10 ε₀).
#[derive(Clone, Debug)]
pub struct DualAveraging {
    target: f64,
    mu: f64,
    count: f64,
    h_bar: f64,
    log_step: f64,
    log_step_avg: f64,
}

impl DualAveraging {
    const GAMMA: f64 = 0.05;
    const T0: f64 = 10.0;
    const KAPPA: f64 = 0.75;

    pub fn new(initial_step_size: f64, target: f64) -> Self {
        let mut da = DualAveraging {
            target,
            mu: 0.0,
            count: 0.0,
            h_bar: 0.0,
            log_step: 0.0,
            log_step_avg: 0.0,
        };
        da.restart(initial_step_size);
        da
    }

    pub fn restart(&mut self, step_size: f64) {
        self.mu = (10.0 * step_size).ln();
        self.count = 0.0;
        self.h_bar = 0.0;
        self.log_step = step_size.ln();
        self.log_step_avg = 0.0;
    }

    /// Feeds one acceptance statistic; returns the next step size.
    pub fn update(&mut self, acceptance: f64) -> f64 {
        self.count += 1.0;
        let eta = 1.0 / (self.count + Self::T0);
        self.h_bar = (1.0 - eta) * self.h_bar + eta * (self.target - acceptance);
        self.log_step = self.mu - self.h_bar * self.count.sqrt() / Self::GAMMA;
        let weight = self.count.powf(-Self::KAPPA);
        self.log_step_avg = (1.0 - weight) * self.log_step_avg + weight * self.log_step;
        self.log_step.exp()
    }

    /// The averaged iterate, used once adaptation ends.
    pub fn final_step_size(&self) -> f64 {
        self.log_step_avg.exp()
    }
}

/// Stan's metric windows for `num_warmup` iterations: a 75-iteration initial
/// buffer, windows of 25, 50, 100, … with the last one stretched to the
/// 50-iteration terminal buffer (15% / 10% buffers when warm-up is short,
/// none below 20 iterations).
pub fn metric_windows(num_warmup: usize) -> Vec<Range<usize>> {
    if num_warmup < 20 {
        return Vec::new();
    }
    let (mut init, mut term, mut size) = (75, 50, 25);
    if init + term + size > num_warmup {
        init = num_warmup * 15 / 100;
        term = num_warmup / 10;
        size = num_warmup - init - term;
    }
    let end = num_warmup - term;
    let mut windows = Vec::new();
    let mut start = init;
    while start < end {
        let mut stop = start + size;
        if stop + 2 * size > end {
            stop = end;
        }
        windows.push(start..stop);
        start = stop;
        size *= 2;
    }
    windows
}

/// Running mean and (co)variance of the pooled chain positions.
struct Welford {
    dim: usize,
    dense: bool,
    n: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    delta: Vec<f64>,
}

impl Welford {
    fn new(dim: usize, dense: bool) -> Self {
        Welford {
            dim,
            dense,
            n: 0.0,
            mean: vec![0.0; dim],
            m2: vec![0.0; if dense { dim * dim } else { dim }],
            delta: vec![0.0; dim],
        }
    }

    fn add(&mut self, x: &[f64]) {
        self.n += 1.0;
        for ((delta, mean), x) in self.delta.iter_mut().zip(&mut self.mean).zip(x) {
            *delta = x - *mean;
            *mean += *delta / self.n;
        }
        if self.dense {
            for ((row, x), mean) in self.m2.chunks_exact_mut(self.dim).zip(x).zip(&self.mean) {
                let after = x - mean;
                for (m, delta) in row.iter_mut().zip(&self.delta) {
                    *m += after * delta;
                }
            }
        } else {
            for (((m, delta), x), mean) in
                self.m2.iter_mut().zip(&self.delta).zip(x).zip(&self.mean)
            {
                *m += delta * (x - mean);
            }
        }
    }

    /// Stan's regularised estimate: shrink the sample (co)variance towards
    /// 1e-3·I with weight 5/(n+5).
    fn metric(&self) -> Result<Metric> {
        let n = self.n;
        let (keep, shrink) = (n / (n + 5.0), 1e-3 * 5.0 / (n + 5.0));
        let mut m = self
            .m2
            .iter()
            .map(|v| keep * v / (n - 1.0))
            .collect::<Vec<_>>();
        if self.dense {
            for i in 0..self.dim {
                m[i * self.dim + i] += shrink;
            }
            Metric::dense(m, self.dim)
        } else {
            m.iter_mut().for_each(|v| *v += shrink);
            Metric::diagonal(m)
        }
    }
}

/// Sets the kernel's step size by the pooled heuristic search and returns it.
fn retune_step_size<K: Kernel, R: Rng + ?Sized>(
    kernel: &mut K,
    state: &State,
    start: f64,
    rng: &mut R,
) -> Result<f64> {
    let metric = kernel.metric().clone();
    let step = find_reasonable_step_size(kernel.potential_mut(), &metric, state, start, rng)?;
    kernel.set_step_size(step)?;
    Ok(step)
}

/// Pooled step-size search (Stan's heuristic, applied to the mean over
/// chains): double or halve ε until the one-step acceptance crosses 0.8.
fn find_reasonable_step_size<R: Rng + ?Sized>(
    potential: &mut dyn Potential,
    metric: &Metric,
    state: &State,
    initial: f64,
    rng: &mut R,
) -> Result<f64> {
    let (chains, dim) = (state.chains, state.dim);
    let mut points: Vec<Point> = (0..chains).map(|_| Point::zeros(dim)).collect();
    let mut leapfrog = Leapfrog::default();
    let target = 0.8f64.ln();
    let mut log_accept = |eps: f64, rng: &mut R| -> Result<f64> {
        for (c, point) in points.iter_mut().enumerate() {
            point.load_with_momentum(state, c, metric, rng);
        }
        let h0: Vec<f64> = points.iter().map(|p| p.h).collect();
        let mut steps: Vec<_> = points.iter_mut().map(|p| (p, eps)).collect();
        leapfrog.step(potential, metric, &mut steps)?;
        // No divergence threshold: only a NaN energy counts as rejection.
        let mean_accept = points
            .iter()
            .zip(&h0)
            .map(|(point, &h0)| EnergyCheck::new(h0, point.h, f64::INFINITY).acceptance)
            .sum::<f64>()
            / chains as f64;
        Ok(mean_accept.ln())
    };
    let mut eps = initial;
    let increase = log_accept(eps, rng)? > target;
    // 2^±60 brackets every step size a sane problem needs; stopping there
    // keeps a flat or broken target from looping forever.
    for _ in 0..60 {
        let next = if increase { eps * 2.0 } else { eps * 0.5 };
        let a = log_accept(next, rng)?;
        if increase != (a > target) {
            return Ok(if increase { eps } else { next });
        }
        eps = next;
    }
    Ok(eps)
}

/// Runs `config.num_warmup` adaptive transitions from `state`, leaving the
/// kernel with the adapted step size and metric. `on_iteration(i, info)`
/// sees every warm-up transition (for progress bars).
pub fn warmup<K: Kernel, R: Rng + ?Sized>(
    kernel: &mut K,
    rng: &mut R,
    mut state: State,
    config: &WarmupConfig,
    mut on_iteration: impl FnMut(usize, &Info),
) -> Result<State> {
    config.validate()?;
    if config.num_warmup == 0 {
        return Ok(state);
    }
    let windows = metric_windows(config.num_warmup);
    let mut welford = Welford::new(kernel.dim(), config.metric == MetricKind::Dense);
    let step = retune_step_size(kernel, &state, config.initial_step_size, rng)?;
    let mut dual = DualAveraging::new(step, config.target_acceptance);
    for iteration in 0..config.num_warmup {
        let (next, info) = kernel.step(rng, state)?;
        state = next;
        kernel.set_step_size(dual.update(info.mean_acceptance()))?;
        if let Some(window) = windows.iter().find(|w| w.contains(&iteration)) {
            for row in state.position.chunks_exact(state.dim) {
                welford.add(row);
            }
            if iteration + 1 == window.end {
                kernel.set_metric(welford.metric()?)?;
                welford = Welford::new(kernel.dim(), config.metric == MetricKind::Dense);
                let step = retune_step_size(kernel, &state, kernel.step_size(), rng)?;
                dual.restart(step);
            }
        }
        on_iteration(iteration, &info);
    }
    kernel.set_step_size(dual.final_step_size())?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_match_stans_default_schedule() {
        // Stan's documented schedule for 1000 warm-up iterations.
        assert_eq!(
            metric_windows(1000),
            vec![75..100, 100..150, 150..250, 250..450, 450..950]
        );
        assert!(metric_windows(10).is_empty());
        // Short warm-up: 15% / 10% buffers, one window in between.
        assert_eq!(metric_windows(100), vec![15..90]);
    }

    #[test]
    fn welford_diagonal_matches_two_pass_variance_with_regularisation() {
        let xs = [[1.0, 2.0], [2.0, 0.0], [4.0, 1.0], [7.0, 5.0]];
        let mut w = Welford::new(2, false);
        xs.iter().for_each(|x| w.add(x));
        let Metric::Diagonal(d) = w.metric().unwrap() else {
            panic!("diagonal expected")
        };
        // Two-pass sample variances: 7.0 and 14/3.
        let n = 4.0;
        for (got, var) in d.iter().zip([7.0, 14.0 / 3.0]) {
            let expected = n / (n + 5.0) * var + 1e-3 * 5.0 / (n + 5.0);
            assert!((got - expected).abs() < 1e-12);
        }
    }
}
