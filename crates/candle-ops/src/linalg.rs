//! Matrix multiplication with NumPy/PyTorch semantics (1-D operands, batch
//! broadcasting, integer support) and the thin layout operations.

use crate::check;
use crate::cpu::with_slice;
use crate::dtype::result_type;
use crate::error::InOp;
use crate::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor, WithDType};

/// Matrix product following `numpy.matmul`: `a: [.., m, k]`, `b: [.., k, n]`
/// give `[.., m, n]` with the batch dimensions broadcast; a 1-D `a` is a row
/// vector and a 1-D `b` a column vector, their added dimension removed from
/// the result. Operands are promoted to their common dtype; integer products
/// wrap on overflow.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "matmul";
    check::hip_dtype(OP, a)?;
    check::hip_dtype(OP, b)?;
    check::same_device(OP, a, b)?;
    for t in [a, b] {
        if t.rank() == 0 {
            return Err(Error::UnexpectedNumberOfDims {
                op: OP,
                expected: 1,
                got: 0,
                shape: t.shape().clone(),
            });
        }
    }
    let dtype = result_type(a.dtype(), b.dtype())?;
    let a_is_vector = a.rank() == 1;
    let b_is_vector = b.rank() == 1;
    let mut a = a.to_dtype(dtype).in_op(OP)?;
    let mut b = b.to_dtype(dtype).in_op(OP)?;
    if a_is_vector {
        a = a.unsqueeze(0).in_op(OP)?;
    }
    if b_is_vector {
        b = b.unsqueeze(1).in_op(OP)?;
    }
    let (k_a, k_b) = (a.dims()[a.rank() - 1], b.dims()[b.rank() - 2]);
    if k_a != k_b {
        return Err(Error::ShapeMismatch {
            op: OP,
            expected: format!("rhs with {k_a} rows to match lhs {:?}", a.shape()),
            got: b.shape().clone(),
        });
    }
    let batch = broadcast_batch(OP, &a, &b)?;
    let (m, n) = (a.dims()[a.rank() - 2], b.dims()[b.rank() - 1]);
    let a = a.broadcast_as(with_matrix(&batch, m, k_a)).in_op(OP)?;
    let b = b.broadcast_as(with_matrix(&batch, k_a, n)).in_op(OP)?;
    let mut out = if dtype.is_float() {
        a.contiguous()
            .and_then(|a| a.matmul(&b.contiguous()?))
            .in_op(OP)?
    } else if a.device().is_cpu() {
        match dtype {
            DType::U8 => int_matmul::<u8>(&a, &b, u8::wrapping_mul, u8::wrapping_add)?,
            DType::U32 => int_matmul::<u32>(&a, &b, u32::wrapping_mul, u32::wrapping_add)?,
            _ => int_matmul::<i64>(&a, &b, i64::wrapping_mul, i64::wrapping_add)?,
        }
    } else {
        return Err(Error::UnsupportedDTypeForOp {
            op: OP,
            dtype,
            reason: "integer matmul is implemented on the CPU only",
        });
    };
    if b_is_vector {
        out = out.squeeze(out.rank() - 1).in_op(OP)?;
    }
    if a_is_vector {
        out = out
            .squeeze(out.rank() - if b_is_vector { 1 } else { 2 })
            .in_op(OP)?;
    }
    Ok(out)
}

fn broadcast_batch(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Vec<usize>> {
    let a_batch = Shape::from(&a.dims()[..a.rank() - 2]);
    let b_batch = Shape::from(&b.dims()[..b.rank() - 2]);
    a_batch
        .broadcast_shape_binary_op(&b_batch, op)
        .map(|s| s.dims().to_vec())
        .map_err(|_| Error::ShapeMismatch {
            op,
            expected: format!("batch dimensions broadcast-compatible with {:?}", a.shape()),
            got: b.shape().clone(),
        })
}

fn with_matrix(batch: &[usize], rows: usize, cols: usize) -> Vec<usize> {
    let mut dims = batch.to_vec();
    dims.extend([rows, cols]);
    dims
}

/// a: [batch.., m, k], b: [batch.., k, n] (same batch dims), any layout.
fn int_matmul<T: WithDType>(
    a: &Tensor,
    b: &Tensor,
    mul: fn(T, T) -> T,
    add: fn(T, T) -> T,
) -> Result<Tensor> {
    const OP: &str = "matmul";
    let rank = a.rank();
    let (m, k, n) = (a.dims()[rank - 2], a.dims()[rank - 1], b.dims()[rank - 1]);
    let batch: usize = a.dims()[..rank - 2].iter().product();
    let out = with_slice(OP, a, |xa: &[T]| {
        with_slice(OP, b, |xb: &[T]| {
            let mut out = vec![T::zero(); batch * m * n];
            for bi in 0..batch {
                let (xa, xb) = (&xa[bi * m * k..], &xb[bi * k * n..]);
                let out = &mut out[bi * m * n..(bi + 1) * m * n];
                for i in 0..m {
                    for p in 0..k {
                        let lhs = xa[i * k + p];
                        for j in 0..n {
                            out[i * n + j] = add(out[i * n + j], mul(lhs, xb[p * n + j]));
                        }
                    }
                }
            }
            out
        })
    })??;
    let mut dims = a.dims()[..rank - 2].to_vec();
    dims.extend([m, n]);
    Tensor::from_vec(out, dims, &Device::Cpu).in_op(OP)
}

/// Swaps dimensions `dim1` and `dim2` (a view, no copy).
pub fn transpose(x: &Tensor, dim1: usize, dim2: usize) -> Result<Tensor> {
    check::dim("transpose", x, dim1)?;
    check::dim("transpose", x, dim2)?;
    x.transpose(dim1, dim2).in_op("transpose")
}

/// A tensor with the same values laid out contiguously (no copy when it
/// already is).
pub fn contiguous(x: &Tensor) -> Result<Tensor> {
    x.contiguous().in_op("contiguous")
}

/// Broadcasts `x` to `shape` following NumPy's rules (a view, no copy).
pub fn broadcast_as(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    x.broadcast_as(shape).in_op("broadcast_as")
}
