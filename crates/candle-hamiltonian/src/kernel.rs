//! The sampler interface: the batched chain [`State`], the per-transition
//! [`Info`], and the [`Kernel`] trait that adaptation and the runner drive.

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use crate::error::{parameter, Error, Result};
use crate::metric::Metric;
use crate::potential::Potential;

/// Positions of `chains` chains in `dim` dimensions, with their potential
/// energies and gradients, all on the host in f64.
#[derive(Clone, Debug)]
pub struct State {
    pub(crate) chains: usize,
    pub(crate) dim: usize,
    pub(crate) position: Vec<f64>,
    pub(crate) potential: Vec<f64>,
    pub(crate) gradient: Vec<f64>,
}

impl State {
    pub fn chains(&self) -> usize {
        self.chains
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Positions, `[chains, dim]` row-major.
    pub fn position(&self) -> &[f64] {
        &self.position
    }

    /// Potential energies U(q), `[chains]`.
    pub fn potential_energy(&self) -> &[f64] {
        &self.potential
    }

    /// Positions as a `[chains, dim]` tensor of `dtype` on `device`.
    pub fn position_tensor(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.position, (self.chains, self.dim), device)?.to_dtype(dtype)?)
    }
}

/// Diagnostics of one transition, one entry per chain.
#[derive(Clone, Debug, Default)]
pub struct Info {
    /// HMC: the Metropolis acceptance probability. NUTS: the mean of
    /// min(1, exp(H₀ − H)) over the trajectory (Stan's `accept_stat__`).
    pub acceptance_probability: Vec<f64>,
    /// NUTS: H(selected state) − H(initial state); HMC: H(proposal) − H(initial
    /// state), whether or not the proposal was accepted.
    pub energy_error: Vec<f64>,
    /// The energy error of some integration step exceeded the threshold.
    pub diverged: Vec<bool>,
    /// NUTS: number of trajectory doublings; HMC: 0.
    pub tree_depth: Vec<usize>,
    /// Leapfrog steps, i.e. gradient evaluations, spent by each chain.
    pub num_gradient_evaluations: Vec<usize>,
}

impl Info {
    pub(crate) fn with_chains(chains: usize) -> Self {
        Info {
            acceptance_probability: vec![0.0; chains],
            energy_error: vec![0.0; chains],
            diverged: vec![false; chains],
            tree_depth: vec![0; chains],
            num_gradient_evaluations: vec![0; chains],
        }
    }

    /// The acceptance statistic averaged over chains: the single number the
    /// pooled step-size adaptation tracks.
    pub fn mean_acceptance(&self) -> f64 {
        let n = self.acceptance_probability.len().max(1) as f64;
        self.acceptance_probability.iter().sum::<f64>() / n
    }
}

/// A Markov kernel `step(rng, State) -> (State, Info)` with a step size and
/// a metric that warm-up can tune.
pub trait Kernel {
    fn dim(&self) -> usize;
    fn step_size(&self) -> f64;
    fn set_step_size(&mut self, step_size: f64) -> Result<()>;
    fn metric(&self) -> &Metric;
    fn set_metric(&mut self, metric: Metric) -> Result<()>;
    fn potential_mut(&mut self) -> &mut dyn Potential;

    /// positions: `[chains, dim]` row-major.
    fn init_from_slice(&mut self, positions: &[f64]) -> Result<State> {
        init_state(self.potential_mut(), positions)
    }

    /// position: `[chains, dim]` (or `[dim]` for one chain), f32 or f64, any device.
    fn init(&mut self, position: &Tensor) -> Result<State> {
        let dim = self.dim();
        let ok = match position.dims() {
            [d] => *d == dim,
            [_, d] => *d == dim,
            _ => false,
        };
        if !ok {
            return Err(Error::Shape {
                op: "init",
                what: "position",
                expected: format!("[chains, {dim}]"),
                got: position.shape().clone(),
            });
        }
        let host: Vec<f64> = position.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        self.init_from_slice(&host)
    }

    fn step<R: Rng + ?Sized>(&mut self, rng: &mut R, state: State) -> Result<(State, Info)>;
}

pub(crate) fn init_state(potential: &mut dyn Potential, positions: &[f64]) -> Result<State> {
    let dim = potential.dim();
    if dim == 0 || positions.is_empty() || positions.len() % dim != 0 {
        return Err(parameter(
            "init",
            "positions",
            "must be a non-empty [chains, dim] array (length a multiple of dim)",
            format!("length {} with dim {dim}", positions.len()),
        ));
    }
    let chains = positions.len() / dim;
    let mut potentials = vec![0.0; chains];
    let mut gradient = vec![0.0; chains * dim];
    potential.evaluate(positions, &mut potentials, &mut gradient)?;
    let bad = (0..chains).find(|&c| {
        !potentials[c].is_finite()
            || gradient[c * dim..(c + 1) * dim]
                .iter()
                .any(|g| !g.is_finite())
    });
    if let Some(chain) = bad {
        return Err(parameter(
            "init",
            "position",
            "must have a finite potential and gradient for every chain",
            format!("non-finite value at chain {chain}"),
        ));
    }
    Ok(State {
        chains,
        dim,
        position: positions.to_vec(),
        potential: potentials,
        gradient,
    })
}

pub(crate) fn check_state(kernel_dim: usize, state: &State) -> Result<()> {
    if state.dim != kernel_dim {
        return Err(Error::Length {
            op: "step",
            what: "state dimension",
            expected: kernel_dim,
            got: state.dim,
        });
    }
    Ok(())
}
