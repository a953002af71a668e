use super::{inv_or_zero, round_away, ActBlock, QK};

/// 8-bit activation block for the 32-element formats: `x[i] ≈ d * qs[i]`.
///
/// Unlike ggml's Q8_0/Q8_1 the scale is kept in f32 (activations are transient, so
/// there is no size to save) and `sum = d * Σ qs` is precomputed for the formats with
/// an offset (Q4_1, Q5_1). `qs` never holds -128, which keeps the AVX2 `maddubs`
/// sign trick free of i16 saturation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8A {
    pub d: f32,
    pub sum: f32,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8A>() == 40);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ8A {}
unsafe impl bytemuck::Pod for BlockQ8A {}

impl ActBlock for BlockQ8A {
    const ELEMS: usize = QK;

    fn quantize(src: &[f32]) -> Self {
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = inv_or_zero(d);
        let mut qs = [0i8; QK];
        let mut isum = 0i32;
        for (q, &v) in qs.iter_mut().zip(src) {
            *q = round_away(v * id).clamp(-127.0, 127.0) as i8;
            isum += *q as i32;
        }
        BlockQ8A {
            d,
            sum: d * isum as f32,
            qs,
        }
    }

    fn dequantize(&self, dst: &mut [f32]) {
        for (o, &q) in dst.iter_mut().zip(&self.qs) {
            *o = q as f32 * self.d;
        }
    }
}
