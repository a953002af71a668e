use half::f16;

use super::q5_0::{pack_5bit, unpack_5bit};
use super::{inv_or_zero, BlockFormat, BlockQ8_1, QuantType, QK};

/// ggml Q5_1: 32 values `x[i] = d * q[i] + m` with 5-bit `q` packed as in Q5_0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ5_1 {}
unsafe impl bytemuck::Pod for BlockQ5_1 {}

impl BlockQ5_1 {
    /// The 32 5-bit values (0..=31).
    #[inline]
    pub(crate) fn values(&self) -> [u8; QK] {
        unpack_5bit(&self.qs, u32::from_le_bytes(self.qh))
    }
}

impl BlockFormat for BlockQ5_1 {
    const TYPE: QuantType = QuantType::Q5_1;
    const ELEMS: usize = QK;
    type Act = BlockQ8_1;

    /// Min/max affine quantization; rounding is `trunc((x - min) / d + 0.5)`.
    fn quantize(src: &[f32]) -> Self {
        let min = src.iter().fold(f32::INFINITY, |m, &v| m.min(v));
        let max = src.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let d = (max - min) / 31.0;
        let id = inv_or_zero(d);
        let mut q = [0u8; QK];
        for (qi, &v) in q.iter_mut().zip(src) {
            *qi = (((v - min) * id + 0.5).trunc() as u8).min(31);
        }
        let (qs, qh) = pack_5bit(&q);
        BlockQ5_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qh: qh.to_le_bytes(),
            qs,
        }
    }

    fn dequantize(&self, dst: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (o, q) in dst.iter_mut().zip(self.values()) {
            *o = q as f32 * d + m;
        }
    }

    fn dot_ref(weights: &[Self], acts: &[BlockQ8_1]) -> f32 {
        let mut sum = 0f32;
        for (w, a) in weights.iter().zip(acts) {
            let isum: i32 = w
                .values()
                .iter()
                .zip(&a.qs)
                .map(|(&q, &qa)| q as i32 * qa as i32)
                .sum();
            sum += isum as f32 * (w.d.to_f32() * a.d.to_f32()) + w.m.to_f32() * a.s.to_f32();
        }
        sum
    }
}
