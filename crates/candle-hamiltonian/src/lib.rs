//! Hamiltonian dynamics on candle tensors (HIP-19 §Hamiltonian Dynamics
//! Operations): symplectic integrators, Hamiltonian energy with a mass
//! matrix, batched HMC and multinomial NUTS with Stan's windowed warm-up,
//! and Stan's convergence diagnostics.
//!
//! Integrators work on `[batch, dim]` (or `[dim]`) tensors of f32/f64 on any
//! device. The samplers follow BlackJAX's shape, `init(position) -> State`
//! and `step(rng, State) -> (State, Info)`, and run many chains as one batch:
//! tree building happens on the host in f64 while every leapfrog step asks
//! the [`Potential`] for the gradients of all active chains in one call,
//! either a candle closure differentiated by autograd ([`TensorPotential`])
//! or a plain-slice closure ([`FnPotential`], the CPU fast path).
//!
//! ```
//! use candle_hamiltonian::{run, FnPotential, Kernel, Nuts, WarmupConfig};
//! use rand::SeedableRng;
//! // Posterior of a 2-d Gaussian with sds 1 and 3.
//! let target = FnPotential::new(2, |q: &[f64], g: &mut [f64]| {
//!     g[0] = q[0];
//!     g[1] = q[1] / 9.0;
//!     0.5 * (q[0] * q[0] + q[1] * q[1] / 9.0)
//! });
//! let mut nuts = Nuts::new(target, 1.0)?;
//! let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let init = nuts.init_from_slice(&[0.1, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8])?; // 4 chains
//! let warmup = WarmupConfig { num_warmup: 300, ..Default::default() };
//! let trace = run(&mut nuts, &mut rng, init, &warmup, 300, |_, _| {})?;
//! let summary = trace.summary()?;
//! assert!(summary[1].sd > 2.0 && summary[1].sd < 4.0);
//! assert!(summary.iter().all(|s| s.rhat < 1.05));
//! # Ok::<(), candle_hamiltonian::Error>(())
//! ```

pub mod adaptation;
pub mod diagnostics;
mod energy;
mod error;
mod fastmath;
mod hmc;
pub mod integrators;
mod kernel;
mod linalg;
mod metric;
pub mod models;
mod nuts;
mod potential;
mod runner;
mod trajectory;

pub use adaptation::{warmup, DualAveraging, MetricKind, WarmupConfig};
pub use energy::{hamiltonian_energy, kinetic_energy};
pub use error::{Error, Result};
pub use hmc::Hmc;
pub use integrators::{
    leapfrog_step, potential_gradient, symplectic_euler_step, two_stage_step,
    yoshida4_triple_jump_step,
};
pub use kernel::{Info, Kernel, State};
pub use metric::{dot, Metric};
pub use nuts::{Nuts, UTurnCriterion};
pub use potential::{FnPotential, Potential, TensorPotential};
pub use runner::{
    run, sample_nuts, summary_table, uniform_initial_positions, Phase, SamplingConfig, Trace,
};
pub use trajectory::DEFAULT_MAX_ENERGY_ERROR;
