//! Reductions with PyTorch's result dtypes: integer sums accumulate in i64,
//! half-precision sums and means accumulate in f32, and arg-reductions return
//! i64 indices.

use crate::check;
use crate::error::InOp;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

fn checked_dims(op: &'static str, x: &Tensor, dims: &[usize]) -> Result<Vec<usize>> {
    let mut seen = Vec::with_capacity(dims.len());
    for &d in dims {
        check::dim(op, x, d)?;
        if seen.contains(&d) {
            return Err(Error::InvalidArgument {
                op,
                message: format!("dimension {d} is listed twice in {dims:?}"),
            });
        }
        seen.push(d);
    }
    if seen.is_empty() {
        // As in PyTorch, an empty list of dimensions reduces over all of them.
        seen.extend(0..x.rank());
    }
    Ok(seen)
}

/// The dtype sums are accumulated in.
fn accumulation_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        DType::U8 | DType::U32 => DType::I64,
        other => other,
    }
}

/// Sum over `dims` (all dimensions when empty), removing them.
/// Integer inputs give i64 as in PyTorch; floats keep their dtype.
pub fn sum(x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    const OP: &str = "sum";
    check::hip_dtype(OP, x)?;
    let dims = checked_dims(OP, x, dims)?;
    let acc = accumulation_dtype(x.dtype());
    let out_dtype = if x.dtype().is_float() {
        x.dtype()
    } else {
        DType::I64
    };
    x.to_dtype(acc)
        .and_then(|t| t.sum(dims))
        .and_then(|t| t.to_dtype(out_dtype))
        .in_op(OP)
}

/// Mean over `dims` (all dimensions when empty), removing them; floats only.
pub fn mean(x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    const OP: &str = "mean";
    check::float(OP, x)?;
    let dims = checked_dims(OP, x, dims)?;
    x.to_dtype(accumulation_dtype(x.dtype()))
        .and_then(|t| t.mean(dims))
        .and_then(|t| t.to_dtype(x.dtype()))
        .in_op(OP)
}

/// Maximum along `dim`, removing it.
pub fn max(x: &Tensor, dim: usize) -> Result<Tensor> {
    check::hip_dtype("max", x)?;
    check::dim("max", x, dim)?;
    non_empty("max", x, dim)?;
    x.max(dim).in_op("max")
}

/// Minimum along `dim`, removing it.
pub fn min(x: &Tensor, dim: usize) -> Result<Tensor> {
    check::hip_dtype("min", x)?;
    check::dim("min", x, dim)?;
    non_empty("min", x, dim)?;
    x.min(dim).in_op("min")
}

/// Index (i64) of the first maximum along `dim`, removing it.
pub fn argmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    check::hip_dtype("argmax", x)?;
    check::dim("argmax", x, dim)?;
    non_empty("argmax", x, dim)?;
    x.argmax(dim)
        .and_then(|t| t.to_dtype(DType::I64))
        .in_op("argmax")
}

/// Index (i64) of the first minimum along `dim`, removing it.
pub fn argmin(x: &Tensor, dim: usize) -> Result<Tensor> {
    check::hip_dtype("argmin", x)?;
    check::dim("argmin", x, dim)?;
    non_empty("argmin", x, dim)?;
    x.argmin(dim)
        .and_then(|t| t.to_dtype(DType::I64))
        .in_op("argmin")
}

fn non_empty(op: &'static str, x: &Tensor, dim: usize) -> Result<()> {
    if x.dims()[dim] == 0 {
        return Err(Error::InvalidArgument {
            op,
            message: format!(
                "cannot reduce over empty dimension {dim} of shape {:?}",
                x.shape()
            ),
        });
    }
    Ok(())
}
