//! The f32 micro-kernels of [`crate::kernels::sgemm`]: a tile of up to 6 rows of `c`
//! in registers, one `b` vector per panel and k step, one broadcast `a` value per row.
//! AVX-512 covers a whole group of 4 panels (24 accumulators of its 32 registers);
//! AVX2 one panel at a time (12 of its 16).

#[cfg(target_arch = "x86")]
use std::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::kernels::sgemm::{TileArgs, MR, PANEL};

/// Lanes of panel `p` that hold columns of `c` (the last panel may be partial).
fn lanes(t: &TileArgs, p: usize) -> usize {
    (t.cols - p * PANEL).min(PANEL)
}

/// # Safety
/// Requires AVX-512 F; the pointers as [`crate::kernels::sgemm`]'s `Kernel::run`
/// documents, and `t.b` 64-byte aligned (the panels are).
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn tile512<const R: usize, const NP: usize>(t: &TileArgs, a: *const f32, c: *mut f32) {
    let masks: [__mmask16; NP] = std::array::from_fn(|p| ((1u32 << lanes(t, p)) - 1) as u16);
    let mut acc = [[_mm512_setzero_ps(); NP]; R];
    if t.accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (p, v) in row.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(masks[p], c.add(r * t.ldc + p * PANEL));
            }
        }
    }
    let mut b = t.b;
    let mut a = a;
    for _ in 0..t.kc {
        let bv: [__m512; NP] = std::array::from_fn(|p| _mm512_load_ps(b.add(p * PANEL)));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r * t.lda));
            for (v, &w) in row.iter_mut().zip(&bv) {
                *v = _mm512_fmadd_ps(av, w, *v);
            }
        }
        b = b.add(t.step);
        a = a.add(1);
    }
    for (r, row) in acc.iter().enumerate() {
        for (p, &v) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(c.add(r * t.ldc + p * PANEL), masks[p], v);
        }
    }
}

/// One tile of `mr` rows × `t.n_panels` panels.
///
/// # Safety
/// As [`tile512`].
#[target_feature(enable = "avx2,fma,avx512f")]
pub(crate) unsafe fn avx512_tile(t: &TileArgs, mr: usize, a: *const f32, c: *mut f32) {
    macro_rules! dispatch {
        ($($r:literal),*) => {
            match (mr, t.n_panels) {
                $(
                    ($r, 1) => tile512::<$r, 1>(t, a, c),
                    ($r, 2) => tile512::<$r, 2>(t, a, c),
                    ($r, 3) => tile512::<$r, 3>(t, a, c),
                    ($r, 4) => tile512::<$r, 4>(t, a, c),
                )*
                _ => unreachable!("tile of {mr} rows x {} panels", t.n_panels),
            }
        };
    }
    const _: () = assert!(MR == 6);
    dispatch!(1, 2, 3, 4, 5, 6)
}

/// # Safety
/// Requires AVX2 and FMA; as [`tile512`] otherwise.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile256<const R: usize>(t: &TileArgs, p: usize, a: *const f32, c: *mut f32) {
    let width = lanes(t, p) as i32;
    let mask = |half: i32| {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(width - 8 * half), lane)
    };
    let masks = [mask(0), mask(1)];
    let c = c.add(p * PANEL);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    if t.accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (h, v) in row.iter_mut().enumerate() {
                *v = _mm256_maskload_ps(c.add(r * t.ldc + 8 * h), masks[h]);
            }
        }
    }
    let mut b = t.b.add(p * PANEL);
    let mut a = a;
    for _ in 0..t.kc {
        let bv = [_mm256_load_ps(b), _mm256_load_ps(b.add(8))];
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(r * t.lda));
            for (v, &w) in row.iter_mut().zip(&bv) {
                *v = _mm256_fmadd_ps(av, w, *v);
            }
        }
        b = b.add(t.step);
        a = a.add(1);
    }
    for (r, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            _mm256_maskstore_ps(c.add(r * t.ldc + 8 * h), masks[h], v);
        }
    }
}

/// One tile of `mr` rows × `t.n_panels` panels, a panel at a time.
///
/// # Safety
/// As [`tile256`].
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn avx2_tile(t: &TileArgs, mr: usize, a: *const f32, c: *mut f32) {
    for p in 0..t.n_panels {
        match mr {
            1 => tile256::<1>(t, p, a, c),
            2 => tile256::<2>(t, p, a, c),
            3 => tile256::<3>(t, p, a, c),
            4 => tile256::<4>(t, p, a, c),
            5 => tile256::<5>(t, p, a, c),
            6 => tile256::<6>(t, p, a, c),
            _ => unreachable!("tile of {mr} rows"),
        }
    }
}
