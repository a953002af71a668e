//! Softmax, log-softmax and embedding lookup.

use crate::check;
use crate::error::InOp;
use crate::Result;
use candle_core::{DType, Tensor};

/// Half-precision inputs are computed in f32 and rounded once at the end, as
/// PyTorch's CPU kernels do, so the result is the correctly rounded f32 value.
pub(crate) fn in_f32_if_half(
    op: &'static str,
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    match x.dtype() {
        DType::F16 | DType::BF16 => x
            .to_dtype(DType::F32)
            .and_then(|t| f(&t))
            .and_then(|t| t.to_dtype(x.dtype()))
            .in_op(op),
        _ => f(x).in_op(op),
    }
}

/// Softmax along `dim`; floats only.
pub fn softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    check::float("softmax", x)?;
    check::dim("softmax", x, dim)?;
    in_f32_if_half("softmax", x, |x| {
        if dim + 1 == x.rank() {
            candle_nn::ops::softmax_last_dim(&x.contiguous()?)
        } else {
            candle_nn::ops::softmax(x, dim)
        }
    })
}

/// `log(softmax(x))` along `dim`, computed stably; floats only.
pub fn log_softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    check::float("log_softmax", x)?;
    check::dim("log_softmax", x, dim)?;
    in_f32_if_half("log_softmax", x, |x| candle_nn::ops::log_softmax(x, dim))
}

/// Looks up rows of `weight` for every id.
///
/// ids: integer tensor of any shape `[..]`; weight: `[vocab, hidden]`;
/// returns `[.., hidden]` in the dtype of `weight`. Every id must be below
/// `vocab`.
pub fn embedding(ids: &Tensor, weight: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding";
    check::hip_dtype(OP, weight)?;
    check::rank(OP, weight, 2)?;
    check::same_device(OP, weight, ids)?;
    check::indices_in_range(OP, ids, weight.dims()[0])?;
    let mut out_dims = ids.dims().to_vec();
    out_dims.push(weight.dims()[1]);
    ids.flatten_all()
        .and_then(|flat| weight.index_select(&flat, 0))
        .and_then(|rows| rows.reshape(out_dims))
        .in_op(OP)
}
