//! Symplectic integrators over `[dim]` or `[batch, dim]` tensors for
//! separable Hamiltonians H(q, p) = U(q) + ½|p|² (unit mass), the form
//! HIP-19 specifies. Every integrator here is a palindromic splitting:
//! alternating momentum "kicks" p -= a·dt·∇U(q) and position "drifts"
//! q += b·dt·p, which makes each one symplectic and time-reversible.

use candle_core::{Tensor, Var};

use crate::energy::{same_layout, state_dim};
use crate::error::{parameter, Error, Result};

/// w₁ of Yoshida's fourth-order triple jump: 1 / (2 − 2^{1/3}).
pub const YOSHIDA4_W1: f64 = 1.351_207_191_959_657_8;
/// w₀ of Yoshida's fourth-order triple jump: −2^{1/3} / (2 − 2^{1/3}).
pub const YOSHIDA4_W0: f64 = -1.702_414_383_919_315_3;
/// McLachlan's (1995) minimal-error two-stage kick weight λ.
pub const MCLACHLAN_LAMBDA: f64 = 0.193_183_327_503_783_6;
/// Blanes–Casas–Sanz-Serna (2014) two-stage kick weight λ = (3 − √3)/6,
/// tuned for the Gaussian targets HMC meets in practice.
pub const BCSS_LAMBDA: f64 = 0.211_324_865_405_187_1;

/// One symplectic-Euler step (kick, then drift) of H = U(q) + ½|p|², from
/// the gradients at the current point.
///
/// q, p, grad_h_q (= ∇U(q)), grad_h_p (= p): `[dim]` or `[batch, dim]`, all
/// the same shape. Returns `(q_next, p_next)` with p_next = p − dt·∇U(q) and
/// q_next = q + dt·∂H/∂p(p_next); with unit mass ∂H/∂p is linear in p, so
/// ∂H/∂p(p_next) = grad_h_p − dt·grad_h_q and no second evaluation is needed.
/// First order; preserves the symplectic 2-form exactly.
pub fn symplectic_euler_step(
    q: &Tensor,
    p: &Tensor,
    grad_h_q: &Tensor,
    grad_h_p: &Tensor,
    dt: f64,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "symplectic_euler_step";
    state_dim(OP, "q", q)?;
    same_layout(OP, "p", q, p)?;
    same_layout(OP, "grad_h_q", q, grad_h_q)?;
    same_layout(OP, "grad_h_p", q, grad_h_p)?;
    check_dt(OP, dt)?;
    let kick = grad_h_q.affine(dt, 0.0)?;
    let p_next = (p - &kick)?;
    let velocity = (grad_h_p - kick)?;
    let q_next = (q + velocity.affine(dt, 0.0)?)?;
    Ok((q_next, p_next))
}

/// `n_steps` leapfrog (Störmer–Verlet, kick-drift-kick) steps of size `dt`.
///
/// q, p: `[dim]` or `[batch, dim]`; `grad_h(q)` returns ∇U(q) with q's shape
/// (use [`potential_gradient`] to get it from U by autograd). Second order;
/// costs one gradient per step plus one at the start.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use candle_hamiltonian::leapfrog_step;
/// let q = Tensor::new(&[[1.0f64]], &Device::Cpu)?;
/// let p = Tensor::new(&[[0.0f64]], &Device::Cpu)?;
/// // Harmonic oscillator: after t = π the exact solution is q = −1.
/// let n = 1000;
/// let (q, _p) = leapfrog_step(&q, &p, |q| Ok(q.clone()), std::f64::consts::PI / n as f64, n)?;
/// assert!((q.to_vec2::<f64>()?[0][0] + 1.0).abs() < 1e-5);
/// # Ok::<(), candle_hamiltonian::Error>(())
/// ```
pub fn leapfrog_step(
    q: &Tensor,
    p: &Tensor,
    grad_h: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    dt: f64,
    n_steps: usize,
) -> Result<(Tensor, Tensor)> {
    splitting(
        "leapfrog_step",
        q,
        p,
        &grad_h,
        dt,
        n_steps,
        &[0.5, 0.5],
        &[1.0],
    )
}

/// `n_steps` steps of Yoshida's fourth-order "triple jump": three leapfrog
/// substeps of sizes w₁·dt, w₀·dt, w₁·dt (not BlackJAX's second-order
/// "yoshida" integrator). Three gradients per step.
///
/// q, p: `[dim]` or `[batch, dim]`; grad_h(q): ∇U(q) with q's shape.
pub fn yoshida4_triple_jump_step(
    q: &Tensor,
    p: &Tensor,
    grad_h: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    dt: f64,
    n_steps: usize,
) -> Result<(Tensor, Tensor)> {
    let (w1, w0) = (YOSHIDA4_W1, YOSHIDA4_W0);
    splitting(
        "yoshida4_triple_jump_step",
        q,
        p,
        &grad_h,
        dt,
        n_steps,
        &[w1 / 2.0, (w1 + w0) / 2.0, (w0 + w1) / 2.0, w1 / 2.0],
        &[w1, w0, w1],
    )
}

/// `n_steps` steps of the two-stage palindromic splitting
/// kick(λ) drift(½) kick(1−2λ) drift(½) kick(λ): second order, two gradients
/// per step, with a smaller error constant than leapfrog at equal cost.
/// Pass [`MCLACHLAN_LAMBDA`] (minimal error) or [`BCSS_LAMBDA`].
///
/// q, p: `[dim]` or `[batch, dim]`; grad_h(q): ∇U(q) with q's shape.
pub fn two_stage_step(
    q: &Tensor,
    p: &Tensor,
    grad_h: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    dt: f64,
    n_steps: usize,
    lambda: f64,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "two_stage_step";
    if !(lambda > 0.0 && lambda < 0.5) {
        return Err(parameter(OP, "lambda", "must lie in (0, 0.5)", lambda));
    }
    splitting(
        OP,
        q,
        p,
        &grad_h,
        dt,
        n_steps,
        &[lambda, 1.0 - 2.0 * lambda, lambda],
        &[0.5, 0.5],
    )
}

/// Turns a potential U (q `[batch, dim]` -> `[batch]`, or `[dim]` -> `[]`)
/// into its gradient ∇U through candle's autograd, ready for the integrators.
/// Batch rows are independent, so the gradient of Σ U is each row's ∇U.
pub fn potential_gradient(
    potential: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> impl Fn(&Tensor) -> candle_core::Result<Tensor> {
    move |q: &Tensor| {
        let var = Var::from_tensor(q)?;
        let grads = potential(var.as_tensor())?.sum_all()?.backward()?;
        match grads.get(var.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => q.zeros_like(),
        }
    }
}

fn check_dt(op: &'static str, dt: f64) -> Result<()> {
    if dt.is_finite() {
        Ok(())
    } else {
        Err(parameter(op, "dt", "must be finite", dt))
    }
}

fn checked_gradient(
    op: &'static str,
    q: &Tensor,
    grad_h: &impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    let g = grad_h(q)?;
    if g.shape() != q.shape() {
        return Err(Error::Shape {
            op,
            what: "grad_h(q)",
            expected: format!("{:?}", q.dims()),
            got: g.shape().clone(),
        });
    }
    Ok(g.to_dtype(q.dtype())?)
}

/// Runs a palindromic kick/drift splitting; `kicks` has one more entry than
/// `drifts`, and the last kick of a step is merged with the first of the
/// next so each step costs `drifts.len()` gradients.
#[allow(clippy::too_many_arguments)]
fn splitting(
    op: &'static str,
    q: &Tensor,
    p: &Tensor,
    grad_h: &impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    dt: f64,
    n_steps: usize,
    kicks: &[f64],
    drifts: &[f64],
) -> Result<(Tensor, Tensor)> {
    state_dim(op, "q", q)?;
    same_layout(op, "p", q, p)?;
    check_dt(op, dt)?;
    if n_steps == 0 {
        return Ok((q.clone(), p.clone()));
    }
    let mut q = q.clone();
    let mut p = (p - checked_gradient(op, &q, grad_h)?.affine(kicks[0] * dt, 0.0)?)?;
    let last_kick = kicks[kicks.len() - 1];
    for step in 0..n_steps {
        for (stage, drift) in drifts.iter().enumerate() {
            q = (q + p.affine(drift * dt, 0.0)?)?;
            let g = checked_gradient(op, &q, grad_h)?;
            let is_last_stage = stage + 1 == drifts.len();
            let kick = match (is_last_stage, step + 1 == n_steps) {
                (false, _) => kicks[stage + 1],
                (true, true) => last_kick,
                (true, false) => last_kick + kicks[0],
            };
            p = (p - g.affine(kick * dt, 0.0)?)?;
        }
    }
    Ok((q, p))
}
