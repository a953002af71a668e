//! The decoder's element-wise steps on plain row-major f32 buffers. A decode
//! step runs them on rows of a few hundred values, where building tensors
//! for each op would cost more than the arithmetic.

use crate::config::{Activation, RopeLayout};

/// RMS normalisation of every row of `x` (rows of `weight.len()` values)
/// into `out`, with llama.cpp's order of operations: the mean of squares in
/// f64, then `(x * (1 / sqrt(mean + eps))) * weight` in f32.
///
/// x, out: [rows, width]; weight: [width]
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f64, out: &mut [f32]) {
    let width = weight.len();
    for (row, out) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let scale = inverse_rms(row, eps);
        for ((o, &v), &w) in out.iter_mut().zip(row).zip(weight) {
            *o = (v * scale) * w;
        }
    }
}

/// [`rms_norm`] of `x` onto itself.
///
/// x: [rows, width]; weight: [width]
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f64) {
    let width = weight.len();
    for row in x.chunks_exact_mut(width) {
        let scale = inverse_rms(row, eps);
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = (*v * scale) * w;
        }
    }
}

fn inverse_rms(row: &[f32], eps: f64) -> f32 {
    let sum: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (sum / row.len() as f64) as f32;
    1.0 / (mean + eps as f32).sqrt()
}

/// `acc += x`, element by element.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// Adds `bias` to every row of `x`.
///
/// x: [rows, width]; bias: [width]
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_assign(row, bias);
    }
}

/// Rotates every head of one token's projection by the angles of its
/// position.
///
/// heads: [n_heads * head_dim]; cos, sin: [head_dim], laid out for `layout`
/// (both halves, or both members of a pair, carry the same angle).
pub fn rope(heads: &mut [f32], cos: &[f32], sin: &[f32], layout: RopeLayout) {
    let head_dim = cos.len();
    let half = head_dim / 2;
    for head in heads.chunks_exact_mut(head_dim) {
        match layout {
            RopeLayout::RotateHalf => {
                let (first, second) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (first[i], second[i]);
                    first[i] = a * cos[i] - b * sin[i];
                    second[i] = b * cos[i + half] + a * sin[i + half];
                }
            }
            RopeLayout::Interleaved => {
                for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * cos[2 * i] - b * sin[2 * i];
                    pair[1] = b * cos[2 * i + 1] + a * sin[2 * i + 1];
                }
            }
        }
    }
}

/// The gated feed-forward's `activation(gate) * up`, into `gate`.
///
/// GELU-tanh is computed as `x * sigmoid(2u)`, the same function as
/// `0.5 x (1 + tanh(u))`, so both activations need only [`exp`].
pub fn gate(gate: &mut [f32], up: &[f32], activation: Activation) {
    match activation {
        Activation::Silu => {
            for (g, &u) in gate.iter_mut().zip(up) {
                *g = *g / (1.0 + exp(-*g)) * u;
            }
        }
        Activation::GeluTanh => {
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            for (g, &u) in gate.iter_mut().zip(up) {
                let x = *g;
                let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
                *g = x / (1.0 + exp(-2.0 * inner)) * u;
            }
        }
    }
}

/// `e^x` within 2 ulp of the correctly rounded value for x in [-87, 88] (inputs
/// beyond are clamped there: the activations only need e^x against 1), written with
/// no call so that loops over it vectorise; libm's `expf` is a call per value and
/// was a tenth of Gemma's prefill.
///
/// `x = n ln 2 + r` with |r| <= ln2 / 2 (ln 2 split in two parts so `n ln 2` is
/// exact), `e^r` from Cephes' degree-7 expansion, `2^n` from the exponent bits.
#[inline]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 · 2^23 rounds to an integer (ties to even) and leaves it in
    // the low mantissa bits: no float-to-int conversion, whose saturating
    // semantics kept the loops from vectorising.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let n_bits = shifted.to_bits().wrapping_sub(SHIFTER.to_bits()) as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n_bits + 127) as u32) << 23)
}

/// `erf(x)` within 6e-7 of libm's for every x, with no call, so that GELU's
/// loop vectorises (libm's `erff` per value was a fifth of an encoder
/// pass): Abramowitz and Stegun's 7.1.26, `1 - t(a1 + t(a2 + ...)) e^-x²`
/// with `t = 1 / (1 + p|x|)`, whose error is below 1.5e-7 (plus f32 rounding).
#[cfg(not(target_arch = "wasm32"))] // for the encoders, which are native-only
#[inline]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// Gemma's logit soft-capping, `cap * tanh(x / cap)`: smooth, and bounded
/// by `cap` in magnitude.
pub fn softcapped(x: f32, cap: f32) -> f32 {
    cap * (x / cap).tanh()
}

/// [`softcapped`] on every value.
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x {
        *v = softcapped(*v, cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect()
    }

    #[test]
    fn rms_norm_matches_candle_ops() {
        let (x, w) = (ramp(4 * 16), ramp(16));
        let mut out = vec![0f32; x.len()];
        rms_norm(&x, &w, 1e-5, &mut out);
        let expected = candle_ops::rms_norm(
            &Tensor::from_slice(&x, (4, 16), &Device::Cpu).unwrap(),
            &Tensor::from_slice(&w, 16, &Device::Cpu).unwrap(),
            1e-5,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        // Two f32 evaluations of the same formula in different orders.
        for (a, b) in out.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let mut in_place = x.clone();
        rms_norm_in_place(&mut in_place, &w, 1e-5);
        assert_eq!(in_place, out);
    }

    #[test]
    fn rope_layouts_match_candle_ops() {
        let (heads, d) = (3, 8);
        let x = ramp(heads * d);
        let angles: Vec<f32> = (0..d / 2).map(|i| 0.3 + i as f32 * 0.7).collect();
        for layout in [RopeLayout::RotateHalf, RopeLayout::Interleaved] {
            let pair = |j: usize| match layout {
                RopeLayout::RotateHalf => j % (d / 2),
                RopeLayout::Interleaved => j / 2,
            };
            let cos: Vec<f32> = (0..d).map(|j| angles[pair(j)].cos()).collect();
            let sin: Vec<f32> = (0..d).map(|j| angles[pair(j)].sin()).collect();
            let mut got = x.clone();
            rope(&mut got, &cos, &sin, layout);
            let t = Tensor::from_slice(&x, (1, heads, 1, d), &Device::Cpu).unwrap();
            let c = Tensor::from_slice(&cos, (1, d), &Device::Cpu).unwrap();
            let s = Tensor::from_slice(&sin, (1, d), &Device::Cpu).unwrap();
            let expected = match layout {
                RopeLayout::RotateHalf => candle_ops::apply_rotary_emb(&t, &c, &s),
                RopeLayout::Interleaved => candle_ops::apply_rotary_emb_interleaved(&t, &c, &s),
            }
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
            for (a, b) in got.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-6, "{layout:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn erf_is_within_6e_7_of_libm() {
        let worst = (-60_000..=60_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| (erf(x) - libm::erff(x)).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 6e-7, "{worst}");
        assert!(erf(0.0).abs() <= 6e-7);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_correctly_rounded_value() {
        let mut worst = 0u32;
        for i in 0..=350_000 {
            let x = (-87.0 + i as f32 * (175.0 / 350_000.0)).min(88.0);
            let exact = (x as f64).exp() as f32;
            let got = exp(x);
            worst = worst.max(got.to_bits().abs_diff(exact.to_bits()));
        }
        assert!(worst <= 2, "{worst} ulp");
    }

    #[test]
    fn activations_match_their_definitions() {
        let x = ramp(32);
        let up = ramp(32).into_iter().rev().collect::<Vec<_>>();
        let mut silu = x.clone();
        gate(&mut silu, &up, Activation::Silu);
        let mut gelu = x.clone();
        gate(&mut gelu, &up, Activation::GeluTanh);
        let t = Tensor::from_slice(&x, 32, &Device::Cpu).unwrap();
        let silu_ref = t.silu().unwrap().to_vec1::<f32>().unwrap();
        let gelu_ref = t.gelu().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..32 {
            assert!((silu[i] - silu_ref[i] * up[i]).abs() < 1e-5);
            assert!((gelu[i] - gelu_ref[i] * up[i]).abs() < 1e-5);
        }
    }
}
