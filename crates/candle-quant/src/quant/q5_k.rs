use half::f16;

use super::q4_k::{
    affine_k_isums, pack_scales_mins, quantize_affine_k, unpack_scales_mins, K_SCALE_BYTES,
};
use super::scale_search::AffineGrid;
use super::{BlockFormat, BlockQ8K, QuantType, QK_K};

/// ggml Q5_K: Q4_K's layout plus a fifth bit per value: value `i` of sub-block `j` is
/// `d * sc[j] * q[i] - dmin * m[j]` with 5-bit `q`.
///
/// Low nibbles are packed as in Q4_K; bit `j` of `qh[l]` is bit 4 of value `l` of
/// sub-block `j`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_BYTES],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ5K {}
unsafe impl bytemuck::Pod for BlockQ5K {}

impl BlockQ5K {
    /// The 256 5-bit values in element order.
    #[inline]
    pub(crate) fn values(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for c in 0..4 {
            for l in 0..32 {
                let byte = self.qs[32 * c + l];
                let high = self.qh[l];
                q[64 * c + l] = (byte & 0x0F) | (((high >> (2 * c)) & 1) << 4);
                q[64 * c + 32 + l] = (byte >> 4) | (((high >> (2 * c + 1)) & 1) << 4);
            }
        }
        q
    }
}

impl BlockFormat for BlockQ5K {
    const TYPE: QuantType = QuantType::Q5K;
    const ELEMS: usize = QK_K;
    type Act = BlockQ8K;

    fn quantize(src: &[f32]) -> Self {
        let a = quantize_affine_k(
            src,
            &AffineGrid {
                nmax: 31,
                rmin: -0.5,
                rdelta: 0.1,
                steps: 15,
            },
        );
        let mut qs = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 8];
        for c in 0..4 {
            for l in 0..32 {
                let (lo, hi) = (a.q[64 * c + l], a.q[64 * c + 32 + l]);
                qs[32 * c + l] = (lo & 0x0F) | ((hi & 0x0F) << 4);
                qh[l] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
            }
        }
        BlockQ5K {
            d: a.d,
            dmin: a.dmin,
            scales: pack_scales_mins(&a.sc, &a.m),
            qh,
            qs,
        }
    }

    fn dequantize(&self, dst: &mut [f32]) {
        let (sc, m) = unpack_scales_mins(&self.scales);
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        for (i, q) in self.values().into_iter().enumerate() {
            let j = i / 32;
            dst[i] = d * sc[j] as f32 * q as f32 - dmin * m[j] as f32;
        }
    }

    fn dot_ref(weights: &[Self], acts: &[BlockQ8K]) -> f32 {
        let mut sum = 0f32;
        for (w, a) in weights.iter().zip(acts) {
            let (sc, m) = unpack_scales_mins(&w.scales);
            let (scaled, offsets) = affine_k_isums(&w.values(), &sc, &m, a);
            sum += (w.d.to_f32() * a.d) * scaled as f32 - (w.dmin.to_f32() * a.d) * offsets as f32;
        }
        sum
    }
}
