//! The little dense linear algebra the samplers need on the host (row-major
//! `n × n` matrices as `&[f64]`); candle 0.11 has no Cholesky or solver.

use crate::error::{Error, Result};

/// Lower Cholesky factor L with A = L Lᵀ.
pub(crate) fn cholesky(op: &'static str, a: &[f64], n: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            let value = a[i * n + j] - dot;
            if i == j {
                if value.is_nan() || value <= 0.0 || value.is_infinite() {
                    return Err(Error::NotPositiveDefinite {
                        op,
                        index: i,
                        pivot: value,
                    });
                }
                l[i * n + i] = value.sqrt();
            } else {
                l[i * n + j] = value / l[j * n + j];
            }
        }
    }
    Ok(l)
}

/// A⁻¹ from A's lower Cholesky factor.
pub(crate) fn cholesky_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut inverse = vec![0.0; n * n];
    let mut column = vec![0.0; n];
    for j in 0..n {
        column.iter_mut().for_each(|c| *c = 0.0);
        column[j] = 1.0;
        solve_lower(l, n, &mut column);
        solve_lower_transposed(l, n, &mut column);
        for i in 0..n {
            inverse[i * n + j] = column[i];
        }
    }
    inverse
}

/// Solves L x = b in place.
pub(crate) fn solve_lower(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let dot: f64 = (0..i).map(|k| l[i * n + k] * b[k]).sum();
        b[i] = (b[i] - dot) / l[i * n + i];
    }
}

/// Solves Lᵀ x = b in place.
pub(crate) fn solve_lower_transposed(l: &[f64], n: usize, b: &mut [f64]) {
    for i in (0..n).rev() {
        let dot: f64 = (i + 1..n).map(|k| l[k * n + i] * b[k]).sum();
        b[i] = (b[i] - dot) / l[i * n + i];
    }
}

/// out = A x for a row-major `n × n` A.
pub(crate) fn mat_vec(a: &[f64], x: &[f64], out: &mut [f64]) {
    let n = x.len();
    for (row, o) in a.chunks_exact(n).zip(out.iter_mut()) {
        *o = crate::metric::dot(row, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_inverse_times_matrix_is_identity() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let l = cholesky("test", &a, 3).unwrap();
        let inv = cholesky_inverse(&l, 3);
        for i in 0..3 {
            for j in 0..3 {
                let prod: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                // Exact identity up to a few ulps of the O(1) entries.
                assert!((prod - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn indefinite_matrix_is_rejected() {
        let a = [1.0, 2.0, 2.0, 1.0];
        assert!(matches!(
            cholesky("test", &a, 2),
            Err(Error::NotPositiveDefinite { index: 1, .. })
        ));
    }
}
