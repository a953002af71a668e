use half::f16;

use super::{inv_or_zero, BlockFormat, BlockQ8_0, QuantType, QK};

/// ggml Q4_0: 32 values `x[i] = d * (q[i] - 8)` with 4-bit `q`.
///
/// `qs[j]` holds value `j` in its low nibble and value `j + 16` in its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ4_0 {}
unsafe impl bytemuck::Pod for BlockQ4_0 {}

impl BlockFormat for BlockQ4_0 {
    const TYPE: QuantType = QuantType::Q4_0;
    const ELEMS: usize = QK;
    type Act = BlockQ8_0;

    /// The value with the largest magnitude maps exactly to q = 0 (-8 after the bias);
    /// rounding is `trunc(x / d + 8.5)` as in ggml and gguf-py.
    fn quantize(src: &[f32]) -> Self {
        let extreme = src
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = extreme / -8.0;
        let id = inv_or_zero(d);
        let q = |v: f32| ((v * id + 8.5).trunc() as u8).min(15);
        let mut qs = [0u8; QK / 2];
        for (j, byte) in qs.iter_mut().enumerate() {
            *byte = q(src[j]) | (q(src[j + QK / 2]) << 4);
        }
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, dst: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, &byte) in self.qs.iter().enumerate() {
            dst[j] = ((byte & 0x0F) as i32 - 8) as f32 * d;
            dst[j + QK / 2] = ((byte >> 4) as i32 - 8) as f32 * d;
        }
    }

    /// One fused multiply-add per block, in block order: the AVX-512 tile kernel does
    /// exactly this for eight rows at once, so the two agree bitwise (and IEEE FMA
    /// makes it the same on every machine).
    fn dot_ref(weights: &[Self], acts: &[BlockQ8_0]) -> f32 {
        let mut sum = 0f32;
        for (w, a) in weights.iter().zip(acts) {
            let mut isum = 0i32;
            for (j, &byte) in w.qs.iter().enumerate() {
                isum += ((byte & 0x0F) as i32 - 8) * a.qs[j] as i32;
                isum += ((byte >> 4) as i32 - 8) * a.qs[j + QK / 2] as i32;
            }
            sum = (isum as f32).mul_add(w.d.to_f32() * a.d.to_f32(), sum);
        }
        sum
    }
}
