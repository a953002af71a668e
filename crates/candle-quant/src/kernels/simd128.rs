//! wasm32 `simd128` fast paths (compiled only with `-C target-feature=+simd128`).
//!
//! i8 × i8 products always fit i16, so widening multiplies keep the integer parts exact
//! for any bytes, -128 included.

use core::arch::wasm32::*;

use crate::quant::{
    unpack_scales_mins, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1,
};

/// Σ x[i] * y[i] over 16 signed bytes, as 4 i32 lanes (lane j holds the
/// products of bytes 2j, 2j+1, 2j+8 and 2j+9). Widening to i16 and
/// `i32x4.dot_i16x8_s` is one `pmaddwd` per half on x86 engines, where
/// `extmul` followed by `extadd_pairwise` takes several instructions more.
#[inline]
fn dot16(x: v128, y: v128) -> v128 {
    i32x4_add(
        i32x4_dot_i16x8(i16x8_extend_low_i8x16(x), i16x8_extend_low_i8x16(y)),
        i32x4_dot_i16x8(i16x8_extend_high_i8x16(x), i16x8_extend_high_i8x16(y)),
    )
}

#[inline]
fn load16(bytes: &[u8; 16]) -> v128 {
    // SAFETY: 16 readable bytes; wasm loads have no alignment requirement.
    unsafe { v128_load(bytes.as_ptr() as *const v128) }
}

#[inline]
fn load_act(qs: &[i8; 32]) -> (v128, v128) {
    // SAFETY: 32 readable bytes; wasm loads have no alignment requirement.
    unsafe {
        (
            v128_load(qs.as_ptr() as *const v128),
            v128_load(qs.as_ptr().add(16) as *const v128),
        )
    }
}

#[inline]
fn hsum(v: v128) -> f32 {
    f32x4_extract_lane::<0>(v)
        + f32x4_extract_lane::<1>(v)
        + f32x4_extract_lane::<2>(v)
        + f32x4_extract_lane::<3>(v)
}

/// Low nibbles (values 0..16) and high nibbles (values 16..32) of a Q4 block.
#[inline]
fn nibbles(qs: &[u8; 16]) -> (v128, v128) {
    let packed = load16(qs);
    (v128_and(packed, u8x16_splat(0x0F)), u8x16_shr(packed, 4))
}

/// Σ over blocks of `d_w d_a Σ (q - bias) a` for the symmetric 32-value formats,
/// `values` giving a block's unbiased quants as two 16-byte halves.
#[inline]
fn dot_symmetric<W>(
    w: &[W],
    a: &[BlockQ8_0],
    values: impl Fn(&W) -> (v128, v128),
    bias: i8,
    d: impl Fn(&W) -> f32,
) -> f32 {
    let mut acc = f32x4_splat(0.0);
    for (w, a) in w.iter().zip(a) {
        let (lo, hi) = values(w);
        let (a_lo, a_hi) = load_act(&a.qs);
        let bias = i8x16_splat(bias);
        let isum = i32x4_add(
            dot16(i8x16_sub(lo, bias), a_lo),
            dot16(i8x16_sub(hi, bias), a_hi),
        );
        let scale = f32x4_splat(d(w) * a.d.to_f32());
        acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(isum), scale));
    }
    hsum(acc)
}

/// Σ over blocks of `d_w d_a Σ q a + m_w s_a` for the offset 32-value formats.
#[inline]
fn dot_affine<W>(
    w: &[W],
    a: &[BlockQ8_1],
    values: impl Fn(&W) -> (v128, v128),
    dm: impl Fn(&W) -> (f32, f32),
) -> f32 {
    let mut acc = f32x4_splat(0.0);
    let mut offsets = 0f32;
    for (w, a) in w.iter().zip(a) {
        let (lo, hi) = values(w);
        let (a_lo, a_hi) = load_act(&a.qs);
        let isum = i32x4_add(dot16(lo, a_lo), dot16(hi, a_hi));
        let (d, m) = dm(w);
        let scale = f32x4_splat(d * a.d.to_f32());
        acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(isum), scale));
        offsets += m * a.s.to_f32();
    }
    hsum(acc) + offsets
}

pub fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    dot_symmetric(w, a, |w| nibbles(&w.qs), 8, |w| w.d.to_f32())
}

pub fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    dot_affine(w, a, |w| nibbles(&w.qs), |w| (w.d.to_f32(), w.m.to_f32()))
}

pub fn dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = f32x4_splat(0.0);
    for (w, a) in w.iter().zip(a) {
        let (w_lo, w_hi) = load_act(&w.qs);
        let (a_lo, a_hi) = load_act(&a.qs);
        let isum = i32x4_add(dot16(w_lo, a_lo), dot16(w_hi, a_hi));
        let scale = f32x4_splat(w.d.to_f32() * a.d.to_f32());
        acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(isum), scale));
    }
    hsum(acc)
}

/// Bit `i` of `bits` -> byte `i` = 0x10 if set, 0 otherwise (16 bits, 16 bytes).
#[inline]
fn high_bits_to_0x10(bits: u16) -> v128 {
    let spread = u8x16_swizzle(
        u16x8_splat(bits),
        u8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
    );
    let select = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    v128_and(
        u8x16_eq(v128_and(spread, select), select),
        u8x16_splat(0x10),
    )
}

/// The 32 unbiased Q5 values of a block (0..32) as two 16-byte halves.
#[inline]
fn q5_values(qs: &[u8; 16], qh: [u8; 4]) -> (v128, v128) {
    let (lo, hi) = nibbles(qs);
    let bits = u32::from_le_bytes(qh);
    (
        v128_or(lo, high_bits_to_0x10(bits as u16)),
        v128_or(hi, high_bits_to_0x10((bits >> 16) as u16)),
    )
}

pub fn dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    dot_symmetric(w, a, |w| q5_values(&w.qs, w.qh), 16, |w| w.d.to_f32())
}

pub fn dot_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    dot_affine(
        w,
        a,
        |w| q5_values(&w.qs, w.qh),
        |w| (w.d.to_f32(), w.m.to_f32()),
    )
}

#[inline]
fn load_at<T>(bytes: &[T], at: usize) -> v128 {
    assert!(std::mem::size_of_val(&bytes[at..]) >= 16);
    // SAFETY: at least 16 readable bytes from `at` (checked above).
    unsafe { v128_load(bytes.as_ptr().add(at) as *const v128) }
}

#[inline]
fn hsum_i32(v: v128) -> i32 {
    i32x4_extract_lane::<0>(v)
        + i32x4_extract_lane::<1>(v)
        + i32x4_extract_lane::<2>(v)
        + i32x4_extract_lane::<3>(v)
}

/// The K-quant offset term Σ_j mins[j] · (sum of the activation quants of sub-block j).
#[inline]
fn k_offsets(mins: &[u8; 8], a: &BlockQ8K) -> i32 {
    (0..8)
        .map(|j| mins[j] as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32))
        .sum()
}

/// Q4_K and Q5_K: sub-block `2c` holds the low nibbles of bytes `32c..32c+32`, sub-block
/// `2c + 1` their high nibbles; Q5_K adds bit `2c` / `2c + 1` of `qh[i]` as 0x10.
#[inline]
fn dot_k_sub_blocks(qs: &[u8; 128], qh: Option<&[u8; 32]>, sc: &[u8; 8], a: &BlockQ8K) -> i32 {
    let mut isum = i32x4_splat(0);
    for c in 0..4 {
        for half in 0..2 {
            let packed = load_at(qs, 32 * c + 16 * half);
            let mut lo = v128_and(packed, u8x16_splat(0x0F));
            let mut hi = u8x16_shr(packed, 4);
            if let Some(qh) = qh {
                let bits = load_at(qh, 16 * half);
                let one = u8x16_splat(1);
                lo = v128_or(
                    lo,
                    u8x16_shl(v128_and(u8x16_shr(bits, 2 * c as u32), one), 4),
                );
                hi = v128_or(
                    hi,
                    u8x16_shl(v128_and(u8x16_shr(bits, 2 * c as u32 + 1), one), 4),
                );
            }
            let a_lo = load_at(&a.qs, 64 * c + 16 * half);
            let a_hi = load_at(&a.qs, 64 * c + 32 + 16 * half);
            isum = i32x4_add(
                isum,
                i32x4_mul(dot16(lo, a_lo), i32x4_splat(sc[2 * c] as i32)),
            );
            isum = i32x4_add(
                isum,
                i32x4_mul(dot16(hi, a_hi), i32x4_splat(sc[2 * c + 1] as i32)),
            );
        }
    }
    hsum_i32(isum)
}

pub fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let (sc, m) = unpack_scales_mins(&w.scales);
        let isum = dot_k_sub_blocks(&w.qs, None, &sc, a);
        sum += w.d.to_f32() * a.d * isum as f32 - w.dmin.to_f32() * a.d * k_offsets(&m, a) as f32;
    }
    sum
}

pub fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let (sc, m) = unpack_scales_mins(&w.scales);
        let isum = dot_k_sub_blocks(&w.qs, Some(&w.qh), &sc, a);
        sum += w.d.to_f32() * a.d * isum as f32 - w.dmin.to_f32() * a.d * k_offsets(&m, a) as f32;
    }
    sum
}

/// Q6_K: each half (128 values) takes 64 bytes of `ql` and 32 of `qh`; quarter `k` of
/// it is `ql` low nibbles (k = 0, 1) or high nibbles (k = 2, 3) of the first / second
/// 32 `ql` bytes, with bits `2k..2k+2` of `qh` on top, and 16 values per scale.
pub fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let mut isum = i32x4_splat(0);
        for half in 0..2 {
            for j in 0..2 {
                let ql_a = load_at(&w.ql, 64 * half + 16 * j);
                let ql_b = load_at(&w.ql, 64 * half + 32 + 16 * j);
                let qh = load_at(&w.qh, 32 * half + 16 * j);
                let high = |k: u32| u8x16_shl(v128_and(u8x16_shr(qh, 2 * k), u8x16_splat(3)), 4);
                let low = u8x16_splat(0x0F);
                let quarters = [
                    v128_or(v128_and(ql_a, low), high(0)),
                    v128_or(v128_and(ql_b, low), high(1)),
                    v128_or(u8x16_shr(ql_a, 4), high(2)),
                    v128_or(u8x16_shr(ql_b, 4), high(3)),
                ];
                for (k, q) in quarters.into_iter().enumerate() {
                    let act = load_at(&a.qs, 128 * half + 32 * k + 16 * j);
                    let scale = w.scales[8 * half + 2 * k + j] as i32;
                    isum = i32x4_add(isum, i32x4_mul(dot16(q, act), i32x4_splat(scale)));
                }
            }
        }
        // The -32 bias of every value, through the 16-value activation sums.
        let bias: i32 = (0..16)
            .map(|g| w.scales[g] as i32 * a.bsums[g] as i32)
            .sum::<i32>()
            * 32;
        sum += w.d.to_f32() * a.d * (hsum_i32(isum) - bias) as f32;
    }
    sum
}
