use half::f16;

use super::{f16_round_up, inv_or_zero, BlockFormat, BlockQ8K, QuantType, QK_K};

/// ggml Q6_K: 256 values in 16 groups of 16; value `i` of group `g` is
/// `d * scales[g] * (q[i] - 32)` with 6-bit `q` and signed 8-bit `scales`.
///
/// Two halves of 128 values; in half `n`, for `l in 0..32`, values `l`, `l+32`, `l+64`,
/// `l+96` take their low nibbles from `ql[64n + l]` (low), `ql[64n + l + 32]` (low),
/// `ql[64n + l]` (high), `ql[64n + l + 32]` (high), and their top two bits from bit pairs
/// 0, 1, 2, 3 of `qh[32n + l]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ6K {}
unsafe impl bytemuck::Pod for BlockQ6K {}

impl BlockQ6K {
    /// The 256 values with the -32 bias applied (-32..=31), in element order.
    #[inline]
    pub(crate) fn values(&self) -> [i8; QK_K] {
        let mut q = [0i8; QK_K];
        for n in 0..2 {
            for l in 0..32 {
                let (a, b) = (self.ql[64 * n + l], self.ql[64 * n + l + 32]);
                let h = self.qh[32 * n + l];
                let base = 128 * n + l;
                q[base] = ((a & 0x0F) | ((h & 3) << 4)) as i8 - 32;
                q[base + 32] = ((b & 0x0F) | (((h >> 2) & 3) << 4)) as i8 - 32;
                q[base + 64] = ((a >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
                q[base + 96] = ((b >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        q
    }
}

impl BlockFormat for BlockQ6K {
    const TYPE: QuantType = QuantType::Q6K;
    const ELEMS: usize = QK_K;
    type Act = BlockQ8K;

    /// Symmetric: each group's step covers `max|x| / 31`, rounded *up* onto the 8-bit
    /// scale grid and the f16 super scale, so no value clamps and
    /// `|x - x̂| <= d * scales[g] / 2`.
    fn quantize(src: &[f32]) -> Self {
        let mut group_step = [0f32; QK_K / 16];
        for (s, group) in group_step.iter_mut().zip(src.chunks_exact(16)) {
            *s = group.iter().fold(0f32, |a, v| a.max(v.abs())) / 31.0;
        }
        let d = f16_round_up(group_step.iter().fold(0f32, |a, &v| a.max(v)) / 127.0);
        let d_f = d.to_f32();
        let mut scales = [0i8; QK_K / 16];
        let mut q = [0u8; QK_K];
        for (g, group) in src.chunks_exact(16).enumerate() {
            let sc = ((group_step[g] * inv_or_zero(d_f)).ceil() as u8).min(127);
            scales[g] = sc as i8;
            let inv_step = inv_or_zero(d_f * sc as f32);
            for (qi, &v) in q[16 * g..16 * (g + 1)].iter_mut().zip(group) {
                *qi = ((v * inv_step).round().clamp(-32.0, 31.0) as i32 + 32) as u8;
            }
        }
        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        for n in 0..2 {
            for l in 0..32 {
                let base = 128 * n + l;
                let (q1, q2, q3, q4) = (q[base], q[base + 32], q[base + 64], q[base + 96]);
                ql[64 * n + l] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
                ql[64 * n + l + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
                qh[32 * n + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        BlockQ6K { ql, qh, scales, d }
    }

    fn dequantize(&self, dst: &mut [f32]) {
        let d = self.d.to_f32();
        for (i, q) in self.values().into_iter().enumerate() {
            dst[i] = d * self.scales[i / 16] as f32 * q as f32;
        }
    }

    fn dot_ref(weights: &[Self], acts: &[BlockQ8K]) -> f32 {
        let mut sum = 0f32;
        for (w, a) in weights.iter().zip(acts) {
            let q = w.values();
            let mut isum = 0i32;
            for g in 0..QK_K / 16 {
                let dot: i32 = q[16 * g..16 * (g + 1)]
                    .iter()
                    .zip(&a.qs[16 * g..16 * (g + 1)])
                    .map(|(&q, &qa)| q as i32 * qa as i32)
                    .sum();
                isum += w.scales[g] as i32 * dot;
            }
            sum += (w.d.to_f32() * a.d) * isum as f32;
        }
        sum
    }
}
