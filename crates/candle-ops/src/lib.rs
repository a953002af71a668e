//! The HIP-19 operation surface on top of upstream candle.
//!
//! Upstream `candle-core`/`candle-nn` already provide most tensor kernels;
//! this crate adds what HIP-19 requires and upstream lacks or defines
//! differently:
//!
//! - NumPy-convention dtype promotion across the seven HIP-19 dtypes
//!   ([`result_type`]) and promoted arithmetic and comparisons.
//! - Integer semantics where upstream has none (e.g. `neg`, `exp` or
//!   `matmul` on integer tensors panic or fail upstream).
//! - Transformers-convention [`apply_rotary_emb`] with `[seq, head_dim]`
//!   tables and its interleaved variant.
//! - [`scaled_dot_product_attention`] with grouped-query broadcast, boolean or
//!   additive masks and a tiled online-softmax CPU kernel that never
//!   materialises the `[seq, kv]` score matrix.
//! - [`rms_norm`], [`layer_norm`] with optional bias and the fused
//!   [`rms_norm_residual`].
//! - conv/pool/shape operations with the standard's signatures and PyTorch's
//!   semantics (e.g. [`chunk`] splits like `torch.chunk`).
//!
//! Every operation returns [`Error`], which names the operation and what was
//! expected and found.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! let a = Tensor::new(&[1u8, 2, 3], &Device::Cpu)?;
//! let b = Tensor::new(&[0.5f32, 0.5, 0.5], &Device::Cpu)?;
//! // u8 + f32 -> f32, as in NumPy.
//! let c = candle_ops::add(&a, &b)?;
//! assert_eq!(c.to_vec1::<f32>()?, [1.5, 2.5, 3.5]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod attention;
mod check;
mod conv;
mod cpu;
mod dtype;
mod elementwise;
mod error;
mod linalg;
mod nn;
mod norm;
mod reduce;
mod rope;
mod shape;

pub use attention::{
    causal_mask, scaled_dot_product_attention, scaled_dot_product_attention_causal,
};
pub use conv::{avg_pool2d, conv2d, max_pool2d};
pub use dtype::{result_type, HIP_DTYPES};
pub use elementwise::{
    abs, add, div, eq, exp, gelu, gt, log, lt, mul, neg, recip, relu, silu, sqrt, sub, tanh,
};
pub use error::{Error, Result};
pub use linalg::{broadcast_as, contiguous, matmul, transpose};
pub use nn::{embedding, log_softmax, softmax};
pub use norm::{layer_norm, rms_norm, rms_norm_residual};
pub use reduce::{argmax, argmin, max, mean, min, sum};
pub use rope::{apply_rotary_emb, apply_rotary_emb_interleaved, rotary_embedding};
pub use shape::{
    cat, chunk, gather, index_select, narrow, reshape, scatter, squeeze, stack, unsqueeze,
};
