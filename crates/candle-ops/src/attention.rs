//! Scaled dot-product attention with grouped-query broadcast and masks.
//!
//! On the CPU it is a tiled online-softmax kernel (the FlashAttention
//! recurrence): each block of query rows streams over the keys in tiles,
//! keeping a running maximum, normaliser and weighted sum, so memory is
//! O(tile) per row and the `[seq, kv]` score matrix never exists. Other
//! devices compose upstream matmul/softmax.

use crate::check;
use crate::cpu::{dot, with_slice, Real};
use crate::error::InOp;
use crate::nn::in_f32_if_half;
use crate::{Error, Result};
use candle_core::{DType, Device, Storage, Tensor, WithDType, D};
use rayon::prelude::*;

/// Query rows that share one pass over a key tile (keeps the tile in cache).
const QUERY_BLOCK: usize = 16;
/// Keys scored at a time per query row.
const KEY_TILE: usize = 64;

#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    head_dim: usize,
    v_dim: usize,
}

/// A mask tensor broadcast to `[batch, heads, q_len, kv_len]` through
/// strides (0 on broadcast dimensions), read in place.
struct StridedMask<'a, T> {
    data: &'a [T],
    offset: usize,
    strides: [usize; 4],
}

impl<T: Copy> StridedMask<'_, T> {
    #[inline]
    fn get(&self, b: usize, h: usize, i: usize, j: usize) -> T {
        let s = &self.strides;
        self.data[self.offset + b * s[0] + h * s[1] + i * s[2] + j * s[3]]
    }
}

enum MaskKind<'a, A> {
    None,
    /// Query `i` sees keys `0..=i + kv_len - q_len` (bottom-right aligned).
    Causal,
    /// Nonzero = the query may attend to the key (PyTorch's boolean masks).
    Keep(StridedMask<'a, u8>),
    /// Added to the scaled scores (`-inf` removes a key).
    Additive(StridedMask<'a, A>),
}

/// Attention weights softmax(q·kᵀ·scale + mask) applied to v.
///
/// q: [batch, heads, seq, head_dim]; k: [batch, kv_heads, kv_len, head_dim];
/// v: [batch, kv_heads, kv_len, v_dim]; `heads` must be a multiple of
/// `kv_heads` (grouped-query attention: query head `h` reads kv head
/// `h / (heads / kv_heads)`). mask: broadcastable to [batch, heads, seq,
/// kv_len], either `u8` (nonzero = attend, like PyTorch's boolean masks) or a
/// float dtype added to the scores. Returns [batch, heads, seq, v_dim].
/// Rows whose keys are all masked out give zeros.
///
/// Matches `torch.nn.functional.scaled_dot_product_attention(q, k, v,
/// attn_mask=mask, scale=scale, enable_gqa=True)`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// let q = Tensor::randn(0f32, 1., (1, 4, 3, 8), &Device::Cpu)?;
/// let kv = Tensor::randn(0f32, 1., (1, 2, 5, 8), &Device::Cpu)?;
/// let out = candle_ops::scaled_dot_product_attention(&q, &kv, &kv, None, 8f64.powf(-0.5))?;
/// assert_eq!(out.dims(), &[1, 4, 3, 8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    const OP: &str = "scaled_dot_product_attention";
    let dims = check_qkv(OP, q, k, v)?;
    let mask = match mask {
        None => None,
        Some(m) => Some(check_mask(OP, q, m, &dims)?),
    };
    attention(OP, q, k, v, mask.as_ref(), false, scale, &dims)
}

/// Causal attention without a mask tensor: query `i` attends keys
/// `0..=i + kv_len - seq`, i.e. the queries are the last `seq` positions of
/// the `kv_len` keys (the KV-cache case; equal to PyTorch's `is_causal=True`
/// when `seq == kv_len`). Shapes as in [`scaled_dot_product_attention`].
pub fn scaled_dot_product_attention_causal(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    const OP: &str = "scaled_dot_product_attention_causal";
    let dims = check_qkv(OP, q, k, v)?;
    if dims.q_len > dims.kv_len {
        return Err(Error::InvalidArgument {
            op: OP,
            message: format!(
                "causal attention needs at least as many keys ({}) as queries ({})",
                dims.kv_len, dims.q_len
            ),
        });
    }
    attention(OP, q, k, v, None, true, scale, &dims)
}

/// The boolean (`u8`, 1 = attend) causal mask `[q_len, kv_len]` with the
/// alignment of [`scaled_dot_product_attention_causal`].
pub fn causal_mask(q_len: usize, kv_len: usize, device: &Device) -> Result<Tensor> {
    const OP: &str = "causal_mask";
    if q_len > kv_len {
        return Err(Error::InvalidArgument {
            op: OP,
            message: format!("q_len {q_len} exceeds kv_len {kv_len}"),
        });
    }
    let offset = kv_len - q_len;
    let data: Vec<u8> = (0..q_len)
        .flat_map(|i| (0..kv_len).map(move |j| u8::from(j <= i + offset)))
        .collect();
    Tensor::from_vec(data, (q_len, kv_len), device).in_op(OP)
}

fn check_qkv(op: &'static str, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Dims> {
    check::float(op, q)?;
    for t in [q, k, v] {
        check::rank(op, t, 4)?;
    }
    for t in [k, v] {
        check::same_device(op, q, t)?;
        check::same_dtype(op, q, t)?;
    }
    let (batch, heads, q_len, head_dim) = q.dims4().in_op(op)?;
    let (kb, kv_heads, kv_len, kd) = k.dims4().in_op(op)?;
    let (vb, vh, vl, v_dim) = v.dims4().in_op(op)?;
    let k_ok = kb == batch && kd == head_dim && kv_heads > 0 && heads % kv_heads == 0;
    if !k_ok {
        return Err(Error::ShapeMismatch {
            op,
            expected: format!("k: [{batch}, kv_heads dividing {heads}, kv_len, {head_dim}]"),
            got: k.shape().clone(),
        });
    }
    if (vb, vh, vl) != (batch, kv_heads, kv_len) {
        return Err(Error::ShapeMismatch {
            op,
            expected: format!("v: [{batch}, {kv_heads}, {kv_len}, v_dim]"),
            got: v.shape().clone(),
        });
    }
    Ok(Dims {
        batch,
        heads,
        kv_heads,
        q_len,
        kv_len,
        head_dim,
        v_dim,
    })
}

/// Validates the mask and returns it broadcast (as a view) to the full
/// `[batch, heads, q_len, kv_len]` shape, as u8 or in the compute dtype.
fn check_mask(op: &'static str, q: &Tensor, mask: &Tensor, d: &Dims) -> Result<Tensor> {
    check::same_device(op, q, mask)?;
    check::hip_dtype(op, mask)?;
    let target = [d.batch, d.heads, d.q_len, d.kv_len];
    let mask_dtype = match mask.dtype() {
        DType::U8 => DType::U8,
        // Additive masks are read by the kernel in its compute dtype.
        dtype if dtype.is_float() && q.dtype() == DType::F64 => DType::F64,
        dtype if dtype.is_float() => DType::F32,
        dtype => {
            return Err(Error::UnsupportedDTypeForOp {
                op,
                dtype,
                reason: "masks are u8 (boolean) or a float dtype (additive)",
            })
        }
    };
    // Convert before broadcasting so a small mask is never expanded in memory.
    mask.to_dtype(mask_dtype)
        .and_then(|m| m.broadcast_as(target.as_slice()))
        .map_err(|_| Error::ShapeMismatch {
            op,
            expected: format!("a mask broadcastable to {target:?}"),
            got: mask.shape().clone(),
        })
}

#[allow(clippy::too_many_arguments)]
fn attention(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: f64,
    dims: &Dims,
) -> Result<Tensor> {
    if !q.device().is_cpu() {
        return attention_composed(op, q, k, v, mask, causal, scale, dims);
    }
    match q.dtype() {
        DType::F64 => attention_cpu::<f64>(op, q, k, v, mask, causal, scale, dims),
        // Half precision is widened once here and the result rounded once.
        _ => attention_cpu::<f32>(op, q, k, v, mask, causal, scale, dims)?
            .to_dtype(q.dtype())
            .in_op(op),
    }
}

#[allow(clippy::too_many_arguments)]
fn attention_cpu<A: Real>(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: f64,
    d: &Dims,
) -> Result<Tensor> {
    let [q, k, v] = [q, k, v].map(|t| t.to_dtype(<A as WithDType>::DTYPE));
    let (q, k, v) = (q.in_op(op)?, k.in_op(op)?, v.in_op(op)?);
    let scale = A::from(scale).unwrap_or_else(A::one);
    let out = with_slice(op, &q, |qs: &[A]| {
        with_slice(op, &k, |ks: &[A]| {
            with_slice(op, &v, |vs: &[A]| {
                let qkv = Qkv {
                    q: qs,
                    k: ks,
                    v: vs,
                };
                match mask {
                    None if causal => Ok(run_kernel(&qkv, &MaskKind::Causal, scale, d)),
                    None => Ok(run_kernel(&qkv, &MaskKind::None, scale, d)),
                    Some(m) if m.dtype() == DType::U8 => with_strided::<u8, _>(op, m, |sm| {
                        run_kernel(&qkv, &MaskKind::Keep(sm), scale, d)
                    }),
                    Some(m) => with_strided::<A, _>(op, m, |sm| {
                        run_kernel(&qkv, &MaskKind::Additive(sm), scale, d)
                    }),
                }
            })
        })
    })????;
    Tensor::from_vec(out, (d.batch, d.heads, d.q_len, d.v_dim), &Device::Cpu).in_op(op)
}

fn with_strided<T: WithDType, R>(
    op: &'static str,
    m: &Tensor,
    f: impl FnOnce(StridedMask<'_, T>) -> R,
) -> Result<R> {
    let (storage, layout) = m.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::InvalidArgument {
            op,
            message: "mask must be on the CPU with the other operands".into(),
        });
    };
    let data = cpu.as_slice::<T>().in_op(op)?;
    let s = layout.stride();
    Ok(f(StridedMask {
        data,
        offset: layout.start_offset(),
        strides: [s[0], s[1], s[2], s[3]],
    }))
}

struct Qkv<'a, A> {
    q: &'a [A],
    k: &'a [A],
    v: &'a [A],
}

fn run_kernel<A: Real>(qkv: &Qkv<'_, A>, mask: &MaskKind<'_, A>, scale: A, d: &Dims) -> Vec<A> {
    let mut out = vec![A::zero(); d.batch * d.heads * d.q_len * d.v_dim];
    if out.is_empty() {
        return out;
    }
    let group = d.heads / d.kv_heads;
    out.par_chunks_mut(d.q_len * d.v_dim)
        .enumerate()
        .for_each(|(bh, out_bh)| {
            let (b, h) = (bh / d.heads, bh % d.heads);
            let kv_head = b * d.kv_heads + h / group;
            let k = &qkv.k[kv_head * d.kv_len * d.head_dim..][..d.kv_len * d.head_dim];
            let v = &qkv.v[kv_head * d.kv_len * d.v_dim..][..d.kv_len * d.v_dim];
            let q = &qkv.q[bh * d.q_len * d.head_dim..][..d.q_len * d.head_dim];
            out_bh
                .par_chunks_mut(QUERY_BLOCK * d.v_dim)
                .enumerate()
                .for_each(|(block, out_block)| {
                    let first_row = block * QUERY_BLOCK;
                    let rows = out_block.len() / d.v_dim;
                    let q_block = &q[first_row * d.head_dim..][..rows * d.head_dim];
                    let head = HeadRef {
                        b,
                        h,
                        first_row,
                        k,
                        v,
                    };
                    query_block(q_block, out_block, &head, mask, scale, d);
                });
        });
    out
}

struct HeadRef<'a, A> {
    b: usize,
    h: usize,
    first_row: usize,
    k: &'a [A],
    v: &'a [A],
}

/// Online softmax for up to QUERY_BLOCK query rows of one head.
fn query_block<A: Real>(
    q_block: &[A],
    out: &mut [A],
    head: &HeadRef<'_, A>,
    mask: &MaskKind<'_, A>,
    scale: A,
    d: &Dims,
) {
    let rows = q_block.len() / d.head_dim;
    let causal_offset = d.kv_len - d.q_len.min(d.kv_len);
    let mut running_max = [A::neg_infinity(); QUERY_BLOCK];
    let mut normaliser = [A::zero(); QUERY_BLOCK];
    let mut scores = [A::zero(); KEY_TILE];
    // `out` doubles as the accumulator of the unnormalised weighted values.
    let keys_needed = match mask {
        MaskKind::Causal => (head.first_row + rows + causal_offset).min(d.kv_len),
        _ => d.kv_len,
    };
    for tile_start in (0..keys_needed).step_by(KEY_TILE) {
        let tile_len = KEY_TILE.min(d.kv_len - tile_start);
        for r in 0..rows {
            let i = head.first_row + r;
            let q_row = &q_block[r * d.head_dim..][..d.head_dim];
            let mut tile_max = A::neg_infinity();
            for (t, score) in scores[..tile_len].iter_mut().enumerate() {
                let j = tile_start + t;
                let k_row = &head.k[j * d.head_dim..][..d.head_dim];
                *score = match mask {
                    MaskKind::None => dot(q_row, k_row) * scale,
                    MaskKind::Causal if j > i + causal_offset => A::neg_infinity(),
                    MaskKind::Causal => dot(q_row, k_row) * scale,
                    MaskKind::Keep(m) if m.get(head.b, head.h, i, j) == 0 => A::neg_infinity(),
                    MaskKind::Keep(_) => dot(q_row, k_row) * scale,
                    MaskKind::Additive(m) => {
                        dot(q_row, k_row) * scale + m.get(head.b, head.h, i, j)
                    }
                };
                tile_max = num_traits::Float::max(tile_max, *score);
            }
            if tile_max == A::neg_infinity() {
                continue;
            }
            let new_max = num_traits::Float::max(running_max[r], tile_max);
            let correction = (running_max[r] - new_max).exp();
            let acc = &mut out[r * d.v_dim..][..d.v_dim];
            if correction != A::one() {
                normaliser[r] *= correction;
                acc.iter_mut().for_each(|a| *a *= correction);
            }
            for (t, &score) in scores[..tile_len].iter().enumerate() {
                let p = (score - new_max).exp();
                if p == A::zero() {
                    continue;
                }
                normaliser[r] += p;
                let v_row = &head.v[(tile_start + t) * d.v_dim..][..d.v_dim];
                for (a, &vv) in acc.iter_mut().zip(v_row) {
                    *a += p * vv;
                }
            }
            running_max[r] = new_max;
        }
    }
    for r in 0..rows {
        let acc = &mut out[r * d.v_dim..][..d.v_dim];
        if normaliser[r] > A::zero() {
            let inv = normaliser[r].recip();
            acc.iter_mut().for_each(|a| *a *= inv);
        }
    }
}

/// Device-agnostic composition for CUDA and Metal.
#[allow(clippy::too_many_arguments)]
fn attention_composed(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: f64,
    d: &Dims,
) -> Result<Tensor> {
    let causal_mask = if causal {
        Some(causal_mask(d.q_len, d.kv_len, q.device())?)
    } else {
        None
    };
    let mask = mask.or(causal_mask.as_ref());
    let group = d.heads / d.kv_heads;
    in_f32_if_half(op, q, |q32| {
        let expand = |t: &Tensor| -> candle_core::Result<Tensor> {
            let (b, hk, n, dim) = t.dims4()?;
            t.to_dtype(q32.dtype())?
                .unsqueeze(2)?
                .broadcast_as((b, hk, group, n, dim))?
                .reshape((b, hk * group, n, dim))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let mut scores = (q32.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?;
        if let Some(m) = mask {
            let m = m.broadcast_as(scores.shape())?;
            scores = if m.dtype() == DType::U8 {
                let neg_inf = Tensor::full(f32::NEG_INFINITY, scores.shape(), scores.device())?
                    .to_dtype(scores.dtype())?;
                m.where_cond(&scores, &neg_inf)?
            } else {
                (scores + m.to_dtype(q32.dtype())?)?
            };
        }
        let max = scores.max_keepdim(D::Minus1)?;
        // A fully masked row has max = -inf; subtracting 0 instead keeps it
        // at zero weights rather than NaN, as on the CPU.
        let max = max.broadcast_maximum(
            &Tensor::new(f32::MIN, scores.device())?.to_dtype(scores.dtype())?,
        )?;
        let weights = scores.broadcast_sub(&max)?.exp()?;
        let sum = weights.sum_keepdim(D::Minus1)?;
        let sum = sum.broadcast_maximum(
            &Tensor::new(f32::MIN_POSITIVE, scores.device())?.to_dtype(scores.dtype())?,
        )?;
        weights.broadcast_div(&sum)?.matmul(&v.contiguous()?)
    })
}
