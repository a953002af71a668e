//! Potentials U(q) = −log π(q) + const for the samplers. The samplers keep
//! chain states on the host as `f64` and ask a [`Potential`] for U and ∇U of
//! every active chain at once, so one gradient call covers the whole batch.

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};

/// A batched potential energy with its gradient.
pub trait Potential {
    /// Number of coordinates of one position.
    fn dim(&self) -> usize;

    /// positions: `[n, dim]` row-major. Writes U into `potentials` (`[n]`) and
    /// ∇U into `gradients` (`[n, dim]`). Non-finite values are allowed: the
    /// samplers treat them as divergences.
    fn evaluate(
        &mut self,
        positions: &[f64],
        potentials: &mut [f64],
        gradients: &mut [f64],
    ) -> Result<()>;
}

/// The CPU fast path: a plain closure `f(q, grad) -> U(q)` over one position
/// (`q: [dim]`, `grad: [dim]` to fill), applied chain by chain with no tensor
/// overhead. Use it when U is cheap and hand-differentiated.
#[derive(Clone)]
pub struct FnPotential<F> {
    dim: usize,
    f: F,
}

impl<F: FnMut(&[f64], &mut [f64]) -> f64> FnPotential<F> {
    pub fn new(dim: usize, f: F) -> Self {
        Self { dim, f }
    }
}

impl<F: FnMut(&[f64], &mut [f64]) -> f64> Potential for FnPotential<F> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn evaluate(
        &mut self,
        positions: &[f64],
        potentials: &mut [f64],
        gradients: &mut [f64],
    ) -> Result<()> {
        let rows = positions.chunks_exact(self.dim);
        for ((q, g), u) in rows
            .zip(gradients.chunks_exact_mut(self.dim))
            .zip(potentials.iter_mut())
        {
            *u = (self.f)(q, g);
        }
        Ok(())
    }
}

/// A potential written with candle tensor ops, `f(q: [n, dim]) -> [n]`,
/// evaluated on any device in f32 or f64; ∇U comes from candle's autograd.
#[derive(Clone)]
pub struct TensorPotential<F> {
    dim: usize,
    dtype: DType,
    device: Device,
    f: F,
}

impl<F: Fn(&Tensor) -> candle_core::Result<Tensor>> TensorPotential<F> {
    /// `dtype` must be f32 or f64; `f` maps `[n, dim]` positions to `[n]`.
    pub fn new(dim: usize, dtype: DType, device: &Device, f: F) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(Error::DType {
                op: "TensorPotential::new",
                what: "dtype",
                got: dtype,
            });
        }
        Ok(Self {
            dim,
            dtype,
            device: device.clone(),
            f,
        })
    }
}

impl<F: Fn(&Tensor) -> candle_core::Result<Tensor>> Potential for TensorPotential<F> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn evaluate(
        &mut self,
        positions: &[f64],
        potentials: &mut [f64],
        gradients: &mut [f64],
    ) -> Result<()> {
        let n = potentials.len();
        let q = Tensor::from_slice(positions, (n, self.dim), &self.device)?.to_dtype(self.dtype)?;
        let var = Var::from_tensor(&q)?;
        let u = (self.f)(var.as_tensor())?;
        if u.dims() != [n] {
            return Err(Error::Shape {
                op: "TensorPotential::evaluate",
                what: "potential(q)",
                expected: format!("[{n}]"),
                got: u.shape().clone(),
            });
        }
        let grads = u.sum_all()?.backward()?;
        let u_host: Vec<f64> = u.to_dtype(DType::F64)?.to_vec1()?;
        potentials.copy_from_slice(&u_host);
        match grads.get(var.as_tensor()) {
            Some(g) => {
                let g: Vec<f64> = g.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
                gradients.copy_from_slice(&g);
            }
            None => gradients.iter_mut().for_each(|g| *g = 0.0),
        }
        Ok(())
    }
}
