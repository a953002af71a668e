//! wasm32 `simd128` fast paths (compiled only with `-C target-feature=+simd128`).
//!
//! i8 × i8 products always fit i16, so widening multiplies keep the integer parts exact
//! for any bytes, -128 included.

use core::arch::wasm32::*;

use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};

/// Σ x[i] * y[i] over 16 signed bytes, as 4 i32 lanes.
#[inline]
fn dot16(x: v128, y: v128) -> v128 {
    i32x4_add(
        i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(x, y)),
        i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(x, y)),
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

pub fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = f32x4_splat(0.0);
    for (w, a) in w.iter().zip(a) {
        let (lo, hi) = nibbles(&w.qs);
        let (a_lo, a_hi) = load_act(&a.qs);
        let bias = i8x16_splat(8);
        let isum = i32x4_add(
            dot16(i8x16_sub(lo, bias), a_lo),
            dot16(i8x16_sub(hi, bias), a_hi),
        );
        let scale = f32x4_splat(w.d.to_f32() * a.d.to_f32());
        acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(isum), scale));
    }
    hsum(acc)
}

pub fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = f32x4_splat(0.0);
    let mut offsets = 0f32;
    for (w, a) in w.iter().zip(a) {
        let (lo, hi) = nibbles(&w.qs);
        let (a_lo, a_hi) = load_act(&a.qs);
        let isum = i32x4_add(dot16(lo, a_lo), dot16(hi, a_hi));
        let scale = f32x4_splat(w.d.to_f32() * a.d.to_f32());
        acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(isum), scale));
        offsets += w.m.to_f32() * a.s.to_f32();
    }
    hsum(acc) + offsets
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
