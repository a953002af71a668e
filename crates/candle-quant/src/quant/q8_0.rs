use half::f16;

use super::{inv_or_zero, round_away, BlockFormat, QuantType, QK};

/// ggml Q8_0: 32 values `x[i] = d * qs[i]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ8_0 {}
unsafe impl bytemuck::Pod for BlockQ8_0 {}

impl BlockFormat for BlockQ8_0 {
    const TYPE: QuantType = QuantType::Q8_0;
    const ELEMS: usize = QK;
    type Act = BlockQ8_0;

    /// `d = max|x| / 127`, `q = round_half_away(x / d)`; the rounding uses the f32 `d`,
    /// not the stored f16, as ggml does.
    fn quantize(src: &[f32]) -> Self {
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = inv_or_zero(d);
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(src) {
            *q = round_away(v * id) as i8;
        }
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

    fn dot_ref(weights: &[Self], acts: &[BlockQ8_0]) -> f32 {
        let mut sum = 0f32;
        for (w, a) in weights.iter().zip(acts) {
            let isum: i32 =
                w.qs.iter()
                    .zip(&a.qs)
                    .map(|(&q, &qa)| q as i32 * qa as i32)
                    .sum();
            sum += isum as f32 * (w.d.to_f32() * a.d.to_f32());
        }
        sum
    }
}
