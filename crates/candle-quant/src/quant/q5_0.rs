use half::f16;

use super::{inv_or_zero, BlockFormat, BlockQ8_0, QuantType, QK};

/// ggml Q5_0: 32 values `x[i] = d * (q[i] - 16)` with 5-bit `q`.
///
/// The low 4 bits are packed like Q4_0; bit `i` of the little-endian `qh` is bit 4 of
/// value `i`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ5_0 {}
unsafe impl bytemuck::Pod for BlockQ5_0 {}

impl BlockQ5_0 {
    /// The 32 unbiased 5-bit values (0..=31).
    #[inline]
    pub(crate) fn values(&self) -> [u8; QK] {
        unpack_5bit(&self.qs, u32::from_le_bytes(self.qh))
    }
}

/// Joins low nibbles (Q4 packing) with the high bits in `qh`.
#[inline]
pub(crate) fn unpack_5bit(qs: &[u8; QK / 2], qh: u32) -> [u8; QK] {
    let mut q = [0u8; QK];
    for j in 0..QK / 2 {
        q[j] = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        q[j + QK / 2] = (qs[j] >> 4) | ((((qh >> (j + QK / 2)) & 1) as u8) << 4);
    }
    q
}

/// Packs 32 5-bit values into Q4-style nibbles plus the high-bit word.
#[inline]
pub(crate) fn pack_5bit(q: &[u8; QK]) -> ([u8; QK / 2], u32) {
    let mut qs = [0u8; QK / 2];
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        qs[j] = (q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4);
    }
    for (i, &v) in q.iter().enumerate() {
        qh |= ((v >> 4) as u32 & 1) << i;
    }
    (qs, qh)
}

impl BlockFormat for BlockQ5_0 {
    const TYPE: QuantType = QuantType::Q5_0;
    const ELEMS: usize = QK;
    type Act = BlockQ8_0;

    /// The largest-magnitude value maps to q = 0; rounding is `trunc(x / d + 16.5)`.
    fn quantize(src: &[f32]) -> Self {
        let extreme = src
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = extreme / -16.0;
        let id = inv_or_zero(d);
        let mut q = [0u8; QK];
        for (qi, &v) in q.iter_mut().zip(src) {
            *qi = ((v * id + 16.5).trunc() as u8).min(31);
        }
        let (qs, qh) = pack_5bit(&q);
        BlockQ5_0 {
            d: f16::from_f32(d),
            qh: qh.to_le_bytes(),
            qs,
        }
    }

    fn dequantize(&self, dst: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, q) in dst.iter_mut().zip(self.values()) {
            *o = (q as i32 - 16) as f32 * d;
        }
    }

    /// One fused multiply-add per block, in block order: the AVX-512 tile kernel does
    /// exactly this for eight rows at once, so the two agree bitwise (and IEEE FMA
    /// makes it the same on every machine).
    fn dot_ref(weights: &[Self], acts: &[BlockQ8_0]) -> f32 {
        let mut sum = 0f32;
        for (w, a) in weights.iter().zip(acts) {
            let isum: i32 = w
                .values()
                .iter()
                .zip(&a.qs)
                .map(|(&q, &qa)| (q as i32 - 16) * qa as i32)
                .sum();
            sum = (isum as f32).mul_add(w.d.to_f32() * a.d.to_f32(), sum);
        }
        sum
    }
}
