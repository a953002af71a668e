//! The inner loops of attention over cached rows: the scores of one key against
//! every query head of its group, and the weighted sum of the value rows.
//!
//! On x86-64 builds with AVX2, FMA and F16C (the project's default target level),
//! both read the cache directly, converting 8 values per instruction, and keep
//! their partial sums in registers; elsewhere they convert each row into a
//! scratch buffer and use portable loops. Results do not depend on the thread
//! count on either path: every output is computed by one call in a fixed order.

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
mod simd {
    use std::arch::x86_64::*;

    use half::f16;

    /// A cache element type read 8 lanes at a time as f32.
    pub trait Load8: Copy {
        /// # Safety
        /// `p` must be valid for reading 8 elements.
        unsafe fn load8(p: *const Self) -> __m256;
    }

    impl Load8 for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
    }

    impl Load8 for f16 {
        #[inline(always)]
        unsafe fn load8(p: *const f16) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
    }

    /// `scores[h] = q_h · key` for 4 heads at a time; `head_dim` a multiple of 16.
    /// Each key chunk is converted once for all heads, and two chains per head keep
    /// the FMA latency hidden. A group always runs 4 heads (the last one repeated
    /// where fewer are left): with a variable count the accumulators lived in memory.
    #[inline]
    pub fn key_scores<E: Load8>(q: &[f32], key: &[E], head_dim: usize, scores: &mut [f32]) {
        let heads = scores.len();
        assert!(head_dim.is_multiple_of(16) && key.len() >= head_dim);
        assert!(heads > 0 && q.len() >= heads * head_dim);
        for first in (0..heads).step_by(4) {
            let head = |h: usize| (first + h).min(heads - 1);
            // SAFETY: every read is at `c + 8 <= head_dim` within head `head(h) <
            // heads` of `q` (checked above) or within `key`; the build enables
            // AVX2/FMA/F16C.
            unsafe {
                let rows: [*const f32; 4] =
                    std::array::from_fn(|h| q.as_ptr().add(head(h) * head_dim));
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for c in (0..head_dim).step_by(16) {
                    let k0 = E::load8(key.as_ptr().add(c));
                    let k1 = E::load8(key.as_ptr().add(c + 8));
                    for h in 0..4 {
                        let qh = rows[h].add(c);
                        acc[h][0] = _mm256_fmadd_ps(_mm256_loadu_ps(qh), k0, acc[h][0]);
                        acc[h][1] = _mm256_fmadd_ps(_mm256_loadu_ps(qh.add(8)), k1, acc[h][1]);
                    }
                }
                for h in 0..(heads - first).min(4) {
                    scores[first + h] = hsum(_mm256_add_ps(acc[h][0], acc[h][1]));
                }
            }
        }
    }

    /// `out_h = Σ_j weights[h][j] · value_j` for every head; `head_dim` a multiple
    /// of 16. Rows are read in order, two at a time: each pair is converted once
    /// for all heads and the heads' sums (a few KiB) stay in L1. Summing 16
    /// dimensions of every row per pass instead kept the sums in registers but
    /// walked the rows 16 times at a stride, and decode got slower.
    #[inline]
    pub fn weighted_values<'v, E: Load8 + 'v>(
        weights: &[f32],
        rows: usize,
        value: impl Fn(usize) -> &'v [E],
        head_dim: usize,
        out: &mut [f32],
    ) {
        let heads = out.len() / head_dim;
        assert!(head_dim.is_multiple_of(16) && weights.len() >= heads * rows);
        out.fill(0.0);
        let mut j = 0;
        while j < rows {
            let pair = (rows - j).min(2);
            let v0 = value(j);
            let v1 = value(j + pair - 1);
            assert!(v0.len() >= head_dim && v1.len() >= head_dim);
            for h in 0..heads {
                let w0 = weights[h * rows + j];
                // A lone last row pairs with itself at weight 0.
                let w1 = if pair == 2 {
                    weights[h * rows + j + 1]
                } else {
                    0.0
                };
                // SAFETY: rows hold `head_dim` elements (asserted), `out` holds
                // `heads * head_dim`; the build enables AVX2/FMA/F16C.
                unsafe {
                    let (w0, w1) = (_mm256_set1_ps(w0), _mm256_set1_ps(w1));
                    let o = out.as_mut_ptr().add(h * head_dim);
                    for c in (0..head_dim).step_by(8) {
                        let a = E::load8(v0.as_ptr().add(c));
                        let b = E::load8(v1.as_ptr().add(c));
                        let sum = _mm256_fmadd_ps(
                            w1,
                            b,
                            _mm256_fmadd_ps(w0, a, _mm256_loadu_ps(o.add(c))),
                        );
                        _mm256_storeu_ps(o.add(c), sum);
                    }
                }
            }
            j += pair;
        }
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
)))]
mod simd {
    /// Without the x86 fast path, any element type will do.
    pub trait Load8: Copy {}
    impl Load8 for f32 {}
    impl Load8 for half::f16 {}
}

pub(crate) use simd::Load8;

/// `scores[h] = q_h · key` for the heads of `q` ([heads, head_dim]); `row` is
/// scratch of `head_dim` values for the portable path.
pub(crate) fn key_scores<E: Load8>(
    q: &[f32],
    key: &[E],
    head_dim: usize,
    load: fn(&[E], &mut [f32]),
    row: &mut [f32],
    scores: &mut [f32],
) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    if head_dim.is_multiple_of(16) {
        return simd::key_scores(q, key, head_dim, scores);
    }
    load(key, row);
    for (h, s) in scores.iter_mut().enumerate() {
        *s = dot(&q[h * head_dim..(h + 1) * head_dim], row);
    }
}

/// `out_h = Σ_j weights[h * rows + j] · value(j)` for every head of `out`
/// ([heads, head_dim]); `row` is scratch of `head_dim` values for the portable path.
pub(crate) fn weighted_values<'v, E: Load8 + 'v>(
    weights: &[f32],
    rows: usize,
    value: impl Fn(usize) -> &'v [E],
    head_dim: usize,
    load: fn(&[E], &mut [f32]),
    row: &mut [f32],
    out: &mut [f32],
) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    if head_dim.is_multiple_of(16) {
        return simd::weighted_values(weights, rows, value, head_dim, out);
    }
    out.fill(0.0);
    for j in 0..rows {
        load(value(j), row);
        for (h, acc) in out.chunks_mut(head_dim).enumerate() {
            let w = weights[h * rows + j];
            for (a, &v) in acc.iter_mut().zip(row.iter()) {
                *a += w * v;
            }
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut partial = [0f32; LANES];
    let split = a.len() / LANES * LANES;
    for (ca, cb) in a[..split]
        .chunks_exact(LANES)
        .zip(b[..split].chunks_exact(LANES))
    {
        for lane in 0..LANES {
            partial[lane] += ca[lane] * cb[lane];
        }
    }
    partial.iter().sum::<f32>()
        + a[split..]
            .iter()
            .zip(&b[split..])
            .map(|(x, y)| x * y)
            .sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use half::slice::HalfFloatSliceExt;

    fn ramp(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37 + seed).sin() * 1.5).round() / 4.0)
            .collect()
    }

    /// Quarter-integer operands of magnitude <= 0.5 and head sizes <= 256: every
    /// product and partial sum is a multiple of 1/16 below 2^10, exact in f32, so
    /// any summation order, fused or not, gives the same bits as the f64 sums.
    #[test]
    fn fast_and_portable_loops_equal_the_exact_sums() {
        for head_dim in [16, 64, 80, 256] {
            for heads in [1, 3, 4, 7] {
                let q = ramp(heads * head_dim, 0.1);
                let key32 = ramp(head_dim, 0.7);
                let key16: Vec<f16> = key32.iter().map(|&x| f16::from_f32(x)).collect();
                let mut row = vec![0f32; head_dim];
                let mut s32 = vec![0f32; heads];
                let mut s16 = vec![0f32; heads];
                key_scores(
                    &q,
                    &key32,
                    head_dim,
                    |s, d| d.copy_from_slice(s),
                    &mut row,
                    &mut s32,
                );
                key_scores(
                    &q,
                    &key16,
                    head_dim,
                    |s, d| s.convert_to_f32_slice(d),
                    &mut row,
                    &mut s16,
                );
                for h in 0..heads {
                    let exact: f64 = (0..head_dim)
                        .map(|e| q[h * head_dim + e] as f64 * key32[e] as f64)
                        .sum();
                    assert_eq!(s32[h] as f64, exact, "scores f32 d={head_dim} h={h}");
                    assert_eq!(s16[h] as f64, exact, "scores f16 d={head_dim} h={h}");
                }

                let rows = 5;
                let values: Vec<Vec<f32>> = (0..rows).map(|j| ramp(head_dim, j as f32)).collect();
                let values16: Vec<Vec<f16>> = values
                    .iter()
                    .map(|v| v.iter().map(|&x| f16::from_f32(x)).collect())
                    .collect();
                let weights = ramp(heads * rows, 2.0);
                let mut out32 = vec![1f32; heads * head_dim];
                let mut out16 = vec![1f32; heads * head_dim];
                weighted_values(
                    &weights,
                    rows,
                    |j| &values[j][..],
                    head_dim,
                    |s, d| d.copy_from_slice(s),
                    &mut row,
                    &mut out32,
                );
                weighted_values(
                    &weights,
                    rows,
                    |j| &values16[j][..],
                    head_dim,
                    |s, d| s.convert_to_f32_slice(d),
                    &mut row,
                    &mut out16,
                );
                for h in 0..heads {
                    for e in 0..head_dim {
                        let exact: f64 = (0..rows)
                            .map(|j| weights[h * rows + j] as f64 * values[j][e] as f64)
                            .sum();
                        assert_eq!(out32[h * head_dim + e] as f64, exact);
                        assert_eq!(out16[h * head_dim + e] as f64, exact);
                    }
                }
            }
        }
    }
}
