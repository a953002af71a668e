//! Static Hamiltonian Monte Carlo: a fixed number of leapfrog steps, then a
//! Metropolis correction, for every chain of the batch in lockstep.

use rand::Rng;

use crate::error::{parameter, Result};
use crate::kernel::{check_state, Info, Kernel, State};
use crate::metric::Metric;
use crate::potential::Potential;
use crate::trajectory::{Dynamics, Point};

/// The static HMC kernel: a potential, a metric, a step size and a number of
/// leapfrog steps per transition.
pub struct Hmc<P> {
    dynamics: Dynamics<P>,
    num_integration_steps: usize,
    points: Vec<Point>,
}

impl<P: Potential> Hmc<P> {
    /// `num_integration_steps` ≥ 1 leapfrog steps of `step_size` per
    /// transition, identity metric, Stan's divergence threshold 1000.
    pub fn new(potential: P, step_size: f64, num_integration_steps: usize) -> Result<Self> {
        if num_integration_steps == 0 {
            return Err(parameter(
                "Hmc::new",
                "num_integration_steps",
                "must be at least 1",
                0,
            ));
        }
        Ok(Hmc {
            dynamics: Dynamics::new("Hmc::new", potential, step_size)?,
            num_integration_steps,
            points: Vec::new(),
        })
    }

    /// A proposal with H − H₀ above `threshold` is a divergence (rejected).
    pub fn with_max_energy_error(mut self, threshold: f64) -> Result<Self> {
        self.dynamics
            .set_max_energy_error("Hmc::with_max_energy_error", threshold)?;
        Ok(self)
    }

    pub fn with_metric(mut self, metric: Metric) -> Result<Self> {
        self.set_metric(metric)?;
        Ok(self)
    }
}

impl<P: Potential> Kernel for Hmc<P> {
    fn dim(&self) -> usize {
        self.dynamics.potential.dim()
    }

    fn step_size(&self) -> f64 {
        self.dynamics.step_size
    }

    fn set_step_size(&mut self, step_size: f64) -> Result<()> {
        self.dynamics.set_step_size("Hmc::set_step_size", step_size)
    }

    fn metric(&self) -> &Metric {
        &self.dynamics.metric
    }

    fn set_metric(&mut self, metric: Metric) -> Result<()> {
        self.dynamics.set_metric("Hmc::set_metric", metric)
    }

    fn potential_mut(&mut self) -> &mut dyn Potential {
        &mut self.dynamics.potential
    }

    fn step<R: Rng + ?Sized>(&mut self, rng: &mut R, mut state: State) -> Result<(State, Info)> {
        check_state(self.dim(), &state)?;
        let (chains, dim) = (state.chains, state.dim);
        if self.points.len() != chains || self.points[0].q.len() != dim {
            self.points = (0..chains).map(|_| Point::zeros(dim)).collect();
        }
        let mut h0 = vec![0.0; chains];
        for (c, point) in self.points.iter_mut().enumerate() {
            point.load_with_momentum(&state, c, &self.dynamics.metric, rng);
            h0[c] = point.h;
        }
        let eps = self.dynamics.step_size;
        for _ in 0..self.num_integration_steps {
            let mut steps: Vec<_> = self.points.iter_mut().map(|p| (p, eps)).collect();
            self.dynamics.leapfrog(&mut steps)?;
        }
        let mut info = Info::with_chains(chains);
        for (c, point) in self.points.iter().enumerate() {
            let energy = self.dynamics.check_energy(h0[c], point.h);
            if rng.random::<f64>() < energy.acceptance {
                let rows = c * dim..(c + 1) * dim;
                state.position[rows.clone()].copy_from_slice(&point.q);
                state.gradient[rows].copy_from_slice(&point.grad);
                state.potential[c] = point.u;
            }
            info.acceptance_probability[c] = energy.acceptance;
            info.energy_error[c] = energy.error;
            info.diverged[c] = energy.diverged;
            info.num_gradient_evaluations[c] = self.num_integration_steps;
        }
        Ok((state, info))
    }
}
