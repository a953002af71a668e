use half::f16;

use super::{inv_or_zero, BlockFormat, BlockQ8_1, QuantType, QK};

/// ggml Q4_1: 32 values `x[i] = d * q[i] + m` with 4-bit `q`.
///
/// `qs[j]` holds value `j` in its low nibble and value `j + 16` in its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ4_1 {}
unsafe impl bytemuck::Pod for BlockQ4_1 {}

impl BlockFormat for BlockQ4_1 {
    const TYPE: QuantType = QuantType::Q4_1;
    const ELEMS: usize = QK;
    type Act = BlockQ8_1;

    /// Min/max affine quantization; rounding is `trunc((x - min) / d + 0.5)`.
    fn quantize(src: &[f32]) -> Self {
        let min = src.iter().fold(f32::INFINITY, |m, &v| m.min(v));
        let max = src.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let d = (max - min) / 15.0;
        let id = inv_or_zero(d);
        let q = |v: f32| (((v - min) * id + 0.5).trunc() as u8).min(15);
        let mut qs = [0u8; QK / 2];
        for (j, byte) in qs.iter_mut().enumerate() {
            *byte = q(src[j]) | (q(src[j + QK / 2]) << 4);
        }
        BlockQ4_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qs,
        }
    }

    fn dequantize(&self, dst: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (j, &byte) in self.qs.iter().enumerate() {
            dst[j] = (byte & 0x0F) as f32 * d + m;
            dst[j + QK / 2] = (byte >> 4) as f32 * d + m;
        }
    }

    /// Σ (d q + m) a = d·d_a Σ q·qa + m·(d_a Σ qa), the second factor being `a.s`.
    fn dot_ref(weights: &[Self], acts: &[BlockQ8_1]) -> f32 {
        let mut sum = 0f32;
        for (w, a) in weights.iter().zip(acts) {
            let mut isum = 0i32;
            for (j, &byte) in w.qs.iter().enumerate() {
                isum += (byte & 0x0F) as i32 * a.qs[j] as i32;
                isum += (byte >> 4) as i32 * a.qs[j + QK / 2] as i32;
            }
            sum += isum as f32 * (w.d.to_f32() * a.d.to_f32()) + w.m.to_f32() * a.s.to_f32();
        }
        sum
    }
}
