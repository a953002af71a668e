use half::f16;

use super::scale_search::{nearest_int, symmetric_search, GROUP_MAX_EPS};
use super::{BlockFormat, BlockQ8K, QuantType, QK_K};

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

    /// ggml's reference quantizer: each group of 16 gets a scale from
    /// [`symmetric_search`], the scales go on a signed 8-bit grid under an f16 super
    /// scale (the largest-magnitude scale maps to -128), and the values are re-rounded
    /// on the stored grid. A block whose scales are all below ggml's epsilon is zero.
    fn quantize(src: &[f32]) -> Self {
        let mut q = [0u8; QK_K];
        let mut group_scale = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for (g, group) in src.chunks_exact(16).enumerate() {
            group_scale[g] = symmetric_search(group, 32, &mut q[16 * g..16 * (g + 1)]);
            if group_scale[g].abs() > max_abs_scale {
                max_abs_scale = group_scale[g].abs();
                max_scale = group_scale[g];
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return bytemuck::Zeroable::zeroed();
        }
        let iscale = -128.0 / max_scale;
        let d = f16::from_f32(1.0 / iscale);
        let scales: [i8; QK_K / 16] =
            std::array::from_fn(|g| nearest_int(iscale * group_scale[g]).min(127) as i8);
        for (g, group) in src.chunks_exact(16).enumerate() {
            let step = d.to_f32() * scales[g] as f32;
            // A zero step keeps the search's levels, as ggml does.
            if step == 0.0 {
                continue;
            }
            for (qi, &v) in q[16 * g..16 * (g + 1)].iter_mut().zip(group) {
                *qi = (nearest_int(v / step).clamp(-32, 31) + 32) as u8;
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
