//! The per-group scale searches of ggml's K-quant reference quantizers
//! (`quantize_row_q{4,5,6}_K_ref`, which `llama-quantize` runs without an importance
//! matrix): an affine search for Q4_K/Q5_K and a symmetric one for Q6_K.
//!
//! Both try a handful of grid spacings around the min/max one and keep whichever
//! minimises a weighted squared error. The bytes of a quantized file depend on every
//! rounding here, so the f32 operations are done in ggml's order, one at a time (ggml
//! builds these without fused multiply-adds); `tests/quant_ggml.rs` checks the result
//! byte for byte against ggml's own output.

/// ggml's `nearest_int`: round half to even. ggml reads it off the mantissa of
/// `x + 1.5 * 2^23`, which agrees with this for `|x| <= 2^22`; every caller here
/// passes values within a few hundred.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// The search space of [`affine_search`]: grid spacings `(max - min) / (nmax + rmin +
/// rdelta * k)` for `k in 0..=steps`.
pub(crate) struct AffineGrid {
    pub nmax: u8,
    pub rmin: f32,
    pub rdelta: f32,
    pub steps: u8,
}

/// ggml's `make_qkx2_quants` (squared error): fits `x ≈ scale * q - offset` with
/// `q in 0..=nmax` and `offset >= 0`, minimising `Σ weights · (x - x̂)²`.
///
/// Writes the chosen `q` to `q` and returns `(scale, offset)`. A group whose values
/// are all equal and non-negative gets `scale = 0`, `q = 0`.
pub(crate) fn affine_search(
    x: &[f32],
    weights: &[f32],
    grid: &AffineGrid,
    q: &mut [u8],
) -> (f32, f32) {
    let nmax = grid.nmax as i32;
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    // The offset is never negative: a one-signed positive group keeps zero on its grid.
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        q.fill(0);
        return (0.0, -min);
    }
    // ggml updates `min` as it goes: later grids are laid from the best offset so far.
    let levels = |iscale: f32, min: f32, out: &mut [u8]| {
        for (l, &v) in out.iter_mut().zip(x) {
            *l = nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
        }
    };
    let error = |scale: f32, min: f32, ls: &[u8]| {
        let mut e = 0f32;
        for ((&l, &v), &w) in ls.iter().zip(x).zip(weights) {
            let diff = scale * l as f32 + min - v;
            e += w * (diff * diff);
        }
        e
    };

    let iscale = grid.nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    levels(iscale, min, q);
    let mut best_error = error(scale, min, q);
    let mut trial = [0u8; 32];
    let trial = &mut trial[..x.len()];
    for k in 0..=grid.steps {
        let iscale = (grid.rmin + grid.rdelta * k as f32 + grid.nmax as f32) / (max - min);
        levels(iscale, min, trial);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for ((&l, &v), &w) in trial.iter().zip(x).zip(weights) {
            let wl = w * l as f32;
            sum_l += wl;
            sum_l2 += wl * l as f32;
            sum_xl += wl * v;
        }
        // Least squares for (scale, min) given these levels.
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let e = error(this_scale, this_min, trial);
            if e < best_error {
                q.copy_from_slice(trial);
                best_error = e;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's smallest group maximum: below it a group quantizes to zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qx_quants` with `rmse_type = 1`: fits `x ≈ scale * l` with
/// `l in -nmax..nmax`, minimising `Σ x² · (x - x̂)²`. Writes `l + nmax` to `q` and
/// returns `scale`, whose sign is opposite to the group's largest-magnitude value.
pub(crate) fn symmetric_search(x: &[f32], nmax: i32, q: &mut [u8]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        q.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    // Weighted sums (Σ w·x·l, Σ w·l²) with w = x² for the grid `iscale`.
    let sums = |iscale: f32| {
        let (mut sum_lx, mut sum_l2) = (0f32, 0f32);
        for &v in x {
            let l = level(iscale, v) as f32;
            let w = v * v;
            sum_lx += w * v * l;
            sum_l2 += w * l * l;
        }
        (sum_lx, sum_l2)
    };
    let store = |iscale: f32, q: &mut [u8]| {
        for (qi, &v) in q.iter_mut().zip(x) {
            *qi = (level(iscale, v) + nmax) as u8;
        }
    };

    let iscale = -(nmax as f32) / max;
    store(iscale, q);
    let (sum_lx, sum_l2) = sums(iscale);
    let mut scale = if sum_l2 != 0.0 { sum_lx / sum_l2 } else { 0.0 };
    let mut best = scale * sum_lx;
    for k in (-9..=9).filter(|&k| k != 0) {
        let iscale = -(nmax as f32 + 0.1 * k as f32) / max;
        let (sum_lx, sum_l2) = sums(iscale);
        // (Σ w·x·l)² / Σ w·l² is the error reduction of the least-squares scale.
        if sum_l2 > 0.0 && sum_lx * sum_lx > best * sum_l2 {
            store(iscale, q);
            scale = sum_lx / sum_l2;
            best = scale * sum_lx;
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (2.49, 2),
        ];
        for (x, want) in cases {
            assert_eq!(nearest_int(x), want, "{x}");
        }
    }

    #[test]
    fn affine_search_never_does_worse_than_the_min_max_grid() {
        // The search only accepts a candidate that lowers the weighted error, so
        // its result is at least as good as the plain min/max grid they start from.
        let x: Vec<f32> = (0..32)
            .map(|i| ((i * 37 % 29) as f32 - 9.0) * 0.13)
            .collect();
        let w: Vec<f32> = x.iter().map(|v| 0.5 + v.abs()).collect();
        let grid = AffineGrid {
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            steps: 20,
        };
        let mut q = [0u8; 32];
        let (scale, offset) = affine_search(&x, &w, &grid, &mut q);
        let err = |s: f32, offset: f32, q: &[u8]| -> f32 {
            q.iter()
                .zip(&x)
                .zip(&w)
                .map(|((&l, &v), &w)| w * (s * l as f32 - offset - v).powi(2))
                .sum()
        };
        let lo = x.iter().fold(0f32, |m, &v| m.min(v));
        let hi = x.iter().fold(f32::MIN, |m, &v| m.max(v));
        let iscale = 15.0 / (hi - lo);
        let q0: Vec<u8> = x
            .iter()
            .map(|v| nearest_int(iscale * (v - lo)).clamp(0, 15) as u8)
            .collect();
        // Slack: this sum adds in another order than the search's, a few ulps of 32 terms.
        assert!(err(scale, offset, &q) <= err(1.0 / iscale, -lo, &q0) * (1.0 + 1e-5));
    }
}
