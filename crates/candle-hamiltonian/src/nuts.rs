//! Multinomial No-U-Turn sampler (Stan's variant: multinomial sampling over
//! the trajectory, biased progressive sampling between subtrees, the
//! generalised U-turn criterion with the extra checks across merged
//! subtrees, a maximum tree depth and divergence on large energy errors).
//!
//! Chains advance in lockstep: every tick each chain whose trajectory is
//! still growing takes one leapfrog step, and all their gradients come from
//! one batched [`Potential`] call. Trees are built iteratively: a stack of
//! completed sub-subtrees is merged (and U-turn checked) as soon as two of
//! equal size sit on top, which visits exactly the checks of the recursive
//! formulation in the same order.

use rand::Rng;

use crate::error::{parameter, Result};
use crate::kernel::{check_state, Info, Kernel, State};
use crate::metric::{dot, Metric};
use crate::potential::Potential;
use crate::trajectory::{Dynamics, EnergyCheck, Point};

/// The NUTS kernel: a potential, a metric, a step size and tree limits.
pub struct Nuts<P> {
    dynamics: Dynamics<P>,
    max_tree_depth: usize,
    criterion: UTurnCriterion,
    work: Vec<ChainWork>,
}

impl<P: Potential> Nuts<P> {
    /// A kernel with the identity metric, maximum tree depth 10 and Stan's
    /// divergence threshold 1000.
    ///
    /// ```
    /// use candle_hamiltonian::{FnPotential, Kernel, Nuts};
    /// use rand::SeedableRng;
    /// // Standard normal in 2-d: U(q) = ½|q|².
    /// let target = FnPotential::new(2, |q: &[f64], g: &mut [f64]| {
    ///     g.copy_from_slice(q);
    ///     0.5 * q.iter().map(|x| x * x).sum::<f64>()
    /// });
    /// let mut nuts = Nuts::new(target, 0.5)?;
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    /// let mut state = nuts.init_from_slice(&[0.0, 0.0, 1.0, -1.0])?; // 2 chains
    /// for _ in 0..10 {
    ///     let (next, info) = nuts.step(&mut rng, state)?;
    ///     assert!(info.tree_depth.iter().all(|&d| d >= 1));
    ///     state = next;
    /// }
    /// # Ok::<(), candle_hamiltonian::Error>(())
    /// ```
    pub fn new(potential: P, step_size: f64) -> Result<Self> {
        Ok(Nuts {
            dynamics: Dynamics::new("Nuts::new", potential, step_size)?,
            max_tree_depth: 10,
            criterion: UTurnCriterion::Stan,
            work: Vec::new(),
        })
    }

    /// Caps trajectories at 2^depth − 1 leapfrog steps; depth ≥ 1.
    pub fn with_max_tree_depth(mut self, depth: usize) -> Result<Self> {
        if !(1..=30).contains(&depth) {
            return Err(parameter(
                "Nuts::with_max_tree_depth",
                "max_tree_depth",
                "must lie in 1..=30",
                depth,
            ));
        }
        self.max_tree_depth = depth;
        Ok(self)
    }

    /// A leapfrog step with H − H₀ above `threshold` is a divergence.
    pub fn with_max_energy_error(mut self, threshold: f64) -> Result<Self> {
        self.dynamics
            .set_max_energy_error("Nuts::with_max_energy_error", threshold)?;
        Ok(self)
    }

    pub fn with_metric(mut self, metric: Metric) -> Result<Self> {
        self.set_metric(metric)?;
        Ok(self)
    }

    /// Stan's criterion by default; [`UTurnCriterion::NumPyro`] to match
    /// NumPyro's trajectories.
    pub fn with_u_turn_criterion(mut self, criterion: UTurnCriterion) -> Self {
        self.criterion = criterion;
        self
    }
}

impl<P: Potential> Kernel for Nuts<P> {
    fn dim(&self) -> usize {
        self.dynamics.potential.dim()
    }

    fn step_size(&self) -> f64 {
        self.dynamics.step_size
    }

    fn set_step_size(&mut self, step_size: f64) -> Result<()> {
        self.dynamics
            .set_step_size("Nuts::set_step_size", step_size)
    }

    fn metric(&self) -> &Metric {
        &self.dynamics.metric
    }

    fn set_metric(&mut self, metric: Metric) -> Result<()> {
        self.dynamics.set_metric("Nuts::set_metric", metric)
    }

    fn potential_mut(&mut self) -> &mut dyn Potential {
        &mut self.dynamics.potential
    }

    fn step<R: Rng + ?Sized>(&mut self, rng: &mut R, mut state: State) -> Result<(State, Info)> {
        check_state(self.dim(), &state)?;
        let (chains, dim) = (state.chains, state.dim);
        let limits = Limits {
            criterion: self.criterion,
            max_tree_depth: self.max_tree_depth,
            max_energy_error: self.dynamics.max_energy_error,
        };
        if self.work.len() != chains || self.work.first().is_some_and(|w| w.dim != dim) {
            self.work = (0..chains)
                .map(|_| ChainWork::new(dim, limits.max_tree_depth))
                .collect();
        }
        for (c, work) in self.work.iter_mut().enumerate() {
            work.begin(&state, c, &self.dynamics.metric, rng, limits.max_tree_depth);
        }
        let step_size = self.dynamics.step_size;
        loop {
            // Every chain whose trajectory still grows takes one step; the
            // batch rows follow chain order, and so do the leaves below.
            let mut frontiers: Vec<_> = self
                .work
                .iter_mut()
                .filter(|w| !w.done)
                .map(|w| {
                    let eps = w.signed(step_size);
                    (&mut w.frontier, eps)
                })
                .collect();
            if frontiers.is_empty() {
                break;
            }
            self.dynamics.leapfrog(&mut frontiers)?;
            for work in self.work.iter_mut().filter(|w| !w.done) {
                work.process_leaf(rng, &limits);
            }
        }
        let mut info = Info::with_chains(chains);
        for (c, work) in self.work.iter().enumerate() {
            let rows = c * dim..(c + 1) * dim;
            state.position[rows.clone()].copy_from_slice(&work.proposal.q);
            state.gradient[rows].copy_from_slice(&work.proposal.grad);
            state.potential[c] = work.proposal.u;
            info.acceptance_probability[c] = work.sum_accept / work.n_leapfrog.max(1) as f64;
            info.energy_error[c] = work.proposal.h - work.h0;
            info.diverged[c] = work.diverged;
            info.tree_depth[c] = work.depth;
            info.num_gradient_evaluations[c] = work.n_leapfrog;
        }
        Ok((state, info))
    }
}

struct Limits {
    criterion: UTurnCriterion,
    max_tree_depth: usize,
    max_energy_error: f64,
}

/// Summaries of the completed subtrees of the subtree being built, in build
/// order: momentum sum ρ, and momentum and velocity at both ends.
struct SubtreeStack {
    dim: usize,
    len: usize,
    size: Vec<usize>,
    rho: Vec<f64>,
    p_first: Vec<f64>,
    p_sharp_first: Vec<f64>,
    p_last: Vec<f64>,
    p_sharp_last: Vec<f64>,
}

impl SubtreeStack {
    fn new(dim: usize, capacity: usize) -> Self {
        let buffer = || vec![0.0; dim * capacity];
        SubtreeStack {
            dim,
            len: 0,
            size: vec![0; capacity],
            rho: buffer(),
            p_first: buffer(),
            p_sharp_first: buffer(),
            p_last: buffer(),
            p_sharp_last: buffer(),
        }
    }

    fn row(&self, i: usize) -> std::ops::Range<usize> {
        i * self.dim..(i + 1) * self.dim
    }

    fn push_leaf(&mut self, p: &[f64], p_sharp: &[f64]) {
        let r = self.row(self.len);
        self.rho[r.clone()].copy_from_slice(p);
        self.p_first[r.clone()].copy_from_slice(p);
        self.p_last[r.clone()].copy_from_slice(p);
        self.p_sharp_first[r.clone()].copy_from_slice(p_sharp);
        self.p_sharp_last[r].copy_from_slice(p_sharp);
        self.size[self.len] = 1;
        self.len += 1;
    }

    fn can_merge(&self) -> bool {
        self.len >= 2 && self.size[self.len - 1] == self.size[self.len - 2]
    }

    /// Merges the two top subtrees; returns false if the merged subtree
    /// makes a U-turn.
    fn merge_top(&mut self, criterion: UTurnCriterion) -> bool {
        let (l, r) = (self.len - 2, self.len - 1);
        let (lr, rr) = (self.row(l), self.row(r));
        let segment = |r: std::ops::Range<usize>| Segment {
            first_p: &self.p_first[r.clone()],
            first_v: &self.p_sharp_first[r.clone()],
            last_p: &self.p_last[r.clone()],
            last_v: &self.p_sharp_last[r.clone()],
            rho: &self.rho[r],
        };
        let no_u_turn = criterion.merge_continues(&segment(lr.clone()), &segment(rr.clone()));
        let d = self.dim;
        let (left, right) = self.rho.split_at_mut(rr.start);
        for (a, b) in left[lr.clone()].iter_mut().zip(&right[..d]) {
            *a += b;
        }
        self.p_last.copy_within(rr.clone(), lr.start);
        self.p_sharp_last.copy_within(rr, lr.start);
        self.size[l] *= 2;
        self.len -= 1;
        no_u_turn
    }
}

/// Stan's generalised no-U-turn criterion for a (sub)trajectory whose
/// momentum sum is ρ = a + b and whose end velocities are `v_minus`, `v_plus`.
fn no_u_turn(v_minus: &[f64], v_plus: &[f64], a: &[f64], b: &[f64]) -> bool {
    dot(v_plus, a) + dot(v_plus, b) > 0.0 && dot(v_minus, a) + dot(v_minus, b) > 0.0
}

/// How NUTS decides that a trajectory has turned back on itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UTurnCriterion {
    /// Stan's: v₋·ρ > 0 and v₊·ρ > 0 for every merged (sub)trajectory, plus
    /// the same test across the seam of every merge (left part with the
    /// first point of the right part, and vice versa).
    #[default]
    Stan,
    /// NumPyro's: the test on ρ − (p₋ + p₊)/2 (Betancourt 2017, §A.4.2)
    /// without the seam checks; it stops trajectories earlier.
    NumPyro,
}

impl UTurnCriterion {
    /// Whether the trajectory `left` ∪ `right` (time- or build-ordered;
    /// both criteria are symmetric) may keep growing.
    fn merge_continues(self, left: &Segment, right: &Segment) -> bool {
        match self {
            UTurnCriterion::Stan => {
                no_u_turn(left.first_v, right.last_v, left.rho, right.rho)
                    && no_u_turn(left.first_v, right.first_v, left.rho, right.first_p)
                    && no_u_turn(left.last_v, right.last_v, left.last_p, right.rho)
            }
            UTurnCriterion::NumPyro => [left.first_v, right.last_v].iter().all(|v| {
                dot(v, left.rho) + dot(v, right.rho)
                    - 0.5 * (dot(v, left.first_p) + dot(v, right.last_p))
                    > 0.0
            }),
        }
    }
}

/// Momenta p and velocities v = M⁻¹p at both time-ordered ends of a piece
/// of trajectory, and its momentum sum ρ.
struct Segment<'a> {
    first_p: &'a [f64],
    first_v: &'a [f64],
    last_p: &'a [f64],
    last_v: &'a [f64],
    rho: &'a [f64],
}

/// One chain's trajectory under construction.
struct ChainWork {
    dim: usize,
    /// Trajectory ends in time order: `[backward, forward]`.
    ends: [Point; 2],
    frontier: Point,
    proposal: Point,
    subtree_proposal: Point,
    stack: SubtreeStack,
    rho: Vec<f64>,
    h0: f64,
    log_weight: f64,
    subtree_log_weight: f64,
    forward: bool,
    depth: usize,
    leaves_done: usize,
    sum_accept: f64,
    n_leapfrog: usize,
    diverged: bool,
    done: bool,
}

impl ChainWork {
    fn new(dim: usize, max_tree_depth: usize) -> Self {
        ChainWork {
            dim,
            ends: [Point::zeros(dim), Point::zeros(dim)],
            frontier: Point::zeros(dim),
            proposal: Point::zeros(dim),
            subtree_proposal: Point::zeros(dim),
            stack: SubtreeStack::new(dim, max_tree_depth + 1),
            rho: vec![0.0; dim],
            h0: 0.0,
            log_weight: 0.0,
            subtree_log_weight: f64::NEG_INFINITY,
            forward: true,
            depth: 0,
            leaves_done: 0,
            sum_accept: 0.0,
            n_leapfrog: 0,
            diverged: false,
            done: false,
        }
    }

    fn signed(&self, step_size: f64) -> f64 {
        if self.forward {
            step_size
        } else {
            -step_size
        }
    }

    fn begin<R: Rng + ?Sized>(
        &mut self,
        state: &State,
        chain: usize,
        metric: &Metric,
        rng: &mut R,
        max_tree_depth: usize,
    ) {
        if self.stack.size.len() < max_tree_depth + 1 {
            self.stack = SubtreeStack::new(self.dim, max_tree_depth + 1);
        }
        self.ends[0].load_with_momentum(state, chain, metric, rng);
        let (backward, forward) = self.ends.split_at_mut(1);
        forward[0].copy_from(&backward[0]);
        self.proposal.copy_from(&self.ends[0]);
        self.rho.copy_from_slice(&self.ends[0].p);
        self.h0 = self.ends[0].h;
        self.log_weight = 0.0;
        self.sum_accept = 0.0;
        self.n_leapfrog = 0;
        self.depth = 0;
        self.diverged = false;
        self.done = false;
        self.start_subtree(rng);
    }

    fn start_subtree<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        self.forward = rng.random::<bool>();
        self.frontier.copy_from(&self.ends[self.forward as usize]);
        self.leaves_done = 0;
        self.subtree_log_weight = f64::NEG_INFINITY;
        self.stack.len = 0;
    }

    fn process_leaf<R: Rng + ?Sized>(&mut self, rng: &mut R, limits: &Limits) {
        self.n_leapfrog += 1;
        let energy = EnergyCheck::new(self.h0, self.frontier.h, limits.max_energy_error);
        if energy.diverged {
            self.diverged = true;
            self.done = true;
            return;
        }
        self.sum_accept += energy.acceptance;
        let log_w = -energy.error;
        self.subtree_log_weight = log_add_exp(self.subtree_log_weight, log_w);
        // Uniform progressive sampling inside the subtree: leaf by leaf this
        // picks each leaf with probability proportional to its weight.
        if rng.random::<f64>() < (log_w - self.subtree_log_weight).exp() {
            self.subtree_proposal.copy_sample_from(&self.frontier);
        }
        self.stack
            .push_leaf(&self.frontier.p, &self.frontier.p_sharp);
        while self.stack.can_merge() {
            if !self.stack.merge_top(limits.criterion) {
                self.done = true;
                return;
            }
        }
        self.leaves_done += 1;
        if self.leaves_done == 1 << self.depth {
            self.complete_subtree(rng, limits);
        }
    }

    fn complete_subtree<R: Rng + ?Sized>(&mut self, rng: &mut R, limits: &Limits) {
        // Biased progressive sampling favours the new subtree (Stan).
        if rng.random::<f64>() < (self.subtree_log_weight - self.log_weight).exp() {
            self.proposal.copy_sample_from(&self.subtree_proposal);
        }
        self.log_weight = log_add_exp(self.log_weight, self.subtree_log_weight);

        let s = &self.stack;
        let r = 0..self.dim;
        // The subtree in time order: built backwards, its first leaf is its
        // latest point.
        let (first, last) = if self.forward {
            ((&s.p_first, &s.p_sharp_first), (&s.p_last, &s.p_sharp_last))
        } else {
            ((&s.p_last, &s.p_sharp_last), (&s.p_first, &s.p_sharp_first))
        };
        let subtree = Segment {
            first_p: &first.0[r.clone()],
            first_v: &first.1[r.clone()],
            last_p: &last.0[r.clone()],
            last_v: &last.1[r.clone()],
            rho: &s.rho[r],
        };
        let [back, fwd] = &self.ends;
        let trajectory = Segment {
            first_p: &back.p,
            first_v: &back.p_sharp,
            last_p: &fwd.p,
            last_v: &fwd.p_sharp,
            rho: &self.rho,
        };
        let (left, right) = if self.forward {
            (trajectory, subtree)
        } else {
            (subtree, trajectory)
        };
        let no_turn = limits.criterion.merge_continues(&left, &right);

        for (a, b) in self.rho.iter_mut().zip(&self.stack.rho[..self.dim]) {
            *a += b;
        }
        self.ends[self.forward as usize].copy_from(&self.frontier);
        self.depth += 1;
        if !no_turn || self.depth >= limits.max_tree_depth {
            self.done = true;
        } else {
            self.start_subtree(rng);
        }
    }
}

/// log(eᵃ + eᵇ) without overflow; −∞ is the empty weight.
fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}
