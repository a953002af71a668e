//! What the samplers share: the batched chain [`State`], the per-transition
//! [`Info`], the [`Kernel`] interface that adaptation drives, and the
//! lockstep leapfrog that advances every active chain with one batched
//! gradient call.

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

pub(crate) fn check_step_size(op: &'static str, step_size: f64) -> Result<()> {
    if step_size > 0.0 && step_size.is_finite() {
        Ok(())
    } else {
        Err(parameter(
            op,
            "step_size",
            "must be finite and positive",
            step_size,
        ))
    }
}

pub(crate) fn check_metric(op: &'static str, dim: usize, metric: &Metric) -> Result<()> {
    if metric.dim() == dim {
        Ok(())
    } else {
        Err(Error::Length {
            op,
            what: "metric dimension",
            expected: dim,
            got: metric.dim(),
        })
    }
}

/// One phase-space point with everything a leapfrog step or a U-turn check
/// needs: position, momentum, ∇U, velocity M⁻¹p, U and H.
#[derive(Clone, Debug)]
pub(crate) struct Point {
    pub q: Vec<f64>,
    pub p: Vec<f64>,
    pub grad: Vec<f64>,
    pub p_sharp: Vec<f64>,
    pub u: f64,
    pub h: f64,
}

impl Point {
    pub fn zeros(dim: usize) -> Self {
        Point {
            q: vec![0.0; dim],
            p: vec![0.0; dim],
            grad: vec![0.0; dim],
            p_sharp: vec![0.0; dim],
            u: 0.0,
            h: 0.0,
        }
    }

    pub fn copy_from(&mut self, other: &Point) {
        self.q.copy_from_slice(&other.q);
        self.p.copy_from_slice(&other.p);
        self.grad.copy_from_slice(&other.grad);
        self.p_sharp.copy_from_slice(&other.p_sharp);
        self.u = other.u;
        self.h = other.h;
    }

    /// Copies what a sample keeps: position, gradient, U and H.
    pub fn copy_sample_from(&mut self, other: &Point) {
        self.q.copy_from_slice(&other.q);
        self.grad.copy_from_slice(&other.grad);
        self.u = other.u;
        self.h = other.h;
    }

    /// Loads chain `chain` of `state` and draws a fresh momentum.
    pub fn load_with_momentum<R: Rng + ?Sized>(
        &mut self,
        state: &State,
        chain: usize,
        metric: &Metric,
        rng: &mut R,
    ) {
        let d = state.dim;
        self.q
            .copy_from_slice(&state.position[chain * d..(chain + 1) * d]);
        self.grad
            .copy_from_slice(&state.gradient[chain * d..(chain + 1) * d]);
        self.u = state.potential[chain];
        metric.sample_momentum(rng, &mut self.p);
        self.h = self.u + metric.velocity(&self.p, &mut self.p_sharp);
    }

    /// First half of a leapfrog step of signed size `eps`: half kick, then
    /// drift; the new position goes to `out` for the batched gradient call.
    pub fn kick_drift(&mut self, metric: &Metric, eps: f64, out: &mut [f64]) {
        let half = 0.5 * eps;
        for (p, g) in self.p.iter_mut().zip(&self.grad) {
            *p -= half * g;
        }
        metric.velocity(&self.p, &mut self.p_sharp);
        for ((q, v), o) in self.q.iter_mut().zip(&self.p_sharp).zip(out.iter_mut()) {
            *q += eps * v;
            *o = *q;
        }
    }

    /// Second half of the leapfrog step: store U and ∇U at the new position,
    /// final half kick, then H at the new point.
    pub fn finish_kick(&mut self, metric: &Metric, eps: f64, u: f64, grad: &[f64]) {
        self.u = u;
        self.grad.copy_from_slice(grad);
        let half = 0.5 * eps;
        for (p, g) in self.p.iter_mut().zip(&self.grad) {
            *p -= half * g;
        }
        self.h = self.u + metric.velocity(&self.p, &mut self.p_sharp);
    }
}

/// Scratch buffers for one batched gradient call.
#[derive(Default)]
pub(crate) struct Batch {
    pub positions: Vec<f64>,
    pub potentials: Vec<f64>,
    pub gradients: Vec<f64>,
}

impl Batch {
    pub fn reserve(&mut self, chains: usize, dim: usize) {
        self.positions.resize(chains * dim, 0.0);
        self.potentials.resize(chains, 0.0);
        self.gradients.resize(chains * dim, 0.0);
    }

    pub fn evaluate(&mut self, potential: &mut dyn Potential, n: usize, dim: usize) -> Result<()> {
        potential.evaluate(
            &self.positions[..n * dim],
            &mut self.potentials[..n],
            &mut self.gradients[..n * dim],
        )
    }
}

pub(crate) fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// Pooled step-size search (Stan's heuristic, applied to the mean over
/// chains): double or halve ε until the one-step acceptance crosses 0.8.
pub(crate) fn find_reasonable_step_size<R: Rng + ?Sized>(
    potential: &mut dyn Potential,
    metric: &Metric,
    state: &State,
    initial: f64,
    rng: &mut R,
) -> Result<f64> {
    let (chains, dim) = (state.chains, state.dim);
    let mut points: Vec<Point> = (0..chains).map(|_| Point::zeros(dim)).collect();
    let mut batch = Batch::default();
    batch.reserve(chains, dim);
    let target = 0.8f64.ln();
    let mut log_accept = |eps: f64, rng: &mut R| -> Result<f64> {
        for (c, point) in points.iter_mut().enumerate() {
            point.load_with_momentum(state, c, metric, rng);
        }
        let h0: Vec<f64> = points.iter().map(|p| p.h).collect();
        for (c, point) in points.iter_mut().enumerate() {
            point.kick_drift(metric, eps, &mut batch.positions[c * dim..(c + 1) * dim]);
        }
        batch.evaluate(potential, chains, dim)?;
        let mut mean_accept = 0.0;
        for (c, point) in points.iter_mut().enumerate() {
            let grad = &batch.gradients[c * dim..(c + 1) * dim];
            point.finish_kick(metric, eps, batch.potentials[c], grad);
            let a = (h0[c] - point.h).exp().min(1.0);
            mean_accept += if a.is_nan() { 0.0 } else { a };
        }
        Ok((mean_accept / chains as f64).ln())
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
