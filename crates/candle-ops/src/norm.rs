//! RMS and layer normalisation over the last dimension, and the fused
//! residual-add + RMS norm of a pre-norm transformer block.
//!
//! On the CPU these are single-pass row kernels that accumulate in f32 (f64
//! for f64 input); on other devices they compose upstream operations.

use crate::check;
use crate::cpu::{with_slice, Real};
use crate::error::InOp;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, WithDType, D};
use rayon::prelude::*;

/// Rows are processed in parallel once a tensor has this many elements;
/// below it the rayon dispatch costs more than it saves.
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

fn check_norm_args(op: &'static str, x: &Tensor, params: &[&Tensor]) -> Result<usize> {
    check::float(op, x)?;
    if x.rank() == 0 {
        return Err(Error::UnexpectedNumberOfDims {
            op,
            expected: 1,
            got: 0,
            shape: x.shape().clone(),
        });
    }
    let hidden = x.dim(D::Minus1).in_op(op)?;
    for p in params {
        check::same_device(op, x, p)?;
        check::same_dtype(op, x, p)?;
        if p.dims() != [hidden] {
            return Err(Error::ShapeMismatch {
                op,
                expected: format!("[{hidden}] (the last dimension of x {:?})", x.shape()),
                got: p.shape().clone(),
            });
        }
    }
    Ok(hidden)
}

fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

fn for_each_row<A: Real>(out: &mut [A], hidden: usize, f: impl Fn(usize, &mut [A]) + Sync + Send) {
    if out.len() >= PARALLEL_MIN_ELEMS {
        out.par_chunks_mut(hidden)
            .enumerate()
            .for_each(|(row, o)| f(row, o));
    } else {
        out.chunks_mut(hidden)
            .enumerate()
            .for_each(|(row, o)| f(row, o));
    }
}

fn rms_norm_rows<A: Real>(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    eps: f64,
    hidden: usize,
) -> Result<Vec<A>> {
    let eps = A::from(eps).unwrap_or_else(A::epsilon);
    let n = A::from(hidden).unwrap_or_else(A::one);
    with_slice(op, x, |xs: &[A]| {
        with_slice(op, w, |ws: &[A]| {
            let mut out = vec![A::zero(); xs.len()];
            for_each_row(&mut out, hidden, |row, o| {
                let xr = &xs[row * hidden..(row + 1) * hidden];
                let inv = (crate::cpu::dot(xr, xr) / n + eps).sqrt().recip();
                for ((o, &x), &w) in o.iter_mut().zip(xr).zip(ws) {
                    *o = x * inv * w;
                }
            });
            out
        })
    })?
}

fn on_cpu<A: Real>(
    op: &'static str,
    x: &Tensor,
    params: &[&Tensor],
    kernel: impl FnOnce(&Tensor, &[Tensor]) -> Result<Vec<A>>,
) -> Result<Tensor> {
    let xa = x.to_dtype(<A as WithDType>::DTYPE).in_op(op)?;
    let params: Vec<Tensor> = params
        .iter()
        .map(|p| p.to_dtype(<A as WithDType>::DTYPE).in_op(op))
        .collect::<Result<_>>()?;
    let out = kernel(&xa, &params)?;
    Tensor::from_vec(out, x.shape(), &Device::Cpu)
        .and_then(|t| t.to_dtype(x.dtype()))
        .in_op(op)
}

/// `x / sqrt(mean(x², last dim) + eps) * weight`.
///
/// x: [.., hidden]; weight: [hidden], same dtype as x.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    const OP: &str = "rms_norm";
    let hidden = check_norm_args(OP, x, &[weight])?;
    if !x.device().is_cpu() {
        return candle_nn::ops::rms_norm(&x.contiguous().in_op(OP)?, weight, eps as f32).in_op(OP);
    }
    match compute_dtype(x.dtype()) {
        DType::F64 => on_cpu::<f64>(OP, x, &[weight], |x, p| {
            rms_norm_rows(OP, x, &p[0], eps, hidden)
        }),
        _ => on_cpu::<f32>(OP, x, &[weight], |x, p| {
            rms_norm_rows(OP, x, &p[0], eps, hidden)
        }),
    }
}

fn layer_norm_rows<A: Real>(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    eps: f64,
    hidden: usize,
) -> Result<Vec<A>> {
    let eps = A::from(eps).unwrap_or_else(A::epsilon);
    let n = A::from(hidden).unwrap_or_else(A::one);
    let bias = match b {
        Some(b) => with_slice(op, b, |bs: &[A]| bs.to_vec())?,
        None => vec![A::zero(); hidden],
    };
    with_slice(op, x, |xs: &[A]| {
        with_slice(op, w, |ws: &[A]| {
            let mut out = vec![A::zero(); xs.len()];
            for_each_row(&mut out, hidden, |row, o| {
                let xr = &xs[row * hidden..(row + 1) * hidden];
                let mean = xr.iter().copied().sum::<A>() / n;
                // Two passes over the row: the variance of centred values
                // does not lose precision the way E[x²] - E[x]² does.
                let var = xr.iter().map(|&v| (v - mean) * (v - mean)).sum::<A>() / n;
                let inv = (var + eps).sqrt().recip();
                for (((o, &x), &w), &b) in o.iter_mut().zip(xr).zip(ws).zip(&bias) {
                    *o = (x - mean) * inv * w + b;
                }
            });
            out
        })
    })?
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension,
/// with the biased variance (PyTorch's `F.layer_norm`).
///
/// x: [.., hidden]; weight, bias: [hidden], same dtype as x.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    let params: Vec<&Tensor> = std::iter::once(weight).chain(bias).collect();
    let hidden = check_norm_args(OP, x, &params)?;
    if !x.device().is_cpu() {
        let bias = match bias {
            Some(b) => b.clone(),
            None => weight.zeros_like().in_op(OP)?,
        };
        return candle_nn::ops::layer_norm(&x.contiguous().in_op(OP)?, weight, &bias, eps as f32)
            .in_op(OP);
    }
    match compute_dtype(x.dtype()) {
        DType::F64 => on_cpu::<f64>(OP, x, &params, |x, p| {
            layer_norm_rows(OP, x, &p[0], p.get(1), eps, hidden)
        }),
        _ => on_cpu::<f32>(OP, x, &params, |x, p| {
            layer_norm_rows(OP, x, &p[0], p.get(1), eps, hidden)
        }),
    }
}

/// The pre-norm block step `h = x + residual; (rms_norm(h, weight, eps), h)`
/// in one pass over the data on the CPU for f32 and f64.
///
/// x, residual: [.., hidden] (same shape and dtype); weight: [hidden].
/// Returns `(normalised, updated_residual)`, both shaped like x.
pub fn rms_norm_residual(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rms_norm_residual";
    let hidden = check_norm_args(OP, x, &[weight])?;
    check::same_device(OP, x, residual)?;
    check::same_dtype(OP, x, residual)?;
    if residual.dims() != x.dims() {
        return Err(Error::ShapeMismatch {
            op: OP,
            expected: format!("residual shaped like x {:?}", x.shape()),
            got: residual.shape().clone(),
        });
    }
    match x.dtype() {
        DType::F32 if x.device().is_cpu() => {
            fused_residual::<f32>(x, residual, weight, eps, hidden)
        }
        DType::F64 if x.device().is_cpu() => {
            fused_residual::<f64>(x, residual, weight, eps, hidden)
        }
        // Half precision rounds the sum before normalising, exactly like the
        // unfused sequence; the normalisation itself still accumulates in f32.
        _ => {
            let h = (x + residual).in_op(OP)?;
            Ok((rms_norm(&h, weight, eps)?, h))
        }
    }
}

fn fused_residual<A: Real>(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f64,
    hidden: usize,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rms_norm_residual";
    let eps = A::from(eps).unwrap_or_else(A::epsilon);
    let n = A::from(hidden).unwrap_or_else(A::one);
    let (normed, summed) = with_slice(OP, x, |xs: &[A]| {
        with_slice(OP, residual, |rs: &[A]| {
            with_slice(OP, weight, |ws: &[A]| {
                let mut normed = vec![A::zero(); xs.len()];
                let mut summed = vec![A::zero(); xs.len()];
                let step = |(row, (o, h)): (usize, (&mut [A], &mut [A]))| {
                    let span = row * hidden..(row + 1) * hidden;
                    let mut sum_sq = A::zero();
                    for ((h, &x), &r) in h.iter_mut().zip(&xs[span.clone()]).zip(&rs[span]) {
                        *h = x + r;
                        sum_sq += *h * *h;
                    }
                    let inv = (sum_sq / n + eps).sqrt().recip();
                    for ((o, &h), &w) in o.iter_mut().zip(h.iter()).zip(ws) {
                        *o = h * inv * w;
                    }
                };
                if xs.len() >= PARALLEL_MIN_ELEMS {
                    normed
                        .par_chunks_mut(hidden)
                        .zip(summed.par_chunks_mut(hidden))
                        .enumerate()
                        .for_each(step);
                } else {
                    normed
                        .chunks_mut(hidden)
                        .zip(summed.chunks_mut(hidden))
                        .enumerate()
                        .for_each(step);
                }
                (normed, summed)
            })
        })
    })???;
    let normed = Tensor::from_vec(normed, x.shape(), &Device::Cpu).in_op(OP)?;
    let summed = Tensor::from_vec(summed, x.shape(), &Device::Cpu).in_op(OP)?;
    Ok((normed, summed))
}
