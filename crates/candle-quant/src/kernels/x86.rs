//! x86 fast paths, compiled twice from one source: once for AVX2 + FMA + F16C, once with
//! AVX-512 (F/BW/VL) and VNNI on top. Every function is `unsafe` because it requires its
//! module's CPU features; [`super`] hands them out only after run-time detection.
//!
//! Integer parts are exact (the activation quants never hold -128, so `maddubs` cannot
//! saturate); only the order of the f32 accumulation differs from the scalar reference.
//! The two modules differ only in how they form the 8 lanes of 4-product integer sums
//! (`maddubs` + `madd` vs. one `vpdpbusd`) and how they spread the Q5 high bits; the
//! lanes hold the same integers, so the two give bitwise equal results. F16 and BF16
//! weights (`half_precision`) have no integer part: there AVX-512 uses 16-lane vectors
//! and sums in another order than AVX2.

#[cfg(target_arch = "x86")]
use std::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use half::f16;

mod half_precision;
pub(crate) mod sgemm;

use crate::quant::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1,
};

/// One block's contribution, as 8 lanes of exact integer sums converted to f32.
/// `$q` is the weight block split by `parts_signed` / `parts_unsigned`, `$mul` the
/// matching `mul_signed` / `mul_unsigned`.
macro_rules! block_isum {
    ($q:expr, $mul:ident, $a:expr) => {
        _mm256_cvtepi32_ps($mul($q, load_i8x32(&$a.qs)))
    };
}

/// The f32 total of the two lane accumulators plus, for the offset formats, the
/// scalar offset terms (skipped for symmetric formats rather than adding zeros).
macro_rules! finish {
    ($acc:expr, $offsets:expr, $has_offset:expr) => {{
        let total = hsum_ps(_mm256_add_ps($acc[0], $acc[1]));
        if $has_offset {
            total + ($offsets[0] + $offsets[1])
        } else {
            total
        }
    }};
}

/// Two independent accumulators: one FMA chain per block would bound the loop by the
/// FMA latency (4 cycles) rather than by loads.
macro_rules! unrolled_dot {
    ($w:expr, $a:expr, $prep:ident, $parts:ident, $mul:ident, $wscale:ident, $ascale:ident, $has_offset:expr) => {{
        let (w, a) = ($w, $a);
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut offsets = [0f32; 2];
        for (w2, a2) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
            for k in 0..2 {
                let (scale, offset) = $ascale($wscale(&w2[k]), &a2[k]);
                let isum = block_isum!($parts($prep(&w2[k])), $mul, a2[k]);
                acc[k] = _mm256_fmadd_ps(scale, isum, acc[k]);
                if $has_offset {
                    offsets[k] += offset;
                }
            }
        }
        let done = w.len().min(a.len()) / 2 * 2;
        for (w, a) in w[done..].iter().zip(&a[done..]) {
            let (scale, offset) = $ascale($wscale(w), a);
            let isum = block_isum!($parts($prep(w)), $mul, a);
            acc[0] = _mm256_fmadd_ps(scale, isum, acc[0]);
            if $has_offset {
                offsets[0] += offset;
            }
        }
        finish!(acc, offsets, $has_offset)
    }};
}

/// `unrolled_dot` for four activation rows at once, unpacking each weight block once.
/// Every row goes through exactly the operations of `unrolled_dot`, so each result is
/// bitwise equal to the single-row kernel's (batch composition never changes a value).
macro_rules! unrolled_dot4 {
    ($w:expr, $a:expr, $prep:ident, $parts:ident, $mul:ident, $wscale:ident, $ascale:ident, $has_offset:expr) => {{
        let (w, a) = ($w, $a);
        let n = a.iter().fold(w.len(), |n, row| n.min(row.len()));
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        let mut offsets = [[0f32; 2]; 4];
        let pairs = n / 2;
        // SAFETY (every `get_unchecked` below): `b < n`, the shortest slice's length.
        // Checked indexing cost ten compare-and-branch pairs per block pair here.
        for p in 0..pairs {
            for k in 0..2 {
                let b = 2 * p + k;
                let q = $parts($prep(w.get_unchecked(b)));
                let ws = $wscale(w.get_unchecked(b));
                for r in 0..4 {
                    let (scale, offset) = $ascale(ws, a[r].get_unchecked(b));
                    let isum = block_isum!(q, $mul, *a[r].get_unchecked(b));
                    acc[r][k] = _mm256_fmadd_ps(scale, isum, acc[r][k]);
                    if $has_offset {
                        offsets[r][k] += offset;
                    }
                }
            }
        }
        if n % 2 == 1 {
            let b = n - 1;
            let q = $parts($prep(w.get_unchecked(b)));
            let ws = $wscale(w.get_unchecked(b));
            for r in 0..4 {
                let (scale, offset) = $ascale(ws, a[r].get_unchecked(b));
                let isum = block_isum!(q, $mul, *a[r].get_unchecked(b));
                acc[r][0] = _mm256_fmadd_ps(scale, isum, acc[r][0]);
                if $has_offset {
                    offsets[r][0] += offset;
                }
            }
        }
        let mut out = [0f32; 4];
        for r in 0..4 {
            out[r] = finish!(acc[r], offsets[r], $has_offset);
        }
        out
    }};
}

macro_rules! weight_scale {
    ($features:literal, $name:ident, $block:ty) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &$block) -> __m256 {
            splat_f16(w.d)
        }
    };
}

/// The adjacent f16 `d` and `m` that open a Q4_1/Q5_1 block, converted in one go.
macro_rules! weight_scale_min {
    ($features:literal, $name:ident, $block:ty) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &$block) -> __m128 {
            let bits = std::ptr::read_unaligned(w as *const $block as *const i32);
            _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
        }
    };
}

macro_rules! kernels_32 {
    ($features:literal, $dot:ident, $dot4:ident, $block:ty, $act:ty, $prep:ident, $parts:ident, $mul:ident, $wscale:ident, $ascale:ident, $has_offset:expr) => {
        /// # Safety
        /// Requires AVX2, FMA and F16C.
        #[target_feature(enable = $features)]
        pub unsafe fn $dot(w: &[$block], a: &[$act]) -> f32 {
            unrolled_dot!(w, a, $prep, $parts, $mul, $wscale, $ascale, $has_offset)
        }

        /// # Safety
        /// Requires AVX2, FMA and F16C.
        #[target_feature(enable = $features)]
        pub unsafe fn $dot4(w: &[$block], a: [&[$act]; 4]) -> [f32; 4] {
            unrolled_dot4!(w, a, $prep, $parts, $mul, $wscale, $ascale, $has_offset)
        }
    };
}

macro_rules! kernels_k {
    ($features:literal, $dot:ident, $dot4:ident, $block:ty, $rows:ident) => {
        /// # Safety
        /// Requires AVX2, FMA and F16C.
        #[target_feature(enable = $features)]
        pub unsafe fn $dot(w: &[$block], a: &[BlockQ8K]) -> f32 {
            $rows::<1>(w, [a])[0]
        }

        /// # Safety
        /// Requires AVX2, FMA and F16C.
        #[target_feature(enable = $features)]
        pub unsafe fn $dot4(w: &[$block], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
            $rows::<4>(w, a)
        }
    };
}

/// Every kernel and helper of one x86 module, for the CPU features `$features`; the
/// module itself defines `high_bits_to_0x10`, `dot_u8_i8` and `madd_acc` for its
/// instruction set.
macro_rules! x86_kernels {
    ($features:literal) => {
        /// `h` in all 8 lanes. Broadcasting before the conversion keeps every lane in use:
        /// converting a lone scalar let LLVM insert it into whatever register was at hand,
        /// often a live accumulator, which chained each block's scale onto the previous
        /// block's FMA and made the loops latency-bound.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn splat_f16(h: f16) -> __m256 {
            _mm256_cvtph_ps(_mm_set1_epi16(h.to_bits() as i16))
        }

        #[inline]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn hsum_ps(v: __m256) -> f32 {
            let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
        }

        /// 16 packed bytes -> 32 nibbles: low nibbles in lanes 0..16, high nibbles in 16..32
        /// (the order of the Q4/Q5 32-value blocks).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn unpack_nibbles(p: *const u8) -> __m256i {
            let packed = _mm_loadu_si128(p as *const __m128i);
            let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
            _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
        }

        /// Signed weight quants as `(|q|, q)`: `|q|` feeds `maddubs` as unsigned bytes and `q`
        /// carries the signs onto the activations. Split once per weight block so the
        /// four-row kernels pay for `|q|` once.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn parts_signed(q: __m256i) -> (__m256i, __m256i) {
            (_mm256_sign_epi8(q, q), q)
        }

        /// Unsigned weight quants need no sign transfer.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn parts_unsigned(q: __m256i) -> (__m256i, __m256i) {
            (q, q)
        }

        /// Σ of i8 * i8 products from [`parts_signed`]; `y` must not contain -128 (the
        /// weights may: |-128| is exact as u8).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn mul_signed(parts: (__m256i, __m256i), y: __m256i) -> __m256i {
            dot_u8_i8(parts.0, _mm256_sign_epi8(y, parts.1))
        }

        /// Σ of u8 * i8 products from [`parts_unsigned`].
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn mul_unsigned(parts: (__m256i, __m256i), y: __m256i) -> __m256i {
            dot_u8_i8(parts.0, y)
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load_i8x32(p: &[i8; 32]) -> __m256i {
            _mm256_loadu_si256(p.as_ptr() as *const __m256i)
        }

        /// Signed -8..=7 (the bias applied in the integer domain, as llama.cpp does).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn prep_q4_0(w: &BlockQ4_0) -> __m256i {
            _mm256_sub_epi8(unpack_nibbles(w.qs.as_ptr()), _mm256_set1_epi8(8))
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn prep_q4_1(w: &BlockQ4_1) -> __m256i {
            unpack_nibbles(w.qs.as_ptr())
        }

        /// Signed -16..=15.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn prep_q5_0(w: &BlockQ5_0) -> __m256i {
            let unbiased = _mm256_or_si256(
                unpack_nibbles(w.qs.as_ptr()),
                high_bits_to_0x10(u32::from_le_bytes(w.qh)),
            );
            _mm256_sub_epi8(unbiased, _mm256_set1_epi8(16))
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn prep_q5_1(w: &BlockQ5_1) -> __m256i {
            _mm256_or_si256(
                unpack_nibbles(w.qs.as_ptr()),
                high_bits_to_0x10(u32::from_le_bytes(w.qh)),
            )
        }

        /// Weights may hold -128 (its absolute value 128 is exact as u8 in `mul_signed`);
        /// activations never do.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn prep_q8_0(w: &BlockQ8_0) -> __m256i {
            load_i8x32(&w.qs)
        }

        weight_scale!($features, d_q4_0, BlockQ4_0);

        weight_scale!($features, d_q5_0, BlockQ5_0);

        weight_scale!($features, d_q8_0, BlockQ8_0);

        /// `(d_w * d_a, 0)` for the symmetric formats, the product in every lane.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn symmetric_scale(d: __m256, a: &BlockQ8_0) -> (__m256, f32) {
            (_mm256_mul_ps(d, splat_f16(a.d)), 0.0)
        }

        weight_scale_min!($features, dm_q4_1, BlockQ4_1);

        weight_scale_min!($features, dm_q5_1, BlockQ5_1);

        /// `(d_w * d_a, m_w * s_a)` with one multiply of `[d_w, m_w]` by the adjacent f16
        /// `[d_a, s_a]` (the same two f32 products as the scalar reference).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn affine_scale(dm: __m128, a: &BlockQ8_1) -> (__m256, f32) {
            let bits = std::ptr::read_unaligned(a as *const BlockQ8_1 as *const i32);
            let products = _mm_mul_ps(dm, _mm_cvtph_ps(_mm_cvtsi32_si128(bits)));
            (
                _mm256_broadcastss_ps(products),
                _mm_cvtss_f32(_mm_movehdup_ps(products)),
            )
        }

        kernels_32!(
            $features,
            dot_q4_0,
            dot4_q4_0,
            BlockQ4_0,
            BlockQ8_0,
            prep_q4_0,
            parts_signed,
            mul_signed,
            d_q4_0,
            symmetric_scale,
            false
        );

        kernels_32!(
            $features,
            dot_q4_1,
            dot4_q4_1,
            BlockQ4_1,
            BlockQ8_1,
            prep_q4_1,
            parts_unsigned,
            mul_unsigned,
            dm_q4_1,
            affine_scale,
            true
        );

        kernels_32!(
            $features,
            dot_q5_0,
            dot4_q5_0,
            BlockQ5_0,
            BlockQ8_0,
            prep_q5_0,
            parts_signed,
            mul_signed,
            d_q5_0,
            symmetric_scale,
            false
        );

        kernels_32!(
            $features,
            dot_q5_1,
            dot4_q5_1,
            BlockQ5_1,
            BlockQ8_1,
            prep_q5_1,
            parts_unsigned,
            mul_unsigned,
            dm_q5_1,
            affine_scale,
            true
        );

        kernels_32!(
            $features,
            dot_q8_0,
            dot4_q8_0,
            BlockQ8_0,
            BlockQ8_0,
            prep_q8_0,
            parts_signed,
            mul_signed,
            d_q8_0,
            symmetric_scale,
            false
        );

        /// Lane-wise parts of Σ_j m[j] · (sum of the activation quants of sub-block j), the
        /// K-quant offsets; only their total matters, so they are accumulated as vectors.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn k_offsets(mins: __m256i, a: &BlockQ8K) -> __m256 {
            let bsums = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
            _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins))
        }

        /// The 8 sub-block mins as 16 i16 lanes, each repeated for its two 16-value group sums.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn mins_per_group(m: &[u8; 8]) -> __m256i {
            let bytes = _mm_loadl_epi64(m.as_ptr() as *const __m128i);
            _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(bytes, bytes))
        }

        /// Adds to `acc` the 32 i16 pair sums of two sub-blocks times their scales.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn add_scaled_pair(
            acc: __m256i,
            q_lo: __m256i,
            q_hi: __m256i,
            a: *const i8,
            sc_lo: u8,
            sc_hi: u8,
        ) -> __m256i {
            let p_lo = _mm256_maddubs_epi16(q_lo, _mm256_loadu_si256(a as *const __m256i));
            let p_hi = _mm256_maddubs_epi16(q_hi, _mm256_loadu_si256(a.add(32) as *const __m256i));
            let acc = madd_acc(acc, p_lo, _mm256_set1_epi16(sc_lo as i16));
            madd_acc(acc, p_hi, _mm256_set1_epi16(sc_hi as i16))
        }

        /// Adds one Q4_K/Q5_K super-block's scaled integer sums to `acc` and its
        /// min offsets to `offsets`, for one activation row.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn add_k_block(
            acc: &mut __m256,
            offsets: &mut __m256,
            isum: __m256i,
            d: __m256,
            dmin: __m256,
            mins: __m256i,
            a: &BlockQ8K,
        ) {
            let a_d = _mm256_set1_ps(a.d);
            *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, a_d), _mm256_cvtepi32_ps(isum), *acc);
            *offsets = _mm256_fmadd_ps(_mm256_mul_ps(dmin, a_d), k_offsets(mins, a), *offsets);
        }

        /// Q4_K against `N` activation rows; each row sees exactly the single-row sequence of
        /// operations, so every result is bitwise independent of `N`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_q4_k_rows<const N: usize>(w: &[BlockQ4K], a: [&[BlockQ8K]; N]) -> [f32; N] {
            let low_nibble = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); N];
            let mut offsets = [_mm256_setzero_ps(); N];
            let n = a.iter().fold(w.len(), |n, row| n.min(row.len()));
            for (b, w) in w[..n].iter().enumerate() {
                let (sc, m) = crate::quant::unpack_scales_mins(&w.scales);
                let mins = mins_per_group(&m);
                let (d, dmin) = (splat_f16(w.d), splat_f16(w.dmin));
                let mut isum = [_mm256_setzero_si256(); N];
                for c in 0..4 {
                    let packed = _mm256_loadu_si256(w.qs.as_ptr().add(32 * c) as *const __m256i);
                    let q_lo = _mm256_and_si256(packed, low_nibble);
                    let q_hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_nibble);
                    for r in 0..N {
                        let act = a[r][b].qs.as_ptr().add(64 * c);
                        isum[r] =
                            add_scaled_pair(isum[r], q_lo, q_hi, act, sc[2 * c], sc[2 * c + 1]);
                    }
                }
                for r in 0..N {
                    add_k_block(
                        &mut acc[r],
                        &mut offsets[r],
                        isum[r],
                        d,
                        dmin,
                        mins,
                        &a[r][b],
                    );
                }
            }
            std::array::from_fn(|r| hsum_ps(acc[r]) - hsum_ps(offsets[r]))
        }

        /// Q5_K against `N` activation rows (see [`dot_q4_k_rows`]).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_q5_k_rows<const N: usize>(w: &[BlockQ5K], a: [&[BlockQ8K]; N]) -> [f32; N] {
            let low_nibble = _mm256_set1_epi8(0x0F);
            let one = _mm256_set1_epi8(1);
            let mut acc = [_mm256_setzero_ps(); N];
            let mut offsets = [_mm256_setzero_ps(); N];
            let n = a.iter().fold(w.len(), |n, row| n.min(row.len()));
            for (b, w) in w[..n].iter().enumerate() {
                let (sc, m) = crate::quant::unpack_scales_mins(&w.scales);
                let mins = mins_per_group(&m);
                let (d, dmin) = (splat_f16(w.d), splat_f16(w.dmin));
                let mut high = _mm256_loadu_si256(w.qh.as_ptr() as *const __m256i);
                let mut isum = [_mm256_setzero_si256(); N];
                for c in 0..4 {
                    let packed = _mm256_loadu_si256(w.qs.as_ptr().add(32 * c) as *const __m256i);
                    // Shifting 16-bit lanes by < 8 keeps bit 0 of each byte from that same byte.
                    let h_lo = _mm256_slli_epi16(_mm256_and_si256(high, one), 4);
                    let h_hi =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 1), one), 4);
                    high = _mm256_srli_epi16(high, 2);
                    let q_lo = _mm256_or_si256(_mm256_and_si256(packed, low_nibble), h_lo);
                    let q_hi = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_nibble),
                        h_hi,
                    );
                    for r in 0..N {
                        let act = a[r][b].qs.as_ptr().add(64 * c);
                        isum[r] =
                            add_scaled_pair(isum[r], q_lo, q_hi, act, sc[2 * c], sc[2 * c + 1]);
                    }
                }
                for r in 0..N {
                    add_k_block(
                        &mut acc[r],
                        &mut offsets[r],
                        isum[r],
                        d,
                        dmin,
                        mins,
                        &a[r][b],
                    );
                }
            }
            std::array::from_fn(|r| hsum_ps(acc[r]) - hsum_ps(offsets[r]))
        }

        /// Q6_K against `N` activation rows (see [`dot_q4_k_rows`]).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_q6_k_rows<const N: usize>(w: &[BlockQ6K], a: [&[BlockQ8K]; N]) -> [f32; N] {
            let low_nibble = _mm256_set1_epi8(0x0F);
            let two_bits = _mm256_set1_epi8(3);
            let mut acc = [_mm256_setzero_ps(); N];
            let n = a.iter().fold(w.len(), |n, row| n.min(row.len()));
            for (b, w) in w[..n].iter().enumerate() {
                let mut isum = [_mm256_setzero_si256(); N];
                for half in 0..2 {
                    let ql_a = _mm256_loadu_si256(w.ql.as_ptr().add(64 * half) as *const __m256i);
                    let ql_b =
                        _mm256_loadu_si256(w.ql.as_ptr().add(64 * half + 32) as *const __m256i);
                    let qh = _mm256_loadu_si256(w.qh.as_ptr().add(32 * half) as *const __m256i);
                    let high = [
                        _mm256_slli_epi16(_mm256_and_si256(qh, two_bits), 4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two_bits), 4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two_bits), 4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two_bits), 4),
                    ];
                    // Unbiased 0..=63 values; the -32 bias is applied through the group sums below.
                    let quarters = [
                        _mm256_or_si256(_mm256_and_si256(ql_a, low_nibble), high[0]),
                        _mm256_or_si256(_mm256_and_si256(ql_b, low_nibble), high[1]),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql_a, 4), low_nibble),
                            high[2],
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql_b, 4), low_nibble),
                            high[3],
                        ),
                    ];
                    for (k, q) in quarters.into_iter().enumerate() {
                        let group = 8 * half + 2 * k;
                        let scales = _mm256_set_m128i(
                            _mm_set1_epi16(w.scales[group + 1] as i16),
                            _mm_set1_epi16(w.scales[group] as i16),
                        );
                        for r in 0..N {
                            let act = _mm256_loadu_si256(
                                a[r][b].qs.as_ptr().add(128 * half + 32 * k) as *const __m256i,
                            );
                            isum[r] = madd_acc(isum[r], _mm256_maddubs_epi16(q, act), scales);
                        }
                    }
                }
                let scales16 =
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(w.scales.as_ptr() as *const __m128i));
                let d = splat_f16(w.d);
                for r in 0..N {
                    // The -32 bias, lane-wise: only the lanes' total matters.
                    let bsums = _mm256_loadu_si256(a[r][b].bsums.as_ptr() as *const __m256i);
                    let bias = _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales16), 5);
                    let total = _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[r], bias));
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(a[r][b].d));
                    acc[r] = _mm256_fmadd_ps(scale, total, acc[r]);
                }
            }
            std::array::from_fn(|r| hsum_ps(acc[r]))
        }

        kernels_k!($features, dot_q4_k, dot4_q4_k, BlockQ4K, dot_q4_k_rows);

        kernels_k!($features, dot_q5_k, dot4_q5_k, BlockQ5K, dot_q5_k_rows);

        kernels_k!($features, dot_q6_k, dot4_q6_k, BlockQ6K, dot_q6_k_rows);
    };
}

/// AVX2 + FMA + F16C.
pub mod avx2 {
    use super::*;

    /// Bit `i` of `bits` -> byte `i` = 0x10 if set, 0 otherwise.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn high_bits_to_0x10(bits: u32) -> __m256i {
        let replicated = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let is_set = _mm256_cmpeq_epi8(_mm256_and_si256(replicated, select), select);
        _mm256_and_si256(is_set, _mm256_set1_epi8(0x10))
    }

    /// Σ of u8 * i8 products, 8 lanes of i32 (pairs summed by `maddubs`, then quads).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    /// `acc` plus the pairwise i16 products of `p` and `s`, summed into i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn madd_acc(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
    }

    x86_kernels!("avx2,fma,f16c");

    pub use super::half_precision::avx2::{dot4_bf16, dot4_f16, dot_bf16, dot_f16};
}

/// AVX-512 F/BW/VL + VNNI on top of AVX2 (256-bit vectors: the kernels gain the
/// 32-register file, `vpdpbusd` and mask registers, not wider lanes).
pub mod avx512 {
    use super::*;

    /// Bit `i` of `bits` -> byte `i` = 0x10 if set, 0 otherwise.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn high_bits_to_0x10(bits: u32) -> __m256i {
        _mm256_maskz_mov_epi8(bits, _mm256_set1_epi8(0x10))
    }

    /// Σ of u8 * i8 products, 8 lanes of i32, each the sum of the same 4 products as
    /// the AVX2 `maddubs` + `madd` pair.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }

    /// `acc` plus the pairwise i16 products of `p` and `s`: one `vpdpwssd`, the same
    /// lane integers as AVX2's `madd` + `add`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn madd_acc(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, p, s)
    }

    x86_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");

    pub use super::half_precision::avx512::{dot4_bf16, dot4_f16, dot_bf16, dot_f16};

    use std::ops::Range;

    use crate::kernels::ActAux;

    /// Q8_0 quants as unsigned 0..=255 (q + 128, a flip of the sign bit).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn unsigned_q8_0(w: &BlockQ8_0) -> __m256i {
        _mm256_xor_si256(load_i8x32(&w.qs), _mm256_set1_epi8(-128))
    }

    /// Q8_0 weight block `b` against `N` activation rows, into accumulators `acc`.
    ///
    /// # Safety
    /// Requires AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI; `b` must be in bounds of
    /// `w` and of every row of `a` and `aux`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn aux_block_q8_0<const N: usize>(
        w: &[BlockQ8_0],
        a: &[&[BlockQ8_0]; N],
        aux: &[&[ActAux]; N],
        b: usize,
        acc: &mut [__m256; N],
    ) {
        let u = unsigned_q8_0(w.get_unchecked(b));
        let d = splat_f16(w.get_unchecked(b).d);
        for r in 0..N {
            let side = aux[r].get_unchecked(b);
            let init = _mm256_loadu_si256(side.lane_init.as_ptr() as *const __m256i);
            let isum = _mm256_dpbusd_epi32(init, u, load_i8x32(&a[r].get_unchecked(b).qs));
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(side.d));
            acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum), acc[r]);
        }
    }

    /// Q8_0 against `N` activation rows with their [`ActAux`]: each lane starts from
    /// `-128 · Σa` and `vpdpbusd` adds Σ (q + 128)·a, leaving the integers of
    /// [`unrolled_dot`]'s lanes; the scale is the same f32 product and even and odd
    /// blocks go to separate accumulators as there, so results are bitwise equal.
    ///
    /// # Safety
    /// Requires AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn aux_q8_0<const N: usize>(
        w: &[BlockQ8_0],
        a: [&[BlockQ8_0]; N],
        aux: [&[ActAux]; N],
    ) -> [f32; N] {
        let n = (0..N).fold(w.len(), |n, r| n.min(a[r].len()).min(aux[r].len()));
        let mut even = [_mm256_setzero_ps(); N];
        let mut odd = [_mm256_setzero_ps(); N];
        // SAFETY (the unchecked indexing in `aux_block_q8_0`): every block index is
        // below `n`, the shortest slice's length.
        for p in 0..n / 2 {
            aux_block_q8_0(w, &a, &aux, 2 * p, &mut even);
            aux_block_q8_0(w, &a, &aux, 2 * p + 1, &mut odd);
        }
        if n % 2 == 1 {
            aux_block_q8_0(w, &a, &aux, n - 1, &mut even);
        }
        std::array::from_fn(|r| hsum_ps(_mm256_add_ps(even[r], odd[r])))
    }

    /// Every output of weight rows `rows` for activation rows `tokens`, four
    /// activation rows at a time: the loops live in the kernel's own function so
    /// the row kernels inline into them instead of returning their results through
    /// memory to a caller, once per four rows.
    ///
    /// # Safety
    /// Requires AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI. `out` must be valid for
    /// writes at `i * out_features + r` for every `i` in `tokens` and `r` in `rows`,
    /// elements no other thread touches during the call.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn aux_tile_q8_0(
        w: &[BlockQ8_0],
        blocks_per_row: usize,
        rows: Range<usize>,
        a: &[BlockQ8_0],
        aux: &[ActAux],
        tokens: Range<usize>,
        out: *mut f32,
        out_features: usize,
    ) {
        let a_row = |i: usize| &a[i * blocks_per_row..(i + 1) * blocks_per_row];
        let aux_row = |i: usize| &aux[i * blocks_per_row..(i + 1) * blocks_per_row];
        for r in rows {
            let w_row = &w[r * blocks_per_row..(r + 1) * blocks_per_row];
            let mut i = tokens.start;
            while i + 4 <= tokens.end {
                let y = aux_q8_0::<4>(
                    w_row,
                    std::array::from_fn(|k| a_row(i + k)),
                    std::array::from_fn(|k| aux_row(i + k)),
                );
                for (k, v) in y.into_iter().enumerate() {
                    *out.add((i + k) * out_features + r) = v;
                }
                i += 4;
            }
            for i in i..tokens.end {
                *out.add(i * out_features + r) = aux_q8_0::<1>(w_row, [a_row(i)], [aux_row(i)])[0];
            }
        }
    }
}

/// `$m!(t)` for each literal `t`: the token loops unrolled by hand (LLVM kept a rolled
/// loop whose sums lived on the stack, one store-to-load round trip per token and block).
macro_rules! unroll {
    ($m:ident: $($t:literal)*) => {
        $($m!($t);)*
    };
}

/// `N` activation rows starting at token `first` against 8 weight rows: one f32
/// lane per weight row.
macro_rules! rows8_tokens {
    ($features:literal, $name:ident, $block:ty, $prep:ident) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const N: usize>(
            rows: &[*const $block; ROWS],
            blocks_per_row: usize,
            (a, aux): (&[BlockQ8_0], &[ActAux]),
            first: usize,
        ) -> [__m256; N] {
            const { assert!(N <= 16) };
            let mut sums = [_mm256_setzero_ps(); N];
            // The hardware prefetchers do not follow 8 interleaved streams a few
            // lines long each (Gemma-3's Q5_0 rows are 7 lines); decode stalled on
            // every group's first loads until the groups ahead were fetched here.
            let group_bytes = ROWS * std::mem::size_of::<$block>();
            for j in 0..blocks_per_row {
                prefetch_group_ahead(rows[0] as *const i8, blocks_per_row, group_bytes, j);
                let (quants, d) = $prep(rows, j);
                macro_rules! token {
                    ($t:literal) => {
                        if $t < N {
                            let at = (first + $t) * blocks_per_row + j;
                            let side = aux.get_unchecked(at);
                            let qa = a.get_unchecked(at).qs.as_ptr() as *const i32;
                            // The lanes start from -bias·Σa, which cancels the bias
                            // of the unsigned weight quants.
                            // With few tokens nothing hides the latency of one
                            // chain of 8 `vpdpbusd` per block: split it in four.
                            let chains = if N < 4 { 4 } else { 1 };
                            let mut isum = [_mm256_setzero_si256(); 4];
                            isum[0] = _mm256_set1_epi32(side.block_init);
                            for (g, q) in quants.iter().enumerate() {
                                let four = _mm256_set1_epi32(qa.add(g).read_unaligned());
                                let c = g % chains;
                                isum[c] = dpbusd_acc(isum[c], *q, four);
                            }
                            let isum = if chains == 1 {
                                isum[0]
                            } else {
                                _mm256_add_epi32(
                                    _mm256_add_epi32(isum[0], isum[1]),
                                    _mm256_add_epi32(isum[2], isum[3]),
                                )
                            };
                            let scale = _mm256_mul_ps(d, _mm256_set1_ps(side.d));
                            sums[$t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, sums[$t]);
                        }
                    };
                }
                unroll!(token: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            }
            sums
        }
    };
}

/// `N` activation rows starting at token `first` against 8 weight rows of an offset
/// format (Q4_1, Q5_1: `x = d·q + m` with unsigned `q`, so no bias to cancel), one f32
/// lane per weight row. Per block and lane the scalar reference's expression
/// `isum·(d·d_a) + m·s_a`, added to the row's sum, so results are `dot_ref`'s bits.
macro_rules! rows8_affine_tokens {
    ($features:literal, $name:ident, $block:ty, $prep:ident) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const N: usize>(
            rows: &[*const $block; ROWS],
            blocks_per_row: usize,
            (a,): (&[BlockQ8_1],),
            first: usize,
        ) -> [__m256; N] {
            const { assert!(N <= 16) };
            let mut sums = [_mm256_setzero_ps(); N];
            let group_bytes = ROWS * std::mem::size_of::<$block>();
            for j in 0..blocks_per_row {
                prefetch_group_ahead(rows[0] as *const i8, blocks_per_row, group_bytes, j);
                let (quants, d, m) = $prep(rows, j);
                macro_rules! token {
                    ($t:literal) => {
                        if $t < N {
                            let act = a.get_unchecked((first + $t) * blocks_per_row + j);
                            let qa = act.qs.as_ptr() as *const i32;
                            // As in `rows8_tokens`: short tiles split the chain.
                            let chains = if N < 4 { 4 } else { 1 };
                            let mut isum = [_mm256_setzero_si256(); 4];
                            for (g, q) in quants.iter().enumerate() {
                                let four = _mm256_set1_epi32(qa.add(g).read_unaligned());
                                let c = g % chains;
                                isum[c] = dpbusd_acc(isum[c], *q, four);
                            }
                            let isum = if chains == 1 {
                                isum[0]
                            } else {
                                _mm256_add_epi32(
                                    _mm256_add_epi32(isum[0], isum[1]),
                                    _mm256_add_epi32(isum[2], isum[3]),
                                )
                            };
                            // The activation's adjacent f16 d and s in one conversion.
                            let bits = std::ptr::read_unaligned(act as *const BlockQ8_1 as *const i32);
                            let ds = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
                            let da = _mm256_broadcastss_ps(ds);
                            let sa = _mm256_broadcastss_ps(_mm_movehdup_ps(ds));
                            let scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, da));
                            let block = _mm256_add_ps(scaled, _mm256_mul_ps(m, sa));
                            sums[$t] = _mm256_add_ps(sums[$t], block);
                        }
                    };
                }
                unroll!(token: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            }
            sums
        }
    };
}

/// A tile kernel (see `AuxTileFn` and `TileFn`; `aux` for the former): weight rows
/// in groups of 8 (the last group re-reads its last row in the missing lanes and
/// stores only the real ones), activation rows in tiles of the given sizes, largest
/// first.
macro_rules! rows8_tile {
    ($features:literal, $name:ident, $tokens:ident, $block:ty, $act:ty, [$($n:literal),*] $(, $aux:ident)?) => {
        /// # Safety
        /// Requires AVX2, FMA, F16C, AVX-512 F/BW/VL, VNNI and BITALG. `out` must
        /// be valid for writes at `i * out_features + r` for every `i` in `tokens`
        /// and `r` in `rows`, elements no other thread touches during the call;
        /// `w` must hold every row of `rows`, the activations every token.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub unsafe fn $name(
            w: &[$block],
            blocks_per_row: usize,
            rows: Range<usize>,
            a: &[$act],
            $($aux: &[ActAux],)?
            tokens: Range<usize>,
            out: *mut f32,
            out_features: usize,
        ) {
            for first_row in rows.clone().step_by(ROWS) {
                let real = ROWS.min(rows.end - first_row);
                let row_of = |k: usize| first_row + k.min(real - 1);
                let row_ptrs: [*const $block; ROWS] =
                    std::array::from_fn(|k| w.as_ptr().add(row_of(k) * blocks_per_row));
                let store = |token: usize, lanes: __m256| {
                    let dst = out.add(token * out_features + first_row);
                    store_lanes(dst, real, lanes);
                };
                // The token kernels take the activations (and aux) as one tuple.
                let acts = (a, $($aux)?);
                let mut i = tokens.start;
                $(
                    while tokens.end - i >= $n {
                        let sums = $tokens::<$n>(&row_ptrs, blocks_per_row, acts, i);
                        for (t, lanes) in sums.into_iter().enumerate() {
                            store(i + t, lanes);
                        }
                        i += $n;
                    }
                )*
            }
        }
    };
}

/// Rows-in-lanes tile kernels for Q4_0, Q5_0, Q4_1 and Q5_1 (Q4_K:
/// [`rows8_q4_k_kernel`]): eight
/// weight rows share each vector, lane `r` holding row `r`, so one `vpdpbusd` against
/// four broadcast activation quants advances eight rows' exact block sums, and the
/// block's scale multiply and sum are one vector op each for all eight rows instead of
/// one per row plus a horizontal sum at the end. Compiled per instruction set in
/// [`rows8`] on that set's `dpbusd_acc`, `add_high_bits`, `low_words` and
/// `store_lanes`.
///
/// Each output is the scalar reference's own arithmetic: per block, the exact integer
/// sum times the f32 product of the two scales (plus, for Q4_1/Q5_1, the weight's min
/// times the activation's block sum), added in block order. So these
/// kernels are bitwise equal to `BlockFormat::dot_ref` on every machine.
macro_rules! rows8_kernels {
    ($features:literal, $sym_tiles:tt) => {
        /// Weight rows per vector.
        const ROWS: usize = 8;
        /// How far ahead, in groups of [`ROWS`] weight rows, the kernels prefetch.
        const PREFETCH_GROUPS_AHEAD: usize = 2;

        /// Loads the 16 packed bytes at each of 8 row pointers and regroups them so that
        /// vector `g` holds bytes `4g..4g+4` of every row, row `r` in i32 lane `r`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn packed_groups(qs: [*const u8; ROWS]) -> [__m256i; 4] {
            let pair = |r: usize| {
                _mm256_inserti128_si256::<1>(
                    _mm256_castsi128_si256(_mm_loadu_si128(qs[r] as *const __m128i)),
                    _mm_loadu_si128(qs[r + 4] as *const __m128i),
                )
            };
            // Each 128-bit half holds rows (r, r + 4); two unpack rounds transpose the
            // 4×4 dword matrix of each half.
            let (r04, r15, r26, r37) = (pair(0), pair(1), pair(2), pair(3));
            let lo01 = _mm256_unpacklo_epi32(r04, r15);
            let hi01 = _mm256_unpackhi_epi32(r04, r15);
            let lo23 = _mm256_unpacklo_epi32(r26, r37);
            let hi23 = _mm256_unpackhi_epi32(r26, r37);
            [
                _mm256_unpacklo_epi64(lo01, lo23),
                _mm256_unpackhi_epi64(lo01, lo23),
                _mm256_unpacklo_epi64(hi01, hi23),
                _mm256_unpackhi_epi64(hi01, hi23),
            ]
        }

        /// The 32 values of 8 rows' blocks as 8 vectors of unsigned quants, vector `g`
        /// holding values `4g..4g+4` of each row: low nibbles of the packed bytes are
        /// values 0..16, high nibbles 16..32 (ggml's Q4/Q5 order).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn nibble_groups(qs: [*const u8; ROWS]) -> [__m256i; 8] {
            let packed = packed_groups(qs);
            let low = _mm256_set1_epi8(0x0F);
            std::array::from_fn(|g| {
                if g < 4 {
                    _mm256_and_si256(packed[g], low)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16::<4>(packed[g - 4]), low)
                }
            })
        }

        /// The 8 rows' f16 scales (the first two bytes of each block, in the low half of
        /// `first_words`' lanes) as f32 lanes.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn row_scales(first_words: __m256i) -> __m256 {
            _mm256_cvtph_ps(low_words(first_words))
        }

        /// Q4_0: unsigned quants (q + 8) and scales of block `j` of 8 rows.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn prep_q4_0(rows: &[*const BlockQ4_0; ROWS], j: usize) -> ([__m256i; 8], __m256) {
            let blocks = rows.map(|p| p.add(j));
            let quants = nibble_groups(blocks.map(|b| (*b).qs.as_ptr()));
            let header = packed_groups(blocks.map(|b| b as *const u8));
            (quants, row_scales(header[0]))
        }

        /// Q5_0: unsigned quants (q + 16) and scales of block `j` of 8 rows. Bit 4 of
        /// value `4g + k` of row `r` is bit `4g + k` of that row's `qh`; one bit shuffle
        /// per group picks those bits for all rows into a byte mask.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn prep_q5_0(rows: &[*const BlockQ5_0; ROWS], j: usize) -> ([__m256i; 8], __m256) {
            let blocks = rows.map(|p| p.add(j));
            let mut quants = nibble_groups(blocks.map(|b| (*b).qs.as_ptr()));
            // Bytes 0..8 of each row (d, qh, two quant bytes) transposed like the
            // quants, then qh = bytes 2..6: lane r = row r's qh, each 64-bit lane
            // holding rows (2i, 2i + 1).
            let header = packed_groups(blocks.map(|b| b as *const u8));
            let qh = _mm256_or_si256(
                _mm256_srli_epi32::<16>(header[0]),
                _mm256_slli_epi32::<16>(header[1]),
            );
            for (g, q) in quants.iter_mut().enumerate() {
                *q = add_high_bits(*q, qh, g);
            }
            (quants, row_scales(header[0]))
        }

        /// Prefetches block `j` of the 8-row group `PREFETCH_GROUPS_AHEAD` ahead. The
        /// group's rows are contiguous, so block `j` of all of them is the `j`-th run of
        /// `group_bytes` (8 blocks' bytes) of that group's span, fetched in step with
        /// this group's block `j`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn prefetch_group_ahead(
            group_start: *const i8,
            blocks_per_row: usize,
            group_bytes: usize,
            j: usize,
        ) {
            let ahead = (PREFETCH_GROUPS_AHEAD * blocks_per_row + j) * group_bytes;
            let next = group_start.wrapping_add(ahead);
            for line in 0..group_bytes.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64 * line));
            }
        }

        rows8_tokens!($features, tokens_q4_0, BlockQ4_0, prep_q4_0);
        rows8_tokens!($features, tokens_q5_0, BlockQ5_0, prep_q5_0);
        rows8_tile!(
            $features,
            rows8_tile_q4_0,
            tokens_q4_0,
            BlockQ4_0,
            BlockQ8_0,
            $sym_tiles,
            aux
        );
        rows8_tile!(
            $features,
            rows8_tile_q5_0,
            tokens_q5_0,
            BlockQ5_0,
            BlockQ8_0,
            $sym_tiles,
            aux
        );

        /// The 8 rows' f16 `d` and `m` (the first four bytes of a Q4_1/Q5_1 block, in
        /// `first_words`' lanes) as f32 lanes.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn row_scales_mins(first_words: __m256i) -> (__m256, __m256) {
            (
                row_scales(first_words),
                row_scales(_mm256_srli_epi32::<16>(first_words)),
            )
        }

        /// Q4_1: quants (0..=15, already unsigned), scales and mins of block `j` of 8 rows.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn prep_q4_1(
            rows: &[*const BlockQ4_1; ROWS],
            j: usize,
        ) -> ([__m256i; 8], __m256, __m256) {
            let blocks = rows.map(|p| p.add(j));
            let quants = nibble_groups(blocks.map(|b| (*b).qs.as_ptr()));
            let header = packed_groups(blocks.map(|b| b as *const u8));
            let (d, m) = row_scales_mins(header[0]);
            (quants, d, m)
        }

        /// Q5_1: quants (0..=31), scales and mins of block `j` of 8 rows; the high
        /// bits as for Q5_0, `qh` being bytes 4..8 of each block.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn prep_q5_1(
            rows: &[*const BlockQ5_1; ROWS],
            j: usize,
        ) -> ([__m256i; 8], __m256, __m256) {
            let blocks = rows.map(|p| p.add(j));
            let mut quants = nibble_groups(blocks.map(|b| (*b).qs.as_ptr()));
            let header = packed_groups(blocks.map(|b| b as *const u8));
            for (g, q) in quants.iter_mut().enumerate() {
                *q = add_high_bits(*q, header[1], g);
            }
            let (d, m) = row_scales_mins(header[0]);
            (quants, d, m)
        }

        rows8_affine_tokens!($features, tokens_q4_1, BlockQ4_1, prep_q4_1);
        rows8_affine_tokens!($features, tokens_q5_1, BlockQ5_1, prep_q5_1);
        rows8_tile!(
            $features,
            rows8_tile_q4_1,
            tokens_q4_1,
            BlockQ4_1,
            BlockQ8_1,
            $sym_tiles
        );
        rows8_tile!(
            $features,
            rows8_tile_q5_1,
            tokens_q5_1,
            BlockQ5_1,
            BlockQ8_1,
            $sym_tiles
        );
    };
}

/// The Q4_K rows-in-lanes kernel (AVX-512 only: with AVX2's 16 registers and
/// `maddubs` + `madd` it ran 20% slower than the plain kernel on one row).
macro_rules! rows8_q4_k_kernel {
    ($features:literal, $k_tiles:tt) => {
        /// `N` (at most 8: with 16, twice the registers in flight measured 10% slower)
        /// activation rows starting at token `first` against 8 Q4_K weight rows.
        /// Per super-block and row lane, like `dot_ref`: the exact `Σ sc·(Σ q·a)` over the
        /// 8 sub-blocks (`vpdpbusd` per 4 values, `vpmulld` per sub-block) and the exact
        /// `Σ m·bsum` (`vpdpwssd` with each min in both halves of a lane, against pairs of
        /// the activation's 16-value sums), then the reference's f32 expression.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn tokens_q4_k<const N: usize>(
            rows: &[*const BlockQ4K; ROWS],
            blocks_per_row: usize,
            (a,): (&[BlockQ8K],),
            first: usize,
        ) -> [__m256; N] {
            const { assert!(N <= 8) };
            let mut sums = [_mm256_setzero_ps(); N];
            let group_bytes = ROWS * std::mem::size_of::<BlockQ4K>();
            let low = _mm256_set1_epi8(0x0F);
            for j in 0..blocks_per_row {
                prefetch_group_ahead(rows[0] as *const i8, blocks_per_row, group_bytes, j);
                let blocks = rows.map(|p| p.add(j));
                // Bytes 0..16 of each row transposed: d and dmin, then the 12 bytes of
                // packed 6-bit scales and mins, 4 per vector.
                let [header, s0, s4, s8] = packed_groups(blocks.map(|b| b as *const u8));
                let d = _mm256_cvtph_ps(low_words(header));
                let dmin = _mm256_cvtph_ps(low_words(_mm256_srli_epi32::<16>(header)));
                let six = _mm256_set1_epi8(63);
                let top2 = _mm256_set1_epi8(0xC0u8 as i8);
                // ggml's packing, byte-wise (each shift is masked first so no bit crosses
                // into a neighbouring byte): scales and mins 0..4 are the low 6 bits of
                // bytes 0..4 and 4..8; 4..8 join a nibble of bytes 8..12 with those bytes'
                // top two bits.
                let sc_lo = _mm256_and_si256(s0, six);
                let m_lo = _mm256_and_si256(s4, six);
                let sc_hi = _mm256_or_si256(
                    _mm256_and_si256(s8, low),
                    _mm256_srli_epi16::<2>(_mm256_and_si256(s0, top2)),
                );
                let m_hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(s8), low),
                    _mm256_srli_epi16::<2>(_mm256_and_si256(s4, top2)),
                );
                // Sub-block k's byte as an i32 lane.
                let byte = |v: __m256i, k: usize| {
                    let shifted = match k % 4 {
                        0 => v,
                        1 => _mm256_srli_epi32::<8>(v),
                        2 => _mm256_srli_epi32::<16>(v),
                        _ => _mm256_srli_epi32::<24>(v),
                    };
                    _mm256_and_si256(shifted, _mm256_set1_epi32(0xFF))
                };
                let scales: [__m256i; 8] =
                    std::array::from_fn(|k| byte(if k < 4 { sc_lo } else { sc_hi }, k));
                // Each min in both i16 halves of its lane, for `vpdpwssd`.
                let mins: [__m256i; 8] = std::array::from_fn(|k| {
                    let m = byte(if k < 4 { m_lo } else { m_hi }, k);
                    _mm256_or_si256(m, _mm256_slli_epi32::<16>(m))
                });
                let mut scaled = [_mm256_setzero_si256(); N];
                for c in 0..4 {
                    // Bytes 32c..32c+32 of each row: low nibbles are sub-block 2c,
                    // high nibbles sub-block 2c + 1.
                    let first_half = packed_groups(blocks.map(|b| (*b).qs.as_ptr().add(32 * c)));
                    let second_half =
                        packed_groups(blocks.map(|b| (*b).qs.as_ptr().add(32 * c + 16)));
                    let packed: [__m256i; 8] = std::array::from_fn(|g| {
                        if g < 4 {
                            first_half[g]
                        } else {
                            second_half[g - 4]
                        }
                    });
                    let lo_q = packed.map(|p| _mm256_and_si256(p, low));
                    let hi_q = packed.map(|p| _mm256_and_si256(_mm256_srli_epi16::<4>(p), low));
                    let (lo_sc, hi_sc) = (scales[2 * c], scales[2 * c + 1]);
                    macro_rules! token {
                        ($t:literal) => {
                            if $t < N {
                                let at = (first + $t) * blocks_per_row + j;
                                let qa = a.get_unchecked(at).qs.as_ptr().add(64 * c) as *const i32;
                                let mut lo = _mm256_setzero_si256();
                                let mut hi = _mm256_setzero_si256();
                                for g in 0..8 {
                                    let four = _mm256_set1_epi32(qa.add(g).read_unaligned());
                                    lo = dpbusd_acc(lo, lo_q[g], four);
                                    let four = _mm256_set1_epi32(qa.add(8 + g).read_unaligned());
                                    hi = dpbusd_acc(hi, hi_q[g], four);
                                }
                                let both = _mm256_add_epi32(
                                    _mm256_mullo_epi32(lo, lo_sc),
                                    _mm256_mullo_epi32(hi, hi_sc),
                                );
                                scaled[$t] = _mm256_add_epi32(scaled[$t], both);
                            }
                        };
                    }
                    unroll!(token: 0 1 2 3 4 5 6 7);
                }
                for (t, sum) in sums.iter_mut().enumerate() {
                    let act = a.get_unchecked((first + t) * blocks_per_row + j);
                    let pairs = act.bsums.as_ptr() as *const i32;
                    let mut offsets = _mm256_setzero_si256();
                    for (k, m) in mins.iter().enumerate() {
                        let pair = _mm256_set1_epi32(pairs.add(k).read_unaligned());
                        offsets = dpwssd_acc(offsets, *m, pair);
                    }
                    let da = _mm256_set1_ps(act.d);
                    let scaled_term =
                        _mm256_mul_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(scaled[t]));
                    let offset_term =
                        _mm256_mul_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(offsets));
                    *sum = _mm256_add_ps(*sum, _mm256_sub_ps(scaled_term, offset_term));
                }
            }
            sums
        }

        rows8_tile!(
            $features,
            rows8_tile_q4_k,
            tokens_q4_k,
            BlockQ4K,
            BlockQ8K,
            $k_tiles
        );
    };
}

/// The rows-in-lanes kernels per instruction set; both give `dot_ref`'s bits.
pub mod rows8 {
    /// AVX2 + FMA + F16C, Q4_0 and Q5_0: `maddubs` + `madd` for `vpdpbusd` (exact:
    /// the unsigned quants are at most 31, so no pair of products saturates i16),
    /// compare-and-mask for the Q5 high bits. 16 registers: tiles of at most 8
    /// activation rows.
    pub mod avx2 {
        use std::ops::Range;

        use super::super::*;
        use crate::kernels::ActAux;

        /// `acc` plus, per i32 lane, the 4 products of unsigned `u` and signed `s`
        /// bytes; exact while no two adjacent products sum past i16.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn dpbusd_acc(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
            let pairs = _mm256_maddubs_epi16(u, s);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }

        /// The low 16 bits of each i32 lane, in lane order.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn low_words(v: __m256i) -> __m128i {
            let words = _mm256_setr_epi8(
                0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13,
                -1, -1, -1, -1, -1, -1, -1, -1,
            );
            let packed = _mm256_shuffle_epi8(v, words);
            _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(packed))
        }

        /// `q` plus 0x10 in byte `4r + k` where bit `4g + k` of lane `r` of `qh` is set.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn add_high_bits(q: __m256i, qh: __m256i, g: usize) -> __m256i {
            let shifted = _mm256_srlv_epi32(qh, _mm256_set1_epi32(4 * g as i32));
            let low_byte = _mm256_setr_epi8(
                0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12, 0, 0, 0, 0, 4, 4, 4, 4, 8, 8,
                8, 8, 12, 12, 12, 12,
            );
            let spread = _mm256_shuffle_epi8(shifted, low_byte);
            let bit = _mm256_set1_epi32(0x0804_0201);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
            _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(0x10)))
        }

        /// Stores the first `real` lanes of `v`.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn store_lanes(dst: *mut f32, real: usize, v: __m256) {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(real as i32), lane);
            _mm256_maskstore_ps(dst, keep, v);
        }

        rows8_kernels!("avx2,fma,f16c", [8, 4, 1]);
    }

    /// AVX-512 F/BW/VL, VNNI and BITALG: one `vpdpbusd` per 4 values, one
    /// `vpshufbitqmb` per group of Q5 high bits, 32 registers: tiles of 16
    /// activation rows (8 for Q4_K, whose 16 held twice the registers and ran 10%
    /// slower).
    pub mod avx512 {
        use std::ops::Range;

        use super::super::*;
        use crate::kernels::ActAux;

        #[inline]
        #[target_feature(
            enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg"
        )]
        unsafe fn dpbusd_acc(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
            _mm256_dpbusd_epi32(acc, u, s)
        }

        #[inline]
        #[target_feature(
            enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg"
        )]
        unsafe fn dpwssd_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
            _mm256_dpwssd_epi32(acc, a, b)
        }

        #[inline]
        #[target_feature(
            enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg"
        )]
        unsafe fn low_words(v: __m256i) -> __m128i {
            _mm256_cvtepi32_epi16(v)
        }

        /// `q` plus 0x10 in byte `4r + k` where bit `4g + k` of lane `r` of `qh` is
        /// set: one bit shuffle picks those bits of every row (each 64-bit lane of
        /// `qh` holds rows `2i` and `2i + 1`) into a byte mask.
        #[inline]
        #[target_feature(
            enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg"
        )]
        unsafe fn add_high_bits(q: __m256i, qh: __m256i, g: usize) -> __m256i {
            let bit_of_byte = _mm256_setr_epi8(
                0, 1, 2, 3, 32, 33, 34, 35, 0, 1, 2, 3, 32, 33, 34, 35, 0, 1, 2, 3, 32, 33, 34, 35,
                0, 1, 2, 3, 32, 33, 34, 35,
            );
            let select = _mm256_add_epi8(bit_of_byte, _mm256_set1_epi8(4 * g as i8));
            let set = _mm256_bitshuffle_epi64_mask(qh, select);
            _mm256_mask_add_epi8(q, set, q, _mm256_set1_epi8(0x10))
        }

        #[inline]
        #[target_feature(
            enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg"
        )]
        unsafe fn store_lanes(dst: *mut f32, real: usize, v: __m256) {
            _mm256_mask_storeu_ps(dst, ((1u32 << real) - 1) as u8, v);
        }

        rows8_kernels!(
            "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg",
            [16, 8, 4, 1]
        );
        rows8_q4_k_kernel!(
            "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg",
            [8, 4, 1]
        );
    }
}
