//! Zero-copy access to CPU tensor data for the kernels this crate implements
//! itself.

use crate::error::InOp;
use crate::{Error, Result};
use candle_core::{Storage, Tensor, WithDType};

/// Runs `f` on the contiguous data of `t`, which must live on the CPU and
/// have dtype `T`. Only a non-contiguous `t` is copied.
pub(crate) fn with_slice<T: WithDType, R>(
    op: &'static str,
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> Result<R> {
    let t = t.contiguous().in_op(op)?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::InvalidArgument {
            op,
            message: format!(
                "expected a CPU tensor, got one on {:?}",
                t.device().location()
            ),
        });
    };
    let data = cpu.as_slice::<T>().in_op(op)?;
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::InvalidArgument {
            op,
            message: "tensor is not contiguous after `contiguous()`".into(),
        })?;
    Ok(f(&data[start..end]))
}

/// The float types our own CPU kernels compute in: half-precision inputs are
/// widened to f32, f64 stays f64.
pub(crate) trait Real:
    num_traits::Float
    + num_traits::NumAssign
    + WithDType
    + std::iter::Sum
    + Send
    + Sync
    + std::fmt::Debug
{
}

impl Real for f32 {}
impl Real for f64 {}

/// Dot product with independent partial sums so that LLVM can vectorise it.
#[inline]
pub(crate) fn dot<A: Real>(a: &[A], b: &[A]) -> A {
    const LANES: usize = 8;
    let mut partial = [A::zero(); LANES];
    let chunks = a.len() / LANES * LANES;
    for (ca, cb) in a[..chunks]
        .chunks_exact(LANES)
        .zip(b[..chunks].chunks_exact(LANES))
    {
        for lane in 0..LANES {
            partial[lane] += ca[lane] * cb[lane];
        }
    }
    let mut total = partial.iter().fold(A::zero(), |acc, &p| acc + p);
    for (&x, &y) in a[chunks..].iter().zip(&b[chunks..]) {
        total += x * y;
    }
    total
}
