//! Argument checks shared by the operations: they run before any kernel so
//! that bad input is reported with the operation's name instead of failing
//! (or panicking) deep inside a backend.

use crate::dtype::ensure_hip_dtype;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

pub(crate) fn same_device(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.device().same_device(b.device()) {
        Ok(())
    } else {
        Err(Error::DeviceMismatch {
            op,
            lhs: a.device().location(),
            rhs: b.device().location(),
        })
    }
}

pub(crate) fn hip_dtype(op: &'static str, t: &Tensor) -> Result<()> {
    ensure_hip_dtype(op, t.dtype())
}

/// Rejects integer tensors for operations that only make sense on floats
/// (PyTorch rejects the same ones).
pub(crate) fn float(op: &'static str, t: &Tensor) -> Result<()> {
    hip_dtype(op, t)?;
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDTypeForOp {
            op,
            dtype: t.dtype(),
            reason: "the operation is defined for floating-point tensors only",
        })
    }
}

pub(crate) fn integer_indices(op: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::U8 | DType::U32 | DType::I64 => Ok(()),
        dtype => Err(Error::UnsupportedDTypeForOp {
            op,
            dtype,
            reason: "indices must be u8, u32 or i64",
        }),
    }
}

pub(crate) fn rank(op: &'static str, t: &Tensor, expected: usize) -> Result<()> {
    if t.rank() == expected {
        Ok(())
    } else {
        Err(Error::UnexpectedNumberOfDims {
            op,
            expected,
            got: t.rank(),
            shape: t.shape().clone(),
        })
    }
}

pub(crate) fn dim(op: &'static str, t: &Tensor, dim: usize) -> Result<()> {
    if dim < t.rank() {
        Ok(())
    } else {
        Err(Error::DimOutOfRange {
            op,
            dim,
            shape: t.shape().clone(),
        })
    }
}

pub(crate) fn same_dtype(op: &'static str, expected: &Tensor, got: &Tensor) -> Result<()> {
    if expected.dtype() == got.dtype() {
        Ok(())
    } else {
        Err(Error::DTypeMismatch {
            op,
            expected: expected.dtype(),
            got: got.dtype(),
        })
    }
}

/// Verifies that every index is in `0..size` so that no backend ever sees an
/// out-of-range index (upstream's CPU kernels would panic on some of them).
pub(crate) fn indices_in_range(op: &'static str, indices: &Tensor, size: usize) -> Result<()> {
    integer_indices(op, indices)?;
    if indices.elem_count() == 0 {
        return Ok(());
    }
    let as_i64 = indices
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::I64))
        .and_then(|t| t.to_device(&candle_core::Device::Cpu))
        .and_then(|t| t.to_vec1::<i64>())
        .map_err(|e| Error::from_candle(op, e))?;
    match as_i64.iter().find(|&&i| i < 0 || i as u64 >= size as u64) {
        None => Ok(()),
        Some(bad) => Err(Error::InvalidArgument {
            op,
            message: format!("index {bad} is out of range for a dimension of size {size}"),
        }),
    }
}
