use super::{ActBlock, QK_K};

/// 8-bit activation super-block for the K-quants (ggml's Q8_K layout):
/// `x[i] ≈ d * qs[i]`, with `bsums[g]` the sum of `qs` over the 16 values of group `g`
/// (the K-quants' offsets and Q6_K's -32 bias are applied through these sums).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);
// SAFETY: repr(C), no padding (size checked above), every bit pattern valid.
unsafe impl bytemuck::Zeroable for BlockQ8K {}
unsafe impl bytemuck::Pod for BlockQ8K {}

impl ActBlock for BlockQ8K {
    const ELEMS: usize = QK_K;

    /// ggml's `quantize_row_q8_K_ref`, which is also what its x86 backend runs: the
    /// scale is `-127 / x_max` with `x_max` the first value of largest magnitude
    /// (so `d` carries the opposite sign of `x_max`), values round half to even,
    /// and `d = 1 / scale` exactly as computed in f32.
    fn quantize(src: &[f32]) -> Self {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in src {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut block = BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        if amax == 0.0 {
            return block;
        }
        let iscale = -127.0 / max;
        for (q, &v) in block.qs.iter_mut().zip(src) {
            *q = (iscale * v).round_ties_even().min(127.0) as i8;
        }
        for (s, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *s = group.iter().map(|&q| q as i16).sum();
        }
        block.d = 1.0 / iscale;
        block
    }

    fn dequantize(&self, dst: &mut [f32]) {
        for (o, &q) in dst.iter_mut().zip(&self.qs) {
            *o = q as f32 * self.d;
        }
    }
}
