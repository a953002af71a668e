//! Hamiltonian energy H(q, p) = U(q) + K(p) on `[dim]` or `[batch, dim]`
//! tensors, with K(p) = ½ pᵀ M⁻¹ p for an identity, diagonal or dense mass M.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use crate::linalg::{cholesky, cholesky_inverse};

/// Checks that `t` is a `[dim]` or `[batch, dim]` f32/f64 tensor and
/// returns its trailing dimension.
pub(crate) fn state_dim(op: &'static str, what: &'static str, t: &Tensor) -> Result<usize> {
    if !matches!(t.dtype(), DType::F32 | DType::F64) {
        return Err(Error::DType {
            op,
            what,
            got: t.dtype(),
        });
    }
    match t.dims() {
        [dim] | [_, dim] => Ok(*dim),
        _ => Err(Error::Shape {
            op,
            what,
            expected: "[dim] or [batch, dim]".into(),
            got: t.shape().clone(),
        }),
    }
}

/// Checks that `other` has exactly the shape, dtype and device of `reference`.
pub(crate) fn same_layout(
    op: &'static str,
    what: &'static str,
    reference: &Tensor,
    other: &Tensor,
) -> Result<()> {
    if other.dtype() != reference.dtype() {
        return Err(Error::DType {
            op,
            what,
            got: other.dtype(),
        });
    }
    if other.shape() != reference.shape() {
        return Err(Error::Shape {
            op,
            what,
            expected: format!("{:?}", reference.dims()),
            got: other.shape().clone(),
        });
    }
    if !other.device().same_device(reference.device()) {
        return Err(Error::Parameter {
            op,
            name: what,
            expected: "must live on the same device as q",
            got: format!("{:?}", other.device().location()),
        });
    }
    Ok(())
}

/// Kinetic energy K(p) = ½ pᵀ M⁻¹ p.
///
/// p: `[dim]` or `[batch, dim]`; mass_matrix M: `None` (identity), `[dim]`
/// (the diagonal of M) or `[dim, dim]` (dense, symmetric positive definite).
/// Returns `[]` for a `[dim]` input and `[batch]` for a `[batch, dim]` input.
pub fn kinetic_energy(p: &Tensor, mass_matrix: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "kinetic_energy";
    let dim = state_dim(OP, "p", p)?;
    let half = |t: Tensor| -> Result<Tensor> { Ok(t.sum(D::Minus1)?.affine(0.5, 0.0)?) };
    let Some(mass) = mass_matrix else {
        return half(p.sqr()?);
    };
    let mass = mass.to_dtype(p.dtype())?.to_device(p.device())?;
    match mass.dims() {
        [d] if *d == dim => half(p.sqr()?.broadcast_div(&mass)?),
        [r, c] if *r == dim && *c == dim => {
            // Candle has no linear solver, so M⁻¹ is formed on the host once
            // from its Cholesky factor; the contraction stays on p's device.
            let host: Vec<f64> = mass.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
            let inverse = cholesky_inverse(&cholesky(OP, &host, dim)?, dim);
            let inverse = Tensor::from_vec(inverse, (dim, dim), p.device())?.to_dtype(p.dtype())?;
            let rows = p.reshape(((), dim))?;
            let velocity = rows.matmul(&inverse)?;
            let k = half((velocity * rows)?)?;
            Ok(if p.rank() == 1 { k.squeeze(0)? } else { k })
        }
        _ => Err(Error::Shape {
            op: OP,
            what: "mass_matrix",
            expected: format!("[{dim}] or [{dim}, {dim}]"),
            got: mass.shape().clone(),
        }),
    }
}

/// Hamiltonian energy H(q, p) = potential(q) + ½ pᵀ M⁻¹ p, per batch element.
///
/// q, p: `[dim]` or `[batch, dim]` (same shape and dtype); `potential` maps q
/// to `[]` (for `[dim]`) or `[batch]`; mass_matrix: `None`, `[dim]` diagonal
/// or `[dim, dim]` dense. Returns `[]` or `[batch]`.
///
/// ```
/// use candle_core::{Device, Tensor, D};
/// use candle_hamiltonian::hamiltonian_energy;
/// let q = Tensor::new(&[[1.0f64, 0.0], [0.0, 2.0]], &Device::Cpu)?;
/// let p = Tensor::new(&[[0.0f64, 1.0], [1.0, 0.0]], &Device::Cpu)?;
/// let harmonic = |q: &Tensor| q.sqr()?.sum(D::Minus1)? * 0.5;
/// let h = hamiltonian_energy(&q, &p, harmonic, None)?;
/// assert_eq!(h.to_vec1::<f64>()?, vec![1.0, 2.5]);
/// # Ok::<(), candle_hamiltonian::Error>(())
/// ```
pub fn hamiltonian_energy(
    q: &Tensor,
    p: &Tensor,
    potential: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    mass_matrix: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "hamiltonian_energy";
    state_dim(OP, "q", q)?;
    same_layout(OP, "p", q, p)?;
    let u = potential(q)?;
    let expected = &q.dims()[..q.rank() - 1];
    if u.dims() != expected {
        return Err(Error::Shape {
            op: OP,
            what: "potential(q)",
            expected: format!("{expected:?}"),
            got: u.shape().clone(),
        });
    }
    Ok((u.to_dtype(q.dtype())? + kinetic_energy(p, mass_matrix)?)?)
}
