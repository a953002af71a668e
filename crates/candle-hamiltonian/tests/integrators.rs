//! Integrator properties checked against mathematical facts about the
//! harmonic oscillator H = ½|q|² + ½|p|² (exact flow: rotation in phase
//! space) and the pendulum H = ½p² − cos q.

use candle_core::{DType, Device, Tensor, D};
use candle_hamiltonian::{
    hamiltonian_energy, integrators::MCLACHLAN_LAMBDA, kinetic_energy, leapfrog_step,
    potential_gradient, symplectic_euler_step, two_stage_step, yoshida4_triple_jump_step, Error,
};

type R<T> = candle_core::Result<T>;

fn harmonic_potential(q: &Tensor) -> R<Tensor> {
    q.sqr()?.sum(D::Minus1)? * 0.5
}

fn harmonic_grad(q: &Tensor) -> R<Tensor> {
    Ok(q.clone())
}

fn pendulum_grad(q: &Tensor) -> R<Tensor> {
    q.sin()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn test_symplectic_energy_conservation() {
    // HIP-19's vector, verbatim.
    let q = Tensor::new(&[1.0f64, 0.0], &Device::Cpu).unwrap();
    let p = Tensor::new(&[0.0f64, 1.0], &Device::Cpu).unwrap();
    let h0 = hamiltonian_energy(&q, &p, harmonic_potential, None).unwrap();
    let (q1, p1) = leapfrog_step(&q, &p, harmonic_grad, 0.01, 1000).unwrap();
    let h1 = hamiltonian_energy(&q1, &p1, harmonic_potential, None).unwrap();
    let drift = (h1 - &h0)
        .unwrap()
        .abs()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(drift < 1e-6, "Energy drift {} exceeds tolerance", drift);

    // Why it passes: the state really moved (t = 10 rad of a unit-frequency
    // rotation, exact q(10) = (cos 10, sin 10), leapfrog's phase error after
    // 1000 steps is t·dt²/24 ≈ 4e-5 rad), the energy really is 1, and each
    // coordinate's energy error is the bounded O(dt²) oscillation of
    // leapfrog's shadow Hamiltonian, (dt²/8)(q² − q₀²) ≤ 1.25e-5, which the
    // two coordinates, a quarter period apart, cancel to O(dt⁴) in the sum.
    assert_eq!(scalar(&h0), 1.0);
    let q1v = q1.to_vec1::<f64>().unwrap();
    assert!((q1v[0] - 10f64.cos()).abs() < 1e-4 && (q1v[1] - 10f64.sin()).abs() < 1e-4);
    let p1v = p1.to_vec1::<f64>().unwrap();
    for i in 0..2 {
        let per_coordinate = 0.5 * (q1v[i] * q1v[i] + p1v[i] * p1v[i]) - 0.5;
        assert!(per_coordinate.abs() <= 0.01f64.powi(2) / 8.0 * 1.01);
    }
    // A non-symplectic method fails the same vector: explicit Euler
    // multiplies the energy by (1 + dt²) every step, (1.0001)^1000 ≈ 1.105.
    let (mut qe, mut pe) = (q.clone(), p.clone());
    for _ in 0..1000 {
        let (qn, pn) = (
            (&qe + (&pe * 0.01).unwrap()).unwrap(),
            (&pe - (&qe * 0.01).unwrap()).unwrap(),
        );
        (qe, pe) = (qn, pn);
    }
    let euler = hamiltonian_energy(&qe, &pe, harmonic_potential, None).unwrap();
    assert!((scalar(&euler) - 1.0001f64.powi(1000)).abs() < 1e-9);
}

#[test]
fn leapfrog_energy_error_stays_bounded_over_1e5_steps() {
    // Backward error analysis: leapfrog exactly conserves a shadow
    // Hamiltonian H̃ = H + O(dt²), so |H − H₀| stays under a constant for all
    // time instead of drifting. For the oscillator with dt = 0.05 the bound
    // is (dt²/8)·max q² = 3.125e-4 for q₀ = 1, p₀ = 0.
    let dt = 0.05;
    let q0 = Tensor::new(&[[1.0f64]], &Device::Cpu).unwrap();
    let p0 = Tensor::new(&[[0.0f64]], &Device::Cpu).unwrap();
    let h0 = scalar(
        &hamiltonian_energy(&q0, &p0, harmonic_potential, None)
            .unwrap()
            .sum_all()
            .unwrap(),
    );
    let (mut q, mut p) = (q0, p0);
    let mut worst_first = 0f64;
    let mut worst_last = 0f64;
    for chunk in 0..100 {
        (q, p) = leapfrog_step(&q, &p, harmonic_grad, dt, 1000).unwrap();
        let h = scalar(
            &hamiltonian_energy(&q, &p, harmonic_potential, None)
                .unwrap()
                .sum_all()
                .unwrap(),
        );
        let err = (h - h0).abs();
        assert!(
            err <= dt * dt / 8.0 * 1.0001,
            "step {}: |ΔH| = {err}",
            (chunk + 1) * 1000
        );
        if chunk < 10 {
            worst_first = worst_first.max(err);
        } else if chunk >= 90 {
            worst_last = worst_last.max(err);
        }
    }
    // No drift: the last 1e4 steps are no worse than the first 1e4 beyond
    // rounding (f64 round-off accumulates as ~√n·1e-16).
    assert!(
        worst_last <= worst_first + 1e-12,
        "{worst_first} vs {worst_last}"
    );
}

/// An integrator run: (q, p, dt, n_steps) -> (q, p).
type Integrator<'a> = &'a dyn Fn(&Tensor, &Tensor, f64, usize) -> (Tensor, Tensor);

/// Global error at T = 10 of the oscillator started at q = 1, p = 0.
fn global_error(step: Integrator, dt: f64) -> f64 {
    let q = Tensor::new(&[[1.0f64]], &Device::Cpu).unwrap();
    let p = Tensor::new(&[[0.0f64]], &Device::Cpu).unwrap();
    let n = (10.0 / dt).round() as usize;
    let (q, p) = step(&q, &p, dt, n);
    let (q, p) = (
        q.to_vec2::<f64>().unwrap()[0][0],
        p.to_vec2::<f64>().unwrap()[0][0],
    );
    ((q - 10f64.cos()).powi(2) + (p + 10f64.sin()).powi(2)).sqrt()
}

fn order_ratio(step: Integrator, dt: f64) -> f64 {
    global_error(step, dt) / global_error(step, dt / 2.0)
}

#[test]
fn halving_dt_divides_the_global_error_by_two_to_the_order() {
    let euler = |q: &Tensor, p: &Tensor, dt: f64, n: usize| {
        let (mut q, mut p) = (q.clone(), p.clone());
        for _ in 0..n {
            (q, p) = symplectic_euler_step(&q, &p, &q, &p, dt).unwrap();
        }
        (q, p)
    };
    let leapfrog =
        |q: &Tensor, p: &Tensor, dt, n| leapfrog_step(q, p, harmonic_grad, dt, n).unwrap();
    let yoshida = |q: &Tensor, p: &Tensor, dt, n| {
        yoshida4_triple_jump_step(q, p, harmonic_grad, dt, n).unwrap()
    };
    let two_stage = |q: &Tensor, p: &Tensor, dt, n| {
        two_stage_step(q, p, harmonic_grad, dt, n, MCLACHLAN_LAMBDA).unwrap()
    };
    // Asymptotic ratios are 2^order; at these dt the next-order terms move
    // them by a few percent, hence ±15%.
    let e = order_ratio(&euler, 0.01);
    assert!((e / 2.0 - 1.0).abs() < 0.15, "symplectic Euler ratio {e}");
    let l = order_ratio(&leapfrog, 0.02);
    assert!((l / 4.0 - 1.0).abs() < 0.15, "leapfrog ratio {l}");
    let y = order_ratio(&yoshida, 0.05);
    assert!((y / 16.0 - 1.0).abs() < 0.15, "Yoshida ratio {y}");
    let t = order_ratio(&two_stage, 0.04);
    assert!((t / 4.0 - 1.0).abs() < 0.15, "two-stage ratio {t}");
}

#[test]
fn integrating_back_with_negated_momentum_recovers_the_start() {
    // Palindromic splittings are exactly time-reversible; in f64 only
    // round-off (~1e-13 after 2000 steps of O(1) values) separates them.
    let q0 = Tensor::new(&[[0.3f64, -1.2], [2.0, 0.1]], &Device::Cpu).unwrap();
    let p0 = Tensor::new(&[[0.5f64, 0.7], [-1.0, 0.2]], &Device::Cpu).unwrap();
    type Step = Box<dyn Fn(&Tensor, &Tensor) -> (Tensor, Tensor)>;
    let schemes: Vec<(&str, Step)> = vec![
        (
            "leapfrog",
            Box::new(|q, p| leapfrog_step(q, p, pendulum_grad, 0.05, 1000).unwrap()),
        ),
        (
            "yoshida",
            Box::new(|q, p| yoshida4_triple_jump_step(q, p, pendulum_grad, 0.05, 1000).unwrap()),
        ),
        (
            "two-stage",
            Box::new(|q, p| {
                two_stage_step(q, p, pendulum_grad, 0.05, 1000, MCLACHLAN_LAMBDA).unwrap()
            }),
        ),
    ];
    for (name, step) in schemes {
        let (q1, p1) = step(&q0, &p0);
        let (q2, p2) = step(&q1, &p1.neg().unwrap());
        let dq = scalar(&(q2 - &q0).unwrap().abs().unwrap().max_all().unwrap());
        let dp = scalar(
            &(p2.neg().unwrap() - &p0)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap(),
        );
        assert!(dq < 1e-10 && dp < 1e-10, "{name}: {dq} {dp}");
    }
}

/// Shoelace area of the polygon with vertices (q_i, p_i).
fn polygon_area(q: &[f64], p: &[f64]) -> f64 {
    let n = q.len();
    (0..n)
        .map(|i| q[i] * p[(i + 1) % n] - q[(i + 1) % n] * p[i])
        .sum::<f64>()
        .abs()
        / 2.0
}

#[test]
fn a_batch_of_points_on_a_circle_keeps_its_enclosed_area() {
    // Symplectic maps of the plane preserve area (Liouville). 1000 points on
    // a circle of radius 1.5 evolve as one [1000, 1] batch under the
    // (nonlinear) pendulum; the 1000-gon's area changes only through the
    // polygon approximation of the deformed curve.
    let n = 1000;
    let angles: Vec<f64> = (0..n)
        .map(|i| 2.0 * std::f64::consts::PI * i as f64 / n as f64)
        .collect();
    let q = Tensor::from_vec(
        angles.iter().map(|a| 1.5 * a.cos()).collect::<Vec<_>>(),
        (n, 1),
        &Device::Cpu,
    )
    .unwrap();
    let p = Tensor::from_vec(
        angles.iter().map(|a| 1.5 * a.sin()).collect::<Vec<_>>(),
        (n, 1),
        &Device::Cpu,
    )
    .unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let a0 = polygon_area(&flat(&q), &flat(&p));
    let (q1, p1) = leapfrog_step(&q, &p, pendulum_grad, 0.01, 1000).unwrap();
    let a1 = polygon_area(&flat(&q1), &flat(&p1));
    assert!((a1 - a0).abs() < 1e-2, "area {a0} -> {a1}");
    // The flow did deform the circle (otherwise the test proves nothing).
    let moved = flat(&q1)
        .iter()
        .zip(flat(&q))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(moved > 0.5);
    // Explicit Euler, same points: area grows by (1 + dt²cos q)-ish per step.
    let (mut qe, mut pe) = (q.clone(), p.clone());
    for _ in 0..1000 {
        let g = pendulum_grad(&qe).unwrap();
        (qe, pe) = (
            (&qe + (&pe * 0.01).unwrap()).unwrap(),
            (&pe - (g * 0.01).unwrap()).unwrap(),
        );
    }
    assert!(polygon_area(&flat(&qe), &flat(&pe)) - a0 > 0.5);
}

#[test]
fn autograd_gradient_matches_the_analytic_one_in_f32_and_f64() {
    for dtype in [DType::F32, DType::F64] {
        let q = Tensor::new(&[[0.3f64, -1.2], [2.0, 0.1]], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let p = q.ones_like().unwrap();
        let pendulum_potential = |q: &Tensor| q.cos()?.neg()?.sum(D::Minus1);
        let (qa, pa) =
            leapfrog_step(&q, &p, potential_gradient(pendulum_potential), 0.1, 10).unwrap();
        let (qb, pb) = leapfrog_step(&q, &p, pendulum_grad, 0.1, 10).unwrap();
        assert_eq!(qa.dtype(), dtype);
        // Same arithmetic up to the order of f32 round-off (1e-7·|x|·steps).
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
        let dq = scalar(&(qa - qb).unwrap().abs().unwrap().max_all().unwrap());
        let dp = scalar(&(pa - pb).unwrap().abs().unwrap().max_all().unwrap());
        assert!(dq < tol && dp < tol, "{dtype:?}: {dq} {dp}");
    }
}

#[test]
fn kinetic_energy_with_diagonal_and_dense_mass() {
    let p = Tensor::new(&[[1.0f64, 2.0], [-1.0, 0.5]], &Device::Cpu).unwrap();
    let diag = Tensor::new(&[2.0f64, 4.0], &Device::Cpu).unwrap();
    // ½ Σ p²/m: row 0 = ½(1/2 + 4/4) = 0.75, row 1 = ½(1/2 + 0.25/4) = 0.28125.
    let k = kinetic_energy(&p, Some(&diag))
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(k, vec![0.75, 0.28125]);
    // M = [[2, 1], [1, 2]], M⁻¹ = [[2, −1], [−1, 2]]/3.
    let dense = Tensor::new(&[[2.0f64, 1.0], [1.0, 2.0]], &Device::Cpu).unwrap();
    let k = kinetic_energy(&p, Some(&dense))
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let expected = |a: f64, b: f64| 0.5 * (2.0 * a * a - 2.0 * a * b + 2.0 * b * b) / 3.0;
    assert!(
        (k[0] - expected(1.0, 2.0)).abs() < 1e-14 && (k[1] - expected(-1.0, 0.5)).abs() < 1e-14
    );
    // One-dimensional input gives a scalar.
    let k = kinetic_energy(
        &Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap(),
        Some(&dense),
    )
    .unwrap();
    assert_eq!(k.dims(), &[] as &[usize]);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let q = Tensor::new(&[[1.0f64, 0.0]], &Device::Cpu).unwrap();
    let p3 = Tensor::new(&[[1.0f64, 0.0, 2.0]], &Device::Cpu).unwrap();
    assert!(matches!(
        leapfrog_step(&q, &p3, harmonic_grad, 0.1, 1),
        Err(Error::Shape { what: "p", .. })
    ));
    let p32 = q.to_dtype(DType::F32).unwrap();
    assert!(matches!(
        leapfrog_step(&q, &p32, harmonic_grad, 0.1, 1),
        Err(Error::DType { what: "p", .. })
    ));
    assert!(matches!(
        leapfrog_step(&q, &q, harmonic_grad, f64::NAN, 1),
        Err(Error::Parameter { name: "dt", .. })
    ));
    let wrong_grad = |q: &Tensor| q.sum_keepdim(1);
    assert!(matches!(
        leapfrog_step(&q, &q, wrong_grad, 0.1, 1),
        Err(Error::Shape {
            what: "grad_h(q)",
            ..
        })
    ));
    let ints = Tensor::new(&[[1u32, 0]], &Device::Cpu).unwrap();
    assert!(matches!(
        hamiltonian_energy(&ints, &ints, harmonic_potential, None),
        Err(Error::DType { .. })
    ));
    let bad_mass = Tensor::new(&[1.0f64, 2.0, 3.0], &Device::Cpu).unwrap();
    assert!(matches!(
        kinetic_energy(&q, Some(&bad_mass)),
        Err(Error::Shape {
            what: "mass_matrix",
            ..
        })
    ));
    let indefinite = Tensor::new(&[[1.0f64, 2.0], [2.0, 1.0]], &Device::Cpu).unwrap();
    assert!(matches!(
        kinetic_energy(&q, Some(&indefinite)),
        Err(Error::NotPositiveDefinite { .. })
    ));
    let scalar_potential = |q: &Tensor| q.sum_all();
    assert!(matches!(
        hamiltonian_energy(&q, &q, scalar_potential, None),
        Err(Error::Shape {
            what: "potential(q)",
            ..
        })
    ));
    assert!(matches!(
        two_stage_step(&q, &q, harmonic_grad, 0.1, 1, 0.7),
        Err(Error::Parameter { name: "lambda", .. })
    ));
}
