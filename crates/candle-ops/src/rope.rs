//! Rotary position embedding with full-width `[seq, head_dim]` tables, as in
//! HIP-19 and Hugging Face transformers.

use crate::check;
use crate::error::InOp;
use crate::{Error, Result};
use candle_core::{Tensor, D};

fn check_args(op: &'static str, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<()> {
    check::float(op, x)?;
    check::rank(op, x, 4)?;
    for table in [cos, sin] {
        check::same_device(op, x, table)?;
        check::same_dtype(op, x, table)?;
    }
    let (b, _, s, d) = x.dims4().in_op(op)?;
    if d % 2 != 0 {
        return Err(Error::ShapeMismatch {
            op,
            expected: "x: [batch, heads, seq, head_dim] with an even head_dim".into(),
            got: x.shape().clone(),
        });
    }
    for table in [cos, sin] {
        let ok = table.dims() == [s, d] || table.dims() == [b, s, d];
        if !ok {
            return Err(Error::ShapeMismatch {
                op,
                expected: format!(
                    "cos/sin: [{s}, {d}] or [{b}, {s}, {d}] to match x {:?}",
                    x.shape()
                ),
                got: table.shape().clone(),
            });
        }
    }
    Ok(())
}

/// `[s, d]` tables broadcast over batch and heads; `[b, s, d]` tables (one
/// set of positions per sequence of a batch) broadcast over heads.
fn for_heads(table: &Tensor) -> candle_core::Result<Tensor> {
    if table.rank() == 3 {
        table.unsqueeze(1)
    } else {
        Ok(table.clone())
    }
}

/// Applies RoPE with the rotate-half convention of Hugging Face transformers:
/// `x * cos + rotate_half(x) * sin`, where `rotate_half` maps the halves
/// `(x1, x2)` of the last dimension to `(-x2, x1)`.
///
/// x: [batch, heads, seq, head_dim]; cos, sin: [seq, head_dim] or
/// [batch, seq, head_dim], same dtype as x.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// let x = Tensor::ones((1, 1, 4, 64), DType::F32, &Device::Cpu)?;
/// let cos = Tensor::ones((4, 64), DType::F32, &Device::Cpu)?;
/// let sin = Tensor::zeros((4, 64), DType::F32, &Device::Cpu)?;
/// // cos = 1, sin = 0 is the identity rotation.
/// let y = candle_ops::apply_rotary_emb(&x, &cos, &sin)?;
/// let diff = (&x - &y)?.abs()?.sum_all()?.to_scalar::<f32>()?;
/// assert_eq!(diff, 0.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apply_rotary_emb(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    const OP: &str = "apply_rotary_emb";
    check_args(OP, x, cos, sin)?;
    let half = x.dim(D::Minus1).in_op(OP)? / 2;
    (|| {
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&for_heads(cos)?)?
            .add(&rotated.broadcast_mul(&for_heads(sin)?)?)
    })()
    .in_op(OP)
}

/// HIP-19's name for [`apply_rotary_emb`].
pub fn rotary_embedding(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    apply_rotary_emb(x, cos, sin)
}

/// Applies RoPE with the interleaved (GPT-J / original RoFormer) convention:
/// the pairs `(x[2i], x[2i+1])` are rotated, i.e. `x * cos +
/// rotate_every_two(x) * sin` with `rotate_every_two` mapping each pair
/// `(a, b)` to `(-b, a)`.
///
/// x: [batch, heads, seq, head_dim]; cos, sin: [seq, head_dim] or
/// [batch, seq, head_dim] (each frequency repeated for both members of its pair).
pub fn apply_rotary_emb_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    const OP: &str = "apply_rotary_emb_interleaved";
    check_args(OP, x, cos, sin)?;
    let (b, h, s, d) = x.dims4().in_op(OP)?;
    (|| {
        let pairs = x.reshape((b, h, s, d / 2, 2))?;
        let even = pairs.narrow(D::Minus1, 0, 1)?;
        let odd = pairs.narrow(D::Minus1, 1, 1)?;
        let rotated = Tensor::cat(&[&odd.neg()?, &even], D::Minus1)?.reshape((b, h, s, d))?;
        x.broadcast_mul(&for_heads(cos)?)?
            .add(&rotated.broadcast_mul(&for_heads(sin)?)?)
    })()
    .in_op(OP)
}
