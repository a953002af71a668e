//! Reference values of Stan's unit test `split_rank_normalized_ess_test`
//! (stan-dev/stan, src/test/unit/analyze/mcmc/), on the four Bernoulli-model
//! chains it reads. The fixtures `tests/fixtures/stan_bern{1..4}.csv` are the
//! `lp__`, `divergent__` and `theta` columns of Stan's
//! `test_csv_files/bern{1..4}.csv` (BSD-3-Clause, © Stan Development Team).

use candle_hamiltonian::diagnostics::{split_rank_normalized_ess, split_rank_normalized_rhat};

/// Columns `[lp__, divergent__, theta]`, each `[chain][draw]`.
fn load() -> [Vec<Vec<f64>>; 3] {
    let mut columns: [Vec<Vec<f64>>; 3] = Default::default();
    for chain in 1..=4 {
        let path = format!(
            "{}/tests/fixtures/stan_bern{chain}.csv",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
            .collect();
        assert_eq!(rows.len(), 1000);
        for (j, column) in columns.iter_mut().enumerate() {
            column.push(rows.iter().map(|r| r[j]).collect());
        }
    }
    columns
}

#[test]
fn bulk_and_tail_ess_reproduce_stans_reference_values() {
    let [lp, _, theta] = load();
    let (lp_bulk, lp_tail) = split_rank_normalized_ess(&lp).unwrap();
    let (theta_bulk, theta_tail) = split_rank_normalized_ess(&theta).unwrap();
    // Stan's own test uses this tolerance (EXPECT_NEAR …, 0.001).
    for (got, expected) in [
        (lp_bulk, 1512.7684),
        (lp_tail, 1591.9707),
        (theta_bulk, 1407.5124),
        (theta_tail, 1291.7131),
    ] {
        assert!((got - expected).abs() < 1e-3, "got {got}, Stan {expected}");
    }
}

#[test]
fn rhat_of_well_mixed_chains_is_close_to_one() {
    let [lp, _, theta] = load();
    for chains in [lp, theta] {
        let (bulk, tail) = split_rank_normalized_rhat(&chains).unwrap();
        // Four converged chains of 1000 draws: split R-hat sits within ~0.01
        // of 1 (Vehtari et al. 2021 recommend flagging above 1.01).
        assert!(
            (bulk - 1.0).abs() < 0.01 && (tail - 1.0).abs() < 0.01,
            "{bulk} {tail}"
        );
    }
}

#[test]
fn constant_infinite_or_short_chains_give_nan() {
    let [_, divergent, mut theta] = load();
    // divergent__ is all zeros in these runs.
    let (b, t) = split_rank_normalized_ess(&divergent).unwrap();
    assert!(b.is_nan() && t.is_nan());
    assert!(split_rank_normalized_rhat(&divergent).unwrap().0.is_nan());
    let short: Vec<Vec<f64>> = theta.iter().map(|c| c[..3].to_vec()).collect();
    let (b, t) = split_rank_normalized_ess(&short).unwrap();
    assert!(b.is_nan() && t.is_nan());
    theta[0][0] = f64::INFINITY;
    let (b, t) = split_rank_normalized_ess(&theta).unwrap();
    assert!(b.is_nan() && t.is_nan());
}
