//! The 32-value activation blocks, bit-identical to what llama.cpp's x86 CPU backend
//! (`quantize_row_q8_0` / `quantize_row_q8_1` in ggml-cpu/arch/x86) produces: Q8_0 for
//! the weight formats without an offset (Q4_0, Q5_0, Q8_0) and Q8_1 for Q4_1/Q5_1.
//!
//! The x86 path differs from ggml's scalar reference (which gguf-py follows) in two
//! ways that change quants: it multiplies by `127 / amax` instead of `1 / d`, and it
//! rounds half to even (`_mm256_round_ps`) instead of half away from zero. Matching it
//! is what makes our dot products differ from llama.cpp's only by summation order.

use half::f16;

use super::{ActBlock, BlockQ8_0, QK};

/// ggml Q8_1: 32 values `x[i] ≈ d * qs[i]` plus `s = f16(d_f32 * Σ qs)`, the block sum
/// the offset formats (Q4_1, Q5_1) multiply by their minimum.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ8_1 {}
unsafe impl bytemuck::Pod for BlockQ8_1 {}

/// The f32 scale `amax / 127`, the quants and their sum, as ggml's x86 quantizer
/// computes them. The quants never reach -128 (|x · 127/amax| <= 127 up to one
/// rounding), which keeps the AVX2 `maddubs` sign trick free of saturation.
///
/// Written so that LLVM vectorizes it (a prefill quantizes every matmul input; the
/// scalar loops were 7% of SmolLM2's pp512): 8-lane maxima by compare and select
/// (`f32::max` stayed scalar), exact and order-free, which skip NaN as `max` does;
/// every quant the same IEEE multiply and round as element by element.
fn quantize_x86(src: &[f32]) -> (f32, [i8; QK], i32) {
    let mut values = [0f32; QK];
    values.copy_from_slice(&src[..QK]);
    let mut lane_max = [0f32; 8];
    for chunk in values.chunks_exact(8) {
        for (m, v) in lane_max.iter_mut().zip(chunk) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let amax = lane_max.iter().fold(0f32, |m, &v| m.max(v));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let wide = values.map(|v| {
        let q = (v * id).round_ties_even().clamp(-127.0, 127.0);
        // NaN becomes 0 as `as` would make it; the saturating `as` itself stayed scalar.
        let q = if q.is_nan() { 0.0 } else { q };
        // SAFETY: `q` is finite and within -127..=127, so it fits i32.
        unsafe { q.to_int_unchecked::<i32>() }
    });
    (d, wide.map(|q| q as i8), wide.iter().sum())
}

/// As an activation, Q8_0 uses ggml's x86 rounding; as a weight format
/// ([`super::BlockFormat`]) it keeps the reference rounding of ggml's `quantize` tool.
impl ActBlock for BlockQ8_0 {
    const ELEMS: usize = QK;

    fn quantize(src: &[f32]) -> Self {
        let (d, qs, _) = quantize_x86(src);
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, dst: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in dst.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl ActBlock for BlockQ8_1 {
    const ELEMS: usize = QK;

    fn quantize(src: &[f32]) -> Self {
        let (d, qs, sum) = quantize_x86(src);
        BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(d * sum as f32),
            qs,
        }
    }

    fn dequantize(&self, dst: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in dst.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}
