use half::f16;

use super::scale_search::{affine_search, nearest_int, AffineGrid};
use super::{BlockFormat, BlockQ8K, QuantType, QK_K};

/// Bytes of the packed 6-bit sub-block scales and mins of Q4_K/Q5_K.
pub(crate) const K_SCALE_BYTES: usize = 12;

/// ggml Q4_K: 256 values in 8 sub-blocks of 32; value `i` of sub-block `j` is
/// `d * sc[j] * q[i] - dmin * m[j]` with 4-bit `q` and 6-bit `sc`, `m`.
///
/// `qs` is 4 chunks of 32 bytes: chunk `c` holds sub-block `2c` in its low nibbles and
/// sub-block `2c + 1` in its high nibbles. `scales` packs the 6-bit `sc` and `m`: bytes
/// 0..4 hold `sc[0..4]`, bytes 4..8 hold `m[0..4]` (low 6 bits each), and
/// `sc[4..8]`/`m[4..8]` are split into a low nibble in bytes 8..12 and two high bits in
/// the top of bytes 0..4 / 4..8.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_BYTES],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ4K {}
unsafe impl bytemuck::Pod for BlockQ4K {}

/// Unpacks the 8 scales and 8 mins (each 0..=63) of a Q4_K/Q5_K block.
#[inline]
pub(crate) fn unpack_scales_mins(s: &[u8; K_SCALE_BYTES]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, m)
}

/// Inverse of [`unpack_scales_mins`]; inputs must be <= 63.
pub(crate) fn pack_scales_mins(sc: &[u8; 8], m: &[u8; 8]) -> [u8; K_SCALE_BYTES] {
    let mut s = [0u8; K_SCALE_BYTES];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
    }
    s
}

/// Affine K-quant parameters shared by Q4_K and Q5_K.
pub(crate) struct AffineK {
    pub d: f16,
    pub dmin: f16,
    pub sc: [u8; 8],
    pub m: [u8; 8],
    pub q: [u8; QK_K],
}

/// Quantizes 256 values to `q in 0..=grid.nmax` per 32-value sub-block, as ggml's
/// reference quantizer does: each sub-block's scale and offset come from
/// [`affine_search`] weighted by `rms(sub-block) + |x|`, both are put on 6-bit grids
/// under f16 super-scales, and the values are re-rounded on the stored grid.
pub(crate) fn quantize_affine_k(src: &[f32], grid: &AffineGrid) -> AffineK {
    let mut q = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut offsets = [0f32; 8];
    let (mut max_scale, mut max_offset) = (0f32, 0f32);
    for (j, sub) in src.chunks_exact(32).enumerate() {
        let mut sum_x2 = 0f32;
        for &v in sub {
            sum_x2 += v * v;
        }
        let rms = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| rms + sub[l].abs());
        (scales[j], offsets[j]) = affine_search(sub, &weights, grid, &mut q[32 * j..32 * (j + 1)]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if offsets[j] > max_offset {
            max_offset = offsets[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_offset = if max_offset > 0.0 {
        63.0 / max_offset
    } else {
        0.0
    };
    // `as u8` wraps like ggml's store of an int into a uint8_t.
    let sc: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let m: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_offset * offsets[j]) as u8).min(63));
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_offset / 63.0);
    for (j, sub) in src.chunks_exact(32).enumerate() {
        let step = d.to_f32() * sc[j] as f32;
        // A zero step keeps the search's levels, as ggml does.
        if step == 0.0 {
            continue;
        }
        let offset = dmin.to_f32() * m[j] as f32;
        for (qi, &v) in q[32 * j..32 * (j + 1)].iter_mut().zip(sub) {
            *qi = nearest_int((v + offset) / step).clamp(0, grid.nmax as i32) as u8;
        }
    }
    AffineK { d, dmin, sc, m, q }
}

impl BlockQ4K {
    /// The 256 4-bit values in element order.
    #[inline]
    pub(crate) fn values(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for c in 0..4 {
            for l in 0..32 {
                let byte = self.qs[32 * c + l];
                q[64 * c + l] = byte & 0x0F;
                q[64 * c + 32 + l] = byte >> 4;
            }
        }
        q
    }
}

impl BlockFormat for BlockQ4K {
    const TYPE: QuantType = QuantType::Q4K;
    const ELEMS: usize = QK_K;
    type Act = BlockQ8K;

    fn quantize(src: &[f32]) -> Self {
        let a = quantize_affine_k(
            src,
            &AffineGrid {
                nmax: 15,
                rmin: -1.0,
                rdelta: 0.1,
                steps: 20,
            },
        );
        let mut qs = [0u8; QK_K / 2];
        for c in 0..4 {
            for l in 0..32 {
                qs[32 * c + l] = a.q[64 * c + l] | (a.q[64 * c + 32 + l] << 4);
            }
        }
        BlockQ4K {
            d: a.d,
            dmin: a.dmin,
            scales: pack_scales_mins(&a.sc, &a.m),
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

/// `(Σ_j sc[j] Σ_i q·qa, Σ_j m[j] Σ_i qa)` over the 8 sub-blocks of one super-block.
#[inline]
pub(crate) fn affine_k_isums(
    q: &[u8; QK_K],
    sc: &[u8; 8],
    m: &[u8; 8],
    a: &BlockQ8K,
) -> (i32, i32) {
    let mut scaled = 0i32;
    let mut offsets = 0i32;
    for j in 0..8 {
        let dot: i32 = q[32 * j..32 * (j + 1)]
            .iter()
            .zip(&a.qs[32 * j..32 * (j + 1)])
            .map(|(&q, &qa)| q as i32 * qa as i32)
            .sum();
        scaled += sc[j] as i32 * dot;
        offsets += m[j] as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
    }
    (scaled, offsets)
}
