//! Static Hamiltonian Monte Carlo: a fixed number of leapfrog steps, then a
//! Metropolis correction, for every chain of the batch in lockstep.

use rand::Rng;

use crate::error::{parameter, Result};
use crate::kernel::{
    check_metric, check_state, check_step_size, Batch, Info, Kernel, Point, State,
};
use crate::metric::Metric;
use crate::nuts::DEFAULT_MAX_ENERGY_ERROR;
use crate::potential::Potential;

pub struct Hmc<P> {
    potential: P,
    metric: Metric,
    step_size: f64,
    num_integration_steps: usize,
    max_energy_error: f64,
    points: Vec<Point>,
    batch: Batch,
}

impl<P: Potential> Hmc<P> {
    /// `num_integration_steps` ≥ 1 leapfrog steps of `step_size` per
    /// transition, identity metric.
    pub fn new(potential: P, step_size: f64, num_integration_steps: usize) -> Result<Self> {
        check_step_size("Hmc::new", step_size)?;
        if num_integration_steps == 0 {
            return Err(parameter(
                "Hmc::new",
                "num_integration_steps",
                "must be at least 1",
                0,
            ));
        }
        let dim = potential.dim();
        Ok(Hmc {
            potential,
            metric: Metric::identity(dim),
            step_size,
            num_integration_steps,
            max_energy_error: DEFAULT_MAX_ENERGY_ERROR,
            points: Vec::new(),
            batch: Batch::default(),
        })
    }

    pub fn with_metric(mut self, metric: Metric) -> Result<Self> {
        self.set_metric(metric)?;
        Ok(self)
    }
}

impl<P: Potential> Kernel for Hmc<P> {
    fn dim(&self) -> usize {
        self.potential.dim()
    }

    fn step_size(&self) -> f64 {
        self.step_size
    }

    fn set_step_size(&mut self, step_size: f64) -> Result<()> {
        check_step_size("Hmc::set_step_size", step_size)?;
        self.step_size = step_size;
        Ok(())
    }

    fn metric(&self) -> &Metric {
        &self.metric
    }

    fn set_metric(&mut self, metric: Metric) -> Result<()> {
        check_metric("Hmc::set_metric", self.potential.dim(), &metric)?;
        self.metric = metric;
        Ok(())
    }

    fn potential_mut(&mut self) -> &mut dyn Potential {
        &mut self.potential
    }

    fn step<R: Rng + ?Sized>(&mut self, rng: &mut R, mut state: State) -> Result<(State, Info)> {
        check_state(self.potential.dim(), &state)?;
        let (chains, dim) = (state.chains, state.dim);
        self.points.resize_with(chains, || Point::zeros(dim));
        if self.points[0].q.len() != dim {
            self.points = (0..chains).map(|_| Point::zeros(dim)).collect();
        }
        self.batch.reserve(chains, dim);
        let mut h0 = vec![0.0; chains];
        for (c, point) in self.points.iter_mut().enumerate() {
            point.load_with_momentum(&state, c, &self.metric, rng);
            h0[c] = point.h;
        }
        let eps = self.step_size;
        for _ in 0..self.num_integration_steps {
            for (c, point) in self.points.iter_mut().enumerate() {
                point.kick_drift(
                    &self.metric,
                    eps,
                    &mut self.batch.positions[c * dim..(c + 1) * dim],
                );
            }
            self.batch.evaluate(&mut self.potential, chains, dim)?;
            for (c, point) in self.points.iter_mut().enumerate() {
                let grad = &self.batch.gradients[c * dim..(c + 1) * dim];
                point.finish_kick(&self.metric, eps, self.batch.potentials[c], grad);
            }
        }
        let mut info = Info::with_chains(chains);
        for (c, point) in self.points.iter().enumerate() {
            let energy_error = point.h - h0[c];
            let diverged = energy_error.is_nan() || energy_error > self.max_energy_error;
            let accept = if diverged {
                0.0
            } else {
                (-energy_error).exp().min(1.0)
            };
            let accepted = rng.random::<f64>() < accept;
            if accepted {
                let rows = c * dim..(c + 1) * dim;
                state.position[rows.clone()].copy_from_slice(&point.q);
                state.gradient[rows].copy_from_slice(&point.grad);
                state.potential[c] = point.u;
            }
            info.acceptance_probability[c] = accept;
            info.energy_error[c] = energy_error;
            info.diverged[c] = diverged;
            info.num_gradient_evaluations[c] = self.num_integration_steps;
        }
        Ok((state, info))
    }
}
