use super::{inv_or_zero, round_away, ActBlock, QK_K};

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

    fn quantize(src: &[f32]) -> Self {
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = inv_or_zero(d);
        let mut qs = [0i8; QK_K];
        for (q, &v) in qs.iter_mut().zip(src) {
            *q = round_away(v * id).clamp(-127.0, 127.0) as i8;
        }
        let mut bsums = [0i16; QK_K / 16];
        for (s, group) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
            *s = group.iter().map(|&q| q as i16).sum();
        }
        BlockQ8K { d, qs, bsums }
    }

    fn dequantize(&self, dst: &mut [f32]) {
        for (o, &q) in dst.iter_mut().zip(&self.qs) {
            *o = q as f32 * self.d;
        }
    }
}
