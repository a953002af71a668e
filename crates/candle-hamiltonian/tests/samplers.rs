//! Samplers against known posteriors: Monte-Carlo-standard-error z-tests on
//! a correlated Gaussian, divergences on Neal's funnel, reproducibility, and
//! agreement of the autograd (tensor) and plain-slice potential paths.

use candle_core::{DType, Device, Tensor, D};
use candle_hamiltonian::diagnostics::{ess_mean, summarize};
use candle_hamiltonian::{
    run, sample_nuts, Error, FnPotential, Hmc, Kernel, Metric, MetricKind, Nuts, SamplingConfig,
    TensorPotential, Trace, UTurnCriterion, WarmupConfig,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Zero-mean Gaussian in 3-d: coordinates 0 and 1 have sds 1 and 3 and
/// correlation 0.9; coordinate 2 is independent with sd 0.1.
const COVARIANCE: [[f64; 3]; 3] = [[1.0, 2.7, 0.0], [2.7, 9.0, 0.0], [0.0, 0.0, 0.01]];
/// Its inverse: the 2×2 block is [[9, −2.7], [−2.7, 1]] / (9 − 2.7²).
const PRECISION: [[f64; 3]; 3] = [
    [9.0 / 1.71, -2.7 / 1.71, 0.0],
    [-2.7 / 1.71, 1.0 / 1.71, 0.0],
    [0.0, 0.0, 100.0],
];

fn gaussian(q: &[f64], g: &mut [f64]) -> f64 {
    for i in 0..3 {
        g[i] = (0..3).map(|j| PRECISION[i][j] * q[j]).sum();
    }
    0.5 * (0..3).map(|i| q[i] * g[i]).sum::<f64>()
}

const INIT: [f64; 12] = [
    0.5, -1.0, 0.05, -0.3, 2.0, 0.0, 1.0, 1.0, -0.1, 0.0, -2.0, 0.1,
];

/// |z| < 4 for the mean, variances and covariance, where z divides the
/// error of each Monte-Carlo estimate E[f] by its standard error sd(f)/√ESS(f).
/// Under a correct sampler each z is ~N(0, 1); 4 is exceeded with
/// probability 6e-5 per check.
fn assert_moments_match(trace: &Trace) {
    let coords: Vec<Vec<Vec<f64>>> = (0..3).map(|j| trace.chains_of(j)).collect();
    let z_test = |what: &str, f: Vec<Vec<f64>>, truth: f64| {
        let all: Vec<f64> = f.iter().flatten().copied().collect();
        let n = all.len() as f64;
        let mean = all.iter().sum::<f64>() / n;
        let sd = (all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let z = (mean - truth) / (sd / ess_mean(&f).unwrap().sqrt());
        assert!(
            z.abs() < 4.0,
            "{what}: estimate {mean}, truth {truth}, z = {z}"
        );
    };
    let product = |a: usize, b: usize| -> Vec<Vec<f64>> {
        coords[a]
            .iter()
            .zip(&coords[b])
            .map(|(x, y)| x.iter().zip(y).map(|(x, y)| x * y).collect())
            .collect()
    };
    for j in 0..3 {
        z_test(&format!("mean {j}"), coords[j].clone(), 0.0);
        z_test(&format!("variance {j}"), product(j, j), COVARIANCE[j][j]);
    }
    z_test("covariance 0-1", product(0, 1), COVARIANCE[0][1]);
    z_test("covariance 1-2", product(1, 2), 0.0);
    for s in trace.summary().unwrap() {
        assert!(s.rhat < 1.05, "R-hat {}", s.rhat);
    }
}

type SliceTarget = FnPotential<fn(&[f64], &mut [f64]) -> f64>;

fn run_nuts(metric: MetricKind, seed: u64) -> (Trace, Nuts<SliceTarget>) {
    let mut nuts = Nuts::new(
        FnPotential::new(3, gaussian as fn(&[f64], &mut [f64]) -> f64),
        1.0,
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let state = nuts.init_from_slice(&INIT).unwrap();
    let warmup = WarmupConfig {
        num_warmup: 500,
        metric,
        ..Default::default()
    };
    let trace = run(&mut nuts, &mut rng, state, &warmup, 1000, |_, _| {}).unwrap();
    (trace, nuts)
}

#[test]
fn nuts_with_diagonal_adaptation_matches_gaussian_moments() {
    let (trace, nuts) = run_nuts(MetricKind::Diagonal, 11);
    assert_moments_match(&trace);
    assert_eq!(trace.divergences(), 0);
    // Dual averaging targets a mean acceptance statistic of 0.8; the
    // realised mean over 4000 transitions lands within ±0.1 of it.
    let accept = trace.acceptance.iter().sum::<f64>() / trace.acceptance.len() as f64;
    assert!((accept - 0.8).abs() < 0.1, "mean acceptance {accept}");
    // The adapted diagonal approximates the marginal variances (1, 9, 0.01):
    // a window of 800 correlated draws pins each within ~25%.
    let Metric::Diagonal(d) = nuts.metric() else {
        panic!("diagonal metric expected")
    };
    for (got, var) in d.iter().zip([1.0, 9.0, 0.01]) {
        assert!(
            (got / var - 1.0).abs() < 0.25,
            "adapted {got} vs variance {var}"
        );
    }
}

#[test]
fn nuts_with_dense_adaptation_matches_gaussian_moments() {
    let (trace, nuts) = run_nuts(MetricKind::Dense, 12);
    assert_moments_match(&trace);
    let Metric::Dense { inverse_mass, .. } = nuts.metric() else {
        panic!("dense metric expected")
    };
    // Adapted covariance within ~25% of the truth (entries of scale ≥ 1).
    for (i, j) in [(0, 0), (0, 1), (1, 1)] {
        let got = inverse_mass[i * 3 + j];
        assert!(
            (got / COVARIANCE[i][j] - 1.0).abs() < 0.25,
            "({i},{j}): {got}"
        );
    }
    // With the right metric the target is isotropic: short trees suffice.
    let mean_depth = trace.tree_depth.iter().sum::<usize>() as f64 / trace.tree_depth.len() as f64;
    assert!(mean_depth < 3.0, "mean tree depth {mean_depth}");
}

#[test]
fn nuts_with_numpyros_u_turn_criterion_matches_gaussian_moments() {
    let mut nuts = Nuts::new(FnPotential::new(3, gaussian), 1.0)
        .unwrap()
        .with_u_turn_criterion(UTurnCriterion::NumPyro);
    let mut rng = StdRng::seed_from_u64(13);
    let state = nuts.init_from_slice(&INIT).unwrap();
    let warmup = WarmupConfig {
        num_warmup: 500,
        ..Default::default()
    };
    let trace = run(&mut nuts, &mut rng, state, &warmup, 1000, |_, _| {}).unwrap();
    assert_moments_match(&trace);
}

#[test]
fn static_hmc_matches_gaussian_moments() {
    let metric = Metric::diagonal(vec![1.0, 9.0, 0.01]).unwrap();
    let mut hmc = Hmc::new(FnPotential::new(3, gaussian), 0.3, 8)
        .unwrap()
        .with_metric(metric)
        .unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let state = hmc.init_from_slice(&INIT).unwrap();
    let warmup = WarmupConfig {
        num_warmup: 300,
        ..Default::default()
    };
    let trace = run(&mut hmc, &mut rng, state, &warmup, 1500, |_, _| {}).unwrap();
    assert_moments_match(&trace);
}

/// Neal's funnel in 1 + 9 dimensions: v ~ N(0, 3²), x_i | v ~ N(0, e^v).
fn funnel(q: &[f64], g: &mut [f64]) -> f64 {
    let v = q[0];
    let scale = (-v).exp();
    let mut u = v * v / 18.0;
    g[0] = v / 9.0;
    for i in 1..q.len() {
        u += 0.5 * q[i] * q[i] * scale + 0.5 * v;
        g[0] += 0.5 - 0.5 * q[i] * q[i] * scale;
        g[i] = q[i] * scale;
    }
    u
}

#[test]
fn nuts_on_neals_funnel_with_a_large_step_reports_divergences() {
    let mut rng = StdRng::seed_from_u64(5);
    let run_funnel = |step: f64, rng: &mut StdRng| {
        let mut nuts = Nuts::new(FnPotential::new(10, funnel), step)
            .unwrap()
            .with_max_tree_depth(8)
            .unwrap();
        let mut state = nuts.init_from_slice(&[0.0; 40]).unwrap();
        let (mut divergences, mut max_depth) = (0, 0);
        for _ in 0..300 {
            let (next, info) = nuts.step(rng, state).unwrap();
            state = next;
            divergences += info.diverged.iter().filter(|d| **d).count();
            max_depth = max_depth.max(*info.tree_depth.iter().max().unwrap());
            for (d, e) in info.diverged.iter().zip(&info.energy_error) {
                // A divergent transition's selected state came from before
                // the blow-up, so its own energy error is finite.
                assert!(!d || e.is_finite());
            }
        }
        (divergences, max_depth)
    };
    let (divergent_big, depth) = run_funnel(1.5, &mut rng);
    // The neck of the funnel (v ≪ 0) has scales e^{v/2} far below 1.5, so
    // the leapfrog is unstable there: a sizeable share of the 1200
    // transitions must diverge.
    assert!(divergent_big > 100, "only {divergent_big} divergences");
    assert!(depth <= 8);
    let (divergent_small, _) = run_funnel(0.05, &mut rng);
    assert!(
        divergent_small < divergent_big / 4,
        "{divergent_small} vs {divergent_big}"
    );
}

#[test]
fn same_seed_gives_the_same_draws() {
    let (a, _) = run_nuts(MetricKind::Diagonal, 99);
    let (b, _) = run_nuts(MetricKind::Diagonal, 99);
    let (c, _) = run_nuts(MetricKind::Diagonal, 100);
    assert_eq!(a.draws, b.draws);
    assert_ne!(a.draws, c.draws);
}

#[test]
fn tensor_autograd_potential_follows_the_same_chains_as_the_slice_fast_path() {
    let precision = Tensor::new(&PRECISION, &Device::Cpu).unwrap();
    let tensor_gaussian = move |q: &Tensor| -> candle_core::Result<Tensor> {
        (q.matmul(&precision)? * q)?.sum(D::Minus1)? * 0.5
    };
    let tensor_target = TensorPotential::new(3, DType::F64, &Device::Cpu, tensor_gaussian).unwrap();
    let mut by_tensor = Nuts::new(tensor_target, 0.3).unwrap();
    let mut by_slice = Nuts::new(FnPotential::new(3, gaussian), 0.3).unwrap();
    let init = Tensor::from_slice(&INIT, (4, 3), &Device::Cpu).unwrap();
    let (mut s1, mut s2) = (
        by_tensor.init(&init).unwrap(),
        by_slice.init(&init).unwrap(),
    );
    let (mut r1, mut r2) = (StdRng::seed_from_u64(8), StdRng::seed_from_u64(8));
    for _ in 0..20 {
        s1 = by_tensor.step(&mut r1, s1).unwrap().0;
        s2 = by_slice.step(&mut r2, s2).unwrap().0;
    }
    // Same random numbers, gradients equal up to summation order (~1e-15
    // relative); 20 transitions amplify that to far below 1e-8.
    for (a, b) in s1.position().iter().zip(s2.position()) {
        assert!((a - b).abs() < 1e-8, "{a} vs {b}");
    }
    let as_tensor = s1.position_tensor(DType::F32, &Device::Cpu).unwrap();
    assert_eq!(as_tensor.dims(), &[4, 3]);
}

#[test]
fn summary_of_a_run_reports_every_column() {
    let (trace, _) = run_nuts(MetricKind::Diagonal, 21);
    let s = summarize(&trace.chains_of(1)).unwrap();
    // sd of coordinate 1 is 3; with ~1000+ effective draws the estimate is
    // within 10%.
    assert!((s.sd / 3.0 - 1.0).abs() < 0.1, "sd {}", s.sd);
    // 5% and 95% quantiles of N(0, 9): ∓1.645·3 = ∓4.93, within 0.5.
    assert!((s.q05 + 4.93).abs() < 0.5 && (s.q95 - 4.93).abs() < 0.5);
    assert!(s.ess_bulk > 500.0 && s.ess_tail > 300.0);
    assert_eq!(trace.divergences_per_chain().len(), 4);
}

#[test]
fn invalid_sampler_inputs_are_typed_errors() {
    assert!(matches!(
        Nuts::new(FnPotential::new(3, gaussian), -1.0),
        Err(Error::Parameter {
            name: "step_size",
            ..
        })
    ));
    let mut nuts = Nuts::new(FnPotential::new(3, gaussian), 0.1).unwrap();
    let wrong = Tensor::zeros((4, 2), DType::F64, &Device::Cpu).unwrap();
    assert!(matches!(
        nuts.init(&wrong),
        Err(Error::Shape {
            what: "position",
            ..
        })
    ));
    assert!(matches!(
        nuts.init_from_slice(&[0.0; 5]),
        Err(Error::Parameter {
            name: "positions",
            ..
        })
    ));
    let mut nan = Nuts::new(
        FnPotential::new(1, |_: &[f64], g: &mut [f64]| {
            g[0] = 0.0;
            f64::NAN
        }),
        0.1,
    )
    .unwrap();
    assert!(matches!(
        nan.init_from_slice(&[0.0]),
        Err(Error::Parameter {
            name: "position",
            ..
        })
    ));
    assert!(matches!(
        nuts.set_metric(Metric::identity(2)),
        Err(Error::Length { .. })
    ));
    assert!(matches!(
        Metric::diagonal(vec![1.0, 0.0]),
        Err(Error::Parameter { .. })
    ));
    assert!(matches!(
        Metric::dense(vec![1.0, 2.0, 2.0, 1.0], 2),
        Err(Error::NotPositiveDefinite { .. })
    ));
    assert!(matches!(
        Nuts::new(FnPotential::new(3, gaussian), 0.1)
            .unwrap()
            .with_max_tree_depth(0),
        Err(Error::Parameter {
            name: "max_tree_depth",
            ..
        })
    ));
    assert!(matches!(
        Hmc::new(FnPotential::new(3, gaussian), 0.1, 0),
        Err(Error::Parameter {
            name: "num_integration_steps",
            ..
        })
    ));
    for threshold in [0.0, f64::NAN] {
        assert!(matches!(
            Hmc::new(FnPotential::new(3, gaussian), 0.1, 5)
                .unwrap()
                .with_max_energy_error(threshold),
            Err(Error::Parameter {
                name: "max_energy_error",
                ..
            })
        ));
    }
    let no_chains = SamplingConfig {
        chains: 0,
        ..Default::default()
    };
    assert!(matches!(
        sample_nuts(FnPotential::new(3, gaussian), &no_chains, |_, _| {}),
        Err(Error::Parameter { name: "chains", .. })
    ));
    let state = nuts.init_from_slice(&INIT).unwrap();
    let bad = WarmupConfig {
        target_acceptance: 1.5,
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(0);
    assert!(matches!(
        run(&mut nuts, &mut rng, state, &bad, 10, |_, _| {}),
        Err(Error::Parameter {
            name: "target_acceptance",
            ..
        })
    ));
}
