//! Branch-free exp and log1p for the logistic-regression hot loop. Written
//! as plain arithmetic on f64 (no table lookups, no calls) so that loops over
//! blocks of them auto-vectorise under AVX2, unlike libm's scalar calls.

/// a·b + c, fused where the target has FMA (x86-64-v3 here) and plain
/// otherwise: `f64::mul_add` without hardware FMA is a slow library call.
#[inline(always)]
pub(crate) fn mul_add(a: f64, b: f64, c: f64) -> f64 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// e^{−a} for a ≥ 0 (a is clamped to 700, beyond which e^{−a} < 1e-304 is
/// irrelevant next to 1). Cody–Waite reduction a·log₂e = k + r/ln 2 with
/// |r| ≤ ln2/2, then Taylor to r¹² (truncation < 2e-16 relative).
#[inline(always)]
pub(crate) fn exp_neg(a: f64) -> f64 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // Adding 1.5·2⁵² rounds to an integer and leaves it in the low mantissa bits.
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    let x = -a.min(700.0);
    let t = mul_add(x, LOG2_E, SHIFTER);
    let k = t - SHIFTER;
    let r = mul_add(-k, LN2_LO, mul_add(-k, LN2_HI, x));
    let mut p = 1.0 / 479_001_600.0;
    for inv_factorial in [
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = mul_add(p, r, inv_factorial);
    }
    // 2^k from k's bits: (k + 1023) shifted into the exponent field; the
    // shift drops the shifter's own exponent and leading mantissa bit.
    let scale = f64::from_bits(t.to_bits().wrapping_add(1023) << 52);
    p * scale
}

/// ln(1 + e) for e ∈ [0, 1], as 2·atanh(e / (2 + e)) (no cancellation for
/// small e); the series in s² ≤ 1/9 is truncated after s³⁵ (< 1e-17).
#[inline(always)]
pub(crate) fn log1p_unit(e: f64) -> f64 {
    let s = e / (2.0 + e);
    let s2 = s * s;
    let mut p = 1.0 / 35.0;
    let mut odd = 33.0;
    while odd > 0.0 {
        p = mul_add(p, s2, 1.0 / odd);
        odd -= 2.0;
    }
    2.0 * s * p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_matches_std_to_a_few_ulps() {
        for i in 0..=20_000 {
            let a = (i as f64 * 0.035).min(700.0);
            let (got, want) = (exp_neg(a), (-a).exp());
            // A few ulps (1e-15 ≈ 5 ulps): reduction and the 13-term Horner
            // sum each round at ~1e-16; a potential summed over 1000 rows
            // carries more rounding than that anyway.
            assert!(
                (got - want).abs() <= 1e-15 * want,
                "a = {a}: {got} vs {want}"
            );
        }
        assert!(exp_neg(1e6) < 1e-300);
    }

    #[test]
    fn log1p_unit_matches_std_to_a_few_ulps() {
        for i in 0..=10_000 {
            let e = i as f64 / 10_000.0;
            let (got, want) = (log1p_unit(e), e.ln_1p());
            // Same 5-ulp budget as exp_neg.
            assert!(
                (got - want).abs() <= 1e-15 * want.max(1e-300),
                "e = {e}: {got} vs {want}"
            );
        }
        assert_eq!(log1p_unit(1e-300), 1e-300);
    }
}
