//! The inverse mass matrix M⁻¹ ("metric") used by the samplers on the host:
//! velocity M⁻¹p, kinetic energy ½pᵀM⁻¹p and momentum draws p ~ N(0, M).

use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{parameter, Error, Result};
use crate::linalg::{cholesky, mat_vec, solve_lower_transposed};

/// Diagonal or dense inverse mass matrix.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// The diagonal of M⁻¹ (`[dim]`).
    Diagonal(Vec<f64>),
    /// A dense M⁻¹ (`[dim, dim]` row-major) with its lower Cholesky factor.
    Dense {
        inverse_mass: Vec<f64>,
        cholesky: Vec<f64>,
    },
}

impl Metric {
    /// The identity metric in `dim` dimensions.
    pub fn identity(dim: usize) -> Self {
        Metric::Diagonal(vec![1.0; dim])
    }

    /// inverse_mass: `[dim]`, every entry finite and positive.
    pub fn diagonal(inverse_mass: Vec<f64>) -> Result<Self> {
        if let Some(bad) = inverse_mass.iter().find(|v| !(**v > 0.0 && v.is_finite())) {
            return Err(parameter(
                "Metric::diagonal",
                "inverse_mass",
                "entries must be finite and positive",
                bad,
            ));
        }
        Ok(Metric::Diagonal(inverse_mass))
    }

    /// inverse_mass: `[dim, dim]` row-major, symmetric positive definite.
    pub fn dense(inverse_mass: Vec<f64>, dim: usize) -> Result<Self> {
        const OP: &str = "Metric::dense";
        if inverse_mass.len() != dim * dim {
            return Err(Error::Length {
                op: OP,
                what: "inverse_mass",
                expected: dim * dim,
                got: inverse_mass.len(),
            });
        }
        let cholesky = cholesky(OP, &inverse_mass, dim)?;
        Ok(Metric::Dense {
            inverse_mass,
            cholesky,
        })
    }

    pub fn dim(&self) -> usize {
        match self {
            Metric::Diagonal(d) => d.len(),
            Metric::Dense { cholesky, .. } => cholesky.len().isqrt(),
        }
    }

    /// out = M⁻¹ p; returns the kinetic energy ½ pᵀ M⁻¹ p.
    pub(crate) fn velocity(&self, p: &[f64], out: &mut [f64]) -> f64 {
        match self {
            Metric::Diagonal(d) => {
                for ((o, p), d) in out.iter_mut().zip(p).zip(d) {
                    *o = p * d;
                }
            }
            Metric::Dense { inverse_mass, .. } => mat_vec(inverse_mass, p, out),
        }
        0.5 * dot(p, out)
    }

    /// Fills `p` with a draw from N(0, M).
    pub(crate) fn sample_momentum<R: Rng + ?Sized>(&self, rng: &mut R, p: &mut [f64]) {
        for v in p.iter_mut() {
            *v = rng.sample(StandardNormal);
        }
        match self {
            Metric::Diagonal(d) => {
                for (v, d) in p.iter_mut().zip(d) {
                    *v /= d.sqrt();
                }
            }
            // With M⁻¹ = L Lᵀ, p = L⁻ᵀ z has covariance L⁻ᵀ L⁻¹ = M.
            Metric::Dense { cholesky, .. } => {
                let n = p.len();
                solve_lower_transposed(cholesky, n, p)
            }
        }
    }
}

/// Dot product of two equal-length slices. Eight independent partial sums
/// let the compiler vectorise it; a single running sum would serialise every
/// addition (floating-point addition is not reassociated automatically).
#[inline]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut partial = [0.0f64; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for k in 0..8 {
            partial[k] = crate::fastmath::mul_add(x[k], y[k], partial[k]);
        }
    }
    partial.iter().sum::<f64>() + tail
}
