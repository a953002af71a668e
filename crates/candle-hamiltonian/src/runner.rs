//! Warm-up followed by sampling for a batch of chains, collecting draws and
//! per-transition diagnostics into a [`Trace`].

use rand::Rng;

use crate::adaptation::MetricKind;
use crate::adaptation::{warmup, WarmupConfig};
use crate::diagnostics::{summarize, Summary};
use crate::error::{parameter, Result};
use crate::kernel::{Info, Kernel, State};
use crate::metric::Metric;
use crate::nuts::Nuts;
use crate::potential::Potential;

/// Which part of a run a progress callback is reporting on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Sampling,
}

/// Draws and diagnostics of a run.
#[derive(Clone, Debug)]
pub struct Trace {
    pub chains: usize,
    pub dim: usize,
    pub num_draws: usize,
    /// `[num_draws, chains, dim]` row-major.
    pub draws: Vec<f64>,
    /// Per transition, `[num_draws, chains]`.
    pub diverged: Vec<bool>,
    pub acceptance: Vec<f64>,
    pub tree_depth: Vec<usize>,
    pub gradient_evaluations: Vec<usize>,
    /// Gradient evaluations spent in warm-up, all chains together.
    pub warmup_gradient_evaluations: usize,
    pub step_size: f64,
    pub metric: Metric,
}

impl Trace {
    /// The draws of coordinate `param`, one vector per chain.
    pub fn chains_of(&self, param: usize) -> Vec<Vec<f64>> {
        (0..self.chains)
            .map(|c| {
                (0..self.num_draws)
                    .map(|d| self.draws[(d * self.chains + c) * self.dim + param])
                    .collect()
            })
            .collect()
    }

    pub fn divergences(&self) -> usize {
        self.diverged.iter().filter(|d| **d).count()
    }

    /// Divergent transitions of each chain.
    pub fn divergences_per_chain(&self) -> Vec<usize> {
        let mut counts = vec![0; self.chains];
        for (i, d) in self.diverged.iter().enumerate() {
            counts[i % self.chains] += *d as usize;
        }
        counts
    }

    /// Gradient evaluations of the sampling phase, all chains together.
    pub fn sampling_gradient_evaluations(&self) -> usize {
        self.gradient_evaluations.iter().sum()
    }

    /// One [`Summary`] per coordinate.
    pub fn summary(&self) -> Result<Vec<Summary>> {
        (0..self.dim)
            .map(|j| summarize(&self.chains_of(j)))
            .collect()
    }

    fn record(&mut self, state: &State, info: &Info) {
        self.draws.extend_from_slice(&state.position);
        self.diverged.extend_from_slice(&info.diverged);
        self.acceptance
            .extend_from_slice(&info.acceptance_probability);
        self.tree_depth.extend_from_slice(&info.tree_depth);
        self.gradient_evaluations
            .extend_from_slice(&info.num_gradient_evaluations);
        self.num_draws += 1;
    }
}

/// Adapts `kernel` with Stan's windowed warm-up (pooled over chains), then
/// records `num_draws` transitions of every chain. `progress(phase, i)` is
/// called after each transition.
pub fn run<K: Kernel, R: Rng + ?Sized>(
    kernel: &mut K,
    rng: &mut R,
    initial: State,
    warmup_config: &WarmupConfig,
    num_draws: usize,
    mut progress: impl FnMut(Phase, usize),
) -> Result<Trace> {
    let mut warmup_gradients = 0;
    let mut state = warmup(kernel, rng, initial, warmup_config, |i, info| {
        warmup_gradients += info.num_gradient_evaluations.iter().sum::<usize>();
        progress(Phase::Warmup, i);
    })?;
    let mut trace = Trace {
        chains: state.chains,
        dim: state.dim,
        num_draws: 0,
        draws: Vec::with_capacity(num_draws * state.chains * state.dim),
        diverged: Vec::new(),
        acceptance: Vec::new(),
        tree_depth: Vec::new(),
        gradient_evaluations: Vec::new(),
        warmup_gradient_evaluations: warmup_gradients,
        step_size: kernel.step_size(),
        metric: kernel.metric().clone(),
    };
    for i in 0..num_draws {
        let (next, info) = kernel.step(rng, state)?;
        state = next;
        trace.record(&state, &info);
        progress(Phase::Sampling, i);
    }
    Ok(trace)
}

/// Draws `chains` starting points uniformly in [−radius, radius]^dim
/// (Stan initialises in [−2, 2]); returns `[chains, dim]` row-major.
pub fn uniform_initial_positions<R: Rng + ?Sized>(
    rng: &mut R,
    chains: usize,
    dim: usize,
    radius: f64,
) -> Vec<f64> {
    (0..chains * dim)
        .map(|_| rng.random_range(-radius..=radius))
        .collect()
}

/// Settings of [`sample_nuts`]; the defaults are Stan's.
#[derive(Clone, Debug)]
pub struct SamplingConfig {
    pub chains: usize,
    pub num_warmup: usize,
    pub num_draws: usize,
    pub seed: u64,
    pub max_tree_depth: usize,
    pub target_acceptance: f64,
    pub metric: MetricKind,
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
            metric: MetricKind::Diagonal,
        }
    }
}

/// Samples the density of `potential` with NUTS after Stan's warm-up, the
/// way Stan does by default: chains start uniformly in [−2, 2]^dim and
/// everything is reproducible from the seed. `progress` as in [`run`].
pub fn sample_nuts<P: Potential>(
    potential: P,
    config: &SamplingConfig,
    progress: impl FnMut(Phase, usize),
) -> Result<Trace> {
    use rand::SeedableRng;
    if config.chains == 0 {
        return Err(parameter("sample_nuts", "chains", "must be at least 1", 0));
    }
    let dim = potential.dim();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let init = uniform_initial_positions(&mut rng, config.chains, dim, 2.0);
    let mut nuts = Nuts::new(potential, 1.0)?.with_max_tree_depth(config.max_tree_depth)?;
    let state = nuts.init_from_slice(&init)?;
    let warmup = WarmupConfig {
        num_warmup: config.num_warmup,
        target_acceptance: config.target_acceptance,
        metric: config.metric,
        initial_step_size: 1.0,
    };
    run(
        &mut nuts,
        &mut rng,
        state,
        &warmup,
        config.num_draws,
        progress,
    )
}

/// A plain-text table with one row per coordinate: mean, sd, 5% and 95%
/// quantiles, R̂, bulk and tail ESS, followed by the divergence count.
pub fn summary_table(names: &[String], trace: &Trace) -> Result<String> {
    use std::fmt::Write;
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max(9);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$} {:>10} {:>10} {:>10} {:>10} {:>7} {:>9} {:>9}",
        "parameter", "mean", "sd", "5%", "95%", "R-hat", "ess_bulk", "ess_tail"
    );
    for (name, s) in names.iter().zip(trace.summary()?) {
        let _ = writeln!(
            out,
            "{name:<width$} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>7.3} {:>9.0} {:>9.0}",
            s.mean, s.sd, s.q05, s.q95, s.rhat, s.ess_bulk, s.ess_tail
        );
    }
    let per_chain = trace.divergences_per_chain();
    let _ = writeln!(
        out,
        "divergences: {} of {} transitions (per chain: {:?}); step size {:.4}; {} chains x {} draws",
        trace.divergences(),
        trace.diverged.len(),
        per_chain,
        trace.step_size,
        trace.chains,
        trace.num_draws
    );
    Ok(out)
}
