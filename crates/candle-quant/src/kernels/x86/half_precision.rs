//! F16 and BF16 weights against f32 activations: each weight vector is widened to f32
//! (exactly: both are subsets of f32) and multiplied with FMA, so the only roundings
//! are those of an f32 dot product, in a different order from the scalar reference.
//! F16 widens with `vcvtph2ps`; BF16 holds the top 16 bits of an f32, so a 16-bit
//! shift of the zero-extended bits widens it (AVX-512 BF16's `vdpbf16ps` would round
//! the activations to bf16, which these formats never do).
//!
//! Every row keeps two accumulators (even and odd vectors) so the loop is not bound by
//! the FMA latency. The `N`-row kernels load each weight vector once for `N`
//! activation rows and run exactly the single-row operations on each, so every result
//! is bitwise equal to the single-row kernel's.

#[cfg(target_arch = "x86")]
use std::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use half::{bf16, f16};

/// `$rows::<N>` for weights of type `$elem` widened by `$widen`, and the one- and
/// four-row kernels `$dot`, `$dot4` on it. The caller module defines `LANES`, `Vec`,
/// `load_weights(p, remaining)`, `load_acts(p, remaining)` (both reading
/// `min(remaining, LANES)` values and zero-filling the rest), `fmadd` and `total`.
macro_rules! half_precision_kernels {
    ($features:literal, $rows:ident, $dot:ident, $dot4:ident, $elem:ty, $widen:ident) => {
        /// # Safety
        /// Requires the module's CPU features.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $rows<const N: usize>(w: &[$elem], a: [&[f32]; N]) -> [f32; N] {
            let n = a.iter().fold(w.len(), |n, row| n.min(row.len()));
            let mut acc = [[zero(); 2]; N];
            // Every index below is under `n`, the shortest slice's length; the last,
            // partial vector reads only the `n - i` values left.
            let mut i = 0;
            while i + 2 * LANES <= n {
                for k in 0..2 {
                    let wv = $widen(load_weights(w.as_ptr().add(i + k * LANES), LANES));
                    for r in 0..N {
                        let av = load_acts(a[r].as_ptr().add(i + k * LANES), LANES);
                        acc[r][k] = fmadd(wv, av, acc[r][k]);
                    }
                }
                i += 2 * LANES;
            }
            while i < n {
                let left = n - i;
                let wv = $widen(load_weights(w.as_ptr().add(i), left));
                for r in 0..N {
                    acc[r][0] = fmadd(wv, load_acts(a[r].as_ptr().add(i), left), acc[r][0]);
                }
                i += LANES;
            }
            std::array::from_fn(|r| total(acc[r]))
        }

        /// # Safety
        /// Requires the module's CPU features.
        #[target_feature(enable = $features)]
        pub unsafe fn $dot(w: &[$elem], a: &[f32]) -> f32 {
            $rows::<1>(w, [a])[0]
        }

        /// # Safety
        /// Requires the module's CPU features.
        #[target_feature(enable = $features)]
        pub unsafe fn $dot4(w: &[$elem], a: [&[f32]; 4]) -> [f32; 4] {
            $rows::<4>(w, a)
        }
    };
}

/// AVX2 + FMA + F16C: 8 lanes.
pub mod avx2 {
    use super::*;

    const LANES: usize = 8;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fmadd(w: __m256, a: __m256, acc: __m256) -> __m256 {
        _mm256_fmadd_ps(w, a, acc)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn total(acc: [__m256; 2]) -> f32 {
        crate::kernels::x86::avx2::hsum_ps(_mm256_add_ps(acc[0], acc[1]))
    }

    /// Eight 16-bit weights (their bits), the last `8 - remaining` zero when fewer are
    /// left: AVX2 has no 16-bit masked load, so those go through a zeroed copy.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_weights<T: Copy>(p: *const T, remaining: usize) -> __m128i {
        const { assert!(std::mem::size_of::<T>() == 2) };
        if remaining >= LANES {
            return _mm_loadu_si128(p as *const __m128i);
        }
        let mut bits = [0u16; LANES];
        std::ptr::copy_nonoverlapping(p as *const u16, bits.as_mut_ptr(), remaining);
        _mm_loadu_si128(bits.as_ptr() as *const __m128i)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_acts(p: *const f32, remaining: usize) -> __m256 {
        if remaining >= LANES {
            return _mm256_loadu_ps(p);
        }
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(remaining as i32), lane);
        _mm256_maskload_ps(p, mask)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen_f16(bits: __m128i) -> __m256 {
        _mm256_cvtph_ps(bits)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen_bf16(bits: __m128i) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16))
    }

    half_precision_kernels!("avx2,fma,f16c", rows_f16, dot_f16, dot4_f16, f16, widen_f16);
    half_precision_kernels!(
        "avx2,fma,f16c",
        rows_bf16,
        dot_bf16,
        dot4_bf16,
        bf16,
        widen_bf16
    );
}

/// AVX-512 F/BW/VL on top of AVX2: 16 lanes, and masked loads for the last vector.
pub mod avx512 {
    use super::*;

    const LANES: usize = 16;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn fmadd(w: __m512, a: __m512, acc: __m512) -> __m512 {
        _mm512_fmadd_ps(w, a, acc)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn total(acc: [__m512; 2]) -> f32 {
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
    }

    /// The lanes below `remaining` (all 16 when at least 16 are left).
    #[inline]
    fn first_lanes(remaining: usize) -> __mmask16 {
        if remaining >= LANES {
            !0
        } else {
            (1u16 << remaining) - 1
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn load_weights<T: Copy>(p: *const T, remaining: usize) -> __m256i {
        const { assert!(std::mem::size_of::<T>() == 2) };
        _mm256_maskz_loadu_epi16(first_lanes(remaining), p as *const i16)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn load_acts(p: *const f32, remaining: usize) -> __m512 {
        _mm512_maskz_loadu_ps(first_lanes(remaining), p)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn widen_f16(bits: __m256i) -> __m512 {
        _mm512_cvtph_ps(bits)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn widen_bf16(bits: __m256i) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16))
    }

    half_precision_kernels!(
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        rows_f16,
        dot_f16,
        dot4_f16,
        f16,
        widen_f16
    );
    half_precision_kernels!(
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        rows_bf16,
        dot_bf16,
        dot4_bf16,
        bf16,
        widen_bf16
    );
}
