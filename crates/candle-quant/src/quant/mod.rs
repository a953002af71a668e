//! ggml block formats: layouts, quantize, dequantize and the scalar reference dot products.
//!
//! Each `<format>.rs` holds one `#[repr(C)]` block struct whose layout is byte-for-byte
//! ggml's, its quantizer, its dequantizer and the scalar dot product against 8-bit
//! activation blocks. The scalar dot product *is* the specification the SIMD kernels in
//! [`crate::kernels`] are tested against.
//!
//! Activations are quantized once per matmul, to exactly the blocks llama.cpp's x86 CPU
//! backend makes: [`BlockQ8_0`] for Q4_0/Q5_0/Q8_0, [`BlockQ8_1`] for Q4_1/Q5_1 and
//! [`BlockQ8K`] (256 values) for the K-quants. F16 and BF16 weights (`half::f16`,
//! `half::bf16` as one-value blocks) take the f32 activations as they are.

mod error;
mod half_precision;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_1;
mod q8_k;
mod scale_search;

pub use error::QuantError;
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
// For the SIMD kernels only; the scalar path unpacks inside the block types.
#[cfg(any(
    target_arch = "x86",
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
))]
pub(crate) use q4_k::unpack_scales_mins;
pub use q4_k::BlockQ4K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;
pub use q8_k::BlockQ8K;

use bytemuck::Pod;

/// Elements per block of the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).
pub const QK: usize = 32;
/// Elements per super-block of the K-quants (Q4_K, Q5_K, Q6_K, Q8_K).
pub const QK_K: usize = 256;

/// Weight storage types `QLinear` accepts: plain floats and the ggml block formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl QuantType {
    /// Every supported type, in ggml's numbering order.
    pub const ALL: [QuantType; 11] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
        QuantType::BF16,
    ];

    /// The ggml type id (`enum ggml_type`) as stored in GGUF tensor infos.
    pub fn ggml_id(self) -> u32 {
        match self {
            QuantType::F32 => 0,
            QuantType::F16 => 1,
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q5_0 => 6,
            QuantType::Q5_1 => 7,
            QuantType::Q8_0 => 8,
            QuantType::Q4K => 12,
            QuantType::Q5K => 13,
            QuantType::Q6K => 14,
            QuantType::BF16 => 30,
        }
    }

    /// Inverse of [`QuantType::ggml_id`]; `None` for ggml types this crate has no kernels for.
    pub fn from_ggml_id(id: u32) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|t| t.ggml_id() == id)
    }

    /// ggml's name for the type, e.g. `"q4_K"`.
    pub fn name(self) -> &'static str {
        match self {
            QuantType::F32 => "f32",
            QuantType::F16 => "f16",
            QuantType::BF16 => "bf16",
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q5_0 => "q5_0",
            QuantType::Q5_1 => "q5_1",
            QuantType::Q8_0 => "q8_0",
            QuantType::Q4K => "q4_K",
            QuantType::Q5K => "q5_K",
            QuantType::Q6K => "q6_K",
        }
    }

    /// Number of values one block encodes (1 for the float types).
    pub fn block_elems(self) -> usize {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => 1,
            QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 | QuantType::Q5_1 => QK,
            QuantType::Q8_0 => QK,
            QuantType::Q4K | QuantType::Q5K | QuantType::Q6K => QK_K,
        }
    }

    /// Bytes one block occupies.
    pub fn block_bytes(self) -> usize {
        use std::mem::size_of;
        match self {
            QuantType::F32 => 4,
            QuantType::F16 | QuantType::BF16 => 2,
            QuantType::Q4_0 => size_of::<BlockQ4_0>(),
            QuantType::Q4_1 => size_of::<BlockQ4_1>(),
            QuantType::Q5_0 => size_of::<BlockQ5_0>(),
            QuantType::Q5_1 => size_of::<BlockQ5_1>(),
            QuantType::Q8_0 => size_of::<BlockQ8_0>(),
            QuantType::Q4K => size_of::<BlockQ4K>(),
            QuantType::Q5K => size_of::<BlockQ5K>(),
            QuantType::Q6K => size_of::<BlockQ6K>(),
        }
    }

    /// Whether the type is a block format (as opposed to plain floats).
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes of one row of `elems` values.
    ///
    /// Fails when `elems` is not a multiple of the block size.
    pub fn row_bytes(self, elems: usize) -> Result<usize, QuantError> {
        if !elems.is_multiple_of(self.block_elems()) {
            return Err(QuantError::RowNotBlockMultiple {
                ty: self,
                row_len: elems,
                block_elems: self.block_elems(),
            });
        }
        (elems / self.block_elems())
            .checked_mul(self.block_bytes())
            .ok_or(QuantError::SizeOverflow { ty: self, elems })
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An activation block, the right-hand side of every dot product: 8-bit blocks for the
/// block formats, `f32` itself for F16 and BF16.
pub trait ActBlock: Pod + Send + Sync {
    /// Values per block.
    const ELEMS: usize;
    /// Quantizes exactly `Self::ELEMS` values.
    fn quantize(src: &[f32]) -> Self;
    /// Writes the block's `Self::ELEMS` values to `dst[..Self::ELEMS]`.
    fn dequantize(&self, dst: &mut [f32]);
}

/// A ggml weight block format with its scalar reference kernels.
///
/// Implementations guarantee `size_of::<Self>()` is ggml's block size and that every bit
/// pattern is a valid block (the `Pod` bound), so weight bytes from a file can be viewed
/// as `&[Self]` without validation beyond length and alignment.
pub trait BlockFormat: Pod + Send + Sync {
    /// The `QuantType` this block implements.
    const TYPE: QuantType;
    /// Values per block.
    const ELEMS: usize;
    /// The activation block this format's dot product consumes.
    type Act: ActBlock;

    /// Quantizes exactly `Self::ELEMS` values (`src.len() == Self::ELEMS`).
    fn quantize(src: &[f32]) -> Self;
    /// Writes the block's `Self::ELEMS` values to `dst[..Self::ELEMS]`.
    fn dequantize(&self, dst: &mut [f32]);
    /// Reference dot product of weight blocks with activation blocks covering the same
    /// values (`acts.len() * Act::ELEMS == weights.len() * Self::ELEMS`).
    fn dot_ref(weights: &[Self], acts: &[Self::Act]) -> f32;
}

/// Rounds half away from zero, as ggml's `roundf` and gguf-py's `np_roundf` do.
#[inline]
pub(crate) fn round_away(x: f32) -> f32 {
    x.round()
}

/// Reciprocal that maps 0 to 0, so all-zero blocks quantize to zeros instead of NaN.
#[inline]
pub(crate) fn inv_or_zero(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// Views raw weight bytes as blocks; `None` if the length is not a whole number of
/// blocks or the pointer is not aligned for `B`.
pub fn cast_blocks<B: Pod>(bytes: &[u8]) -> Option<&[B]> {
    bytemuck::try_cast_slice(bytes).ok()
}

/// Quantizes `src` (a row, or several rows back to back) into `ty` blocks.
///
/// src: [n] with n a multiple of `ty.block_elems()`.
///
/// ```
/// use candle_quant::quant::{quantize, dequantize, QuantType};
/// let row: Vec<f32> = (0..64).map(|i| i as f32 / 8.0 - 4.0).collect();
/// let bytes = quantize(QuantType::Q8_0, &row).unwrap();
/// assert_eq!(bytes.len(), 2 * 34);
/// let back = dequantize(QuantType::Q8_0, &bytes, row.len()).unwrap();
/// assert!(row.iter().zip(&back).all(|(a, b)| (a - b).abs() < 0.02));
/// ```
pub fn quantize(ty: QuantType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let n_bytes = ty.row_bytes(src.len())?;
    let out = match ty {
        QuantType::F32 => bytemuck::cast_slice(src).to_vec(),
        QuantType::F16 => quantize_blocks::<half::f16>(src),
        QuantType::BF16 => quantize_blocks::<half::bf16>(src),
        QuantType::Q4_0 => quantize_blocks::<BlockQ4_0>(src),
        QuantType::Q4_1 => quantize_blocks::<BlockQ4_1>(src),
        QuantType::Q5_0 => quantize_blocks::<BlockQ5_0>(src),
        QuantType::Q5_1 => quantize_blocks::<BlockQ5_1>(src),
        QuantType::Q8_0 => quantize_blocks::<BlockQ8_0>(src),
        QuantType::Q4K => quantize_blocks::<BlockQ4K>(src),
        QuantType::Q5K => quantize_blocks::<BlockQ5K>(src),
        QuantType::Q6K => quantize_blocks::<BlockQ6K>(src),
    };
    debug_assert_eq!(out.len(), n_bytes);
    Ok(out)
}

/// Dequantizes `n_elems` values of type `ty` from `bytes`.
///
/// Fails when `bytes.len()` is not exactly the size of `n_elems` values of `ty`.
pub fn dequantize(ty: QuantType, bytes: &[u8], n_elems: usize) -> Result<Vec<f32>, QuantError> {
    let expected = ty.row_bytes(n_elems)?;
    if bytes.len() != expected {
        return Err(QuantError::ByteLength {
            op: "dequantize",
            ty,
            expected,
            got: bytes.len(),
        });
    }
    let mut out = vec![0f32; n_elems];
    match ty {
        QuantType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        QuantType::F16 => dequantize_blocks::<half::f16>(bytes, &mut out),
        QuantType::BF16 => dequantize_blocks::<half::bf16>(bytes, &mut out),
        QuantType::Q4_0 => dequantize_blocks::<BlockQ4_0>(bytes, &mut out),
        QuantType::Q4_1 => dequantize_blocks::<BlockQ4_1>(bytes, &mut out),
        QuantType::Q5_0 => dequantize_blocks::<BlockQ5_0>(bytes, &mut out),
        QuantType::Q5_1 => dequantize_blocks::<BlockQ5_1>(bytes, &mut out),
        QuantType::Q8_0 => dequantize_blocks::<BlockQ8_0>(bytes, &mut out),
        QuantType::Q4K => dequantize_blocks::<BlockQ4K>(bytes, &mut out),
        QuantType::Q5K => dequantize_blocks::<BlockQ5K>(bytes, &mut out),
        QuantType::Q6K => dequantize_blocks::<BlockQ6K>(bytes, &mut out),
    }
    Ok(out)
}

fn quantize_blocks<B: BlockFormat>(src: &[f32]) -> Vec<u8> {
    let blocks: Vec<B> = src.chunks_exact(B::ELEMS).map(B::quantize).collect();
    bytemuck::cast_slice(&blocks).to_vec()
}

/// Works on unaligned bytes too: blocks are copied out one at a time.
fn dequantize_blocks<B: BlockFormat>(bytes: &[u8], out: &mut [f32]) {
    let block_bytes = std::mem::size_of::<B>();
    for (chunk, dst) in bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(B::ELEMS))
    {
        let block: B = bytemuck::pod_read_unaligned(chunk);
        block.dequantize(dst);
    }
}

/// Quantizes activations `src` to 8-bit blocks.
///
/// src: [n] with n a multiple of `A::ELEMS`.
pub fn quantize_activations<A: ActBlock>(src: &[f32]) -> Vec<A> {
    src.chunks_exact(A::ELEMS).map(A::quantize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_packing_round_trips_all_6_bit_values() {
        for start in 0..64u8 {
            let sc: [u8; 8] = std::array::from_fn(|j| (start + 7 * j as u8) % 64);
            let m: [u8; 8] = std::array::from_fn(|j| (start + 13 * j as u8 + 5) % 64);
            assert_eq!(
                q4_k::unpack_scales_mins(&q4_k::pack_scales_mins(&sc, &m)),
                (sc, m)
            );
        }
    }
}
