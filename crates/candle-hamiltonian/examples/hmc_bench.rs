//! Rust side of the NUTS benchmark against NumPyro (driven by
//! `bench/hmc/run.sh`, which writes the targets and NumPyro's draws first):
//!
//! ```text
//! cargo run --release -p candle-hamiltonian --example hmc_bench -- \
//!     DATA_DIR TARGET CHAINS WARMUP DRAWS SEED [NUMPYRO_JSON] [--separate-adaptation]
//! ```
//!
//! `--numpyro-criterion` uses NumPyro's U-turn test instead of Stan's.
//! `--separate-adaptation` runs the chains as independent single-chain runs,
//! each with its own warm-up (as NumPyro's vectorised chains do), instead of
//! one batch with pooled adaptation.
//!
//! TARGET is `gaussian` or `logistic` (plain-slice gradient, the CPU fast
//! path) or `gaussian-tensor` / `logistic-tensor` (candle tensors + autograd).
//! Both samplers' draws are scored with the same estimator: the minimum over
//! coordinates of Stan's bulk ESS.

use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, D};
use candle_hamiltonian::diagnostics::split_rank_normalized_ess;
use candle_hamiltonian::models::LogisticRegression;
use candle_hamiltonian::{
    dot, run, uniform_initial_positions, FnPotential, Kernel, Nuts, Potential, TensorPotential,
    UTurnCriterion, WarmupConfig,
};
use rand::SeedableRng;

/// Minimum bulk ESS over coordinates of draws laid out `[chains, draws, dim]`.
fn min_bulk_ess(draws: &[f64], chains: usize, n: usize, dim: usize) -> anyhow::Result<f64> {
    let mut worst = f64::INFINITY;
    for j in 0..dim {
        let per_chain: Vec<Vec<f64>> = (0..chains)
            .map(|c| (0..n).map(|i| draws[(c * n + i) * dim + j]).collect())
            .collect();
        worst = worst.min(split_rank_normalized_ess(&per_chain)?.0);
    }
    Ok(worst)
}

/// A numeric comma-separated file (after `header_lines` lines) as
/// row-major values and its row count.
fn read_matrix(path: &str, header_lines: usize) -> anyhow::Result<(Vec<f64>, usize)> {
    let text = std::fs::read_to_string(path).with_context(|| path.to_string())?;
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(header_lines)
        .map(|l| {
            l.split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()
        .with_context(|| path.to_string())?;
    let n = rows.len();
    Ok((rows.concat(), n))
}

struct Outcome {
    seconds: f64,
    min_ess: f64,
    sampling_gradients: usize,
    warmup_gradients: usize,
    divergences: usize,
    /// `[chains, draws, dim]`.
    draws: Vec<f64>,
}

fn sample<P: Potential + Clone>(
    potential: P,
    chains: usize,
    warmup: usize,
    draws: usize,
    seed: u64,
    separate: bool,
    criterion: UTurnCriterion,
) -> anyhow::Result<Outcome> {
    if !separate {
        return sample_batch(potential, chains, warmup, draws, seed, criterion);
    }
    let dim = potential.dim();
    let mut parts = Vec::new();
    for c in 0..chains {
        parts.push(sample_batch(
            potential.clone(),
            1,
            warmup,
            draws,
            seed * 1000 + c as u64,
            criterion,
        )?);
    }
    let mut by_chain = Vec::with_capacity(chains * draws * dim);
    for part in &parts {
        by_chain.extend_from_slice(&part.draws);
    }
    Ok(Outcome {
        seconds: parts.iter().map(|p| p.seconds).sum(),
        min_ess: min_bulk_ess(&by_chain, chains, draws, dim)?,
        sampling_gradients: parts.iter().map(|p| p.sampling_gradients).sum(),
        warmup_gradients: parts.iter().map(|p| p.warmup_gradients).sum(),
        divergences: parts.iter().map(|p| p.divergences).sum(),
        draws: by_chain,
    })
}

fn sample_batch<P: Potential>(
    potential: P,
    chains: usize,
    warmup: usize,
    draws: usize,
    seed: u64,
    criterion: UTurnCriterion,
) -> anyhow::Result<Outcome> {
    let dim = potential.dim();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let init = uniform_initial_positions(&mut rng, chains, dim, 2.0);
    let mut nuts = Nuts::new(potential, 1.0)?.with_u_turn_criterion(criterion);
    let state = nuts.init_from_slice(&init)?;
    let config = WarmupConfig {
        num_warmup: warmup,
        ..Default::default()
    };
    let started = Instant::now();
    let trace = run(&mut nuts, &mut rng, state, &config, draws, |_, _| {})?;
    let seconds = started.elapsed().as_secs_f64();
    // Trace draws are [draws, chains, dim]; reorder to [chains, draws, dim].
    let mut by_chain = vec![0.0; trace.draws.len()];
    for i in 0..draws {
        for c in 0..chains {
            let (from, to) = ((i * chains + c) * dim, (c * draws + i) * dim);
            by_chain[to..to + dim].copy_from_slice(&trace.draws[from..from + dim]);
        }
    }
    Ok(Outcome {
        seconds,
        min_ess: min_bulk_ess(&by_chain, chains, draws, dim)?,
        sampling_gradients: trace.sampling_gradient_evaluations(),
        warmup_gradients: trace.warmup_gradient_evaluations,
        divergences: trace.divergences(),
        draws: by_chain,
    })
}

fn json_number(json: &str, key: &str) -> anyhow::Result<f64> {
    let start = json
        .find(&format!("\"{key}\": "))
        .with_context(|| format!("{key} missing"))?
        + key.len()
        + 4;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Ok(rest[..end].trim().parse()?)
}

fn main() -> anyhow::Result<()> {
    let all: Vec<String> = std::env::args().collect();
    let separate = all.iter().any(|a| a == "--separate-adaptation");
    let criterion = if all.iter().any(|a| a == "--numpyro-criterion") {
        UTurnCriterion::NumPyro
    } else {
        UTurnCriterion::Stan
    };
    let args: Vec<&String> = all.iter().filter(|a| !a.starts_with("--")).collect();
    if args.len() < 7 {
        bail!("usage: hmc_bench DATA_DIR TARGET CHAINS WARMUP DRAWS SEED [NUMPYRO_JSON]");
    }
    let (dir, target) = (args[1], args[2].as_str());
    let [chains, warmup, draws, seed] = [3, 4, 5, 6].map(|i| args[i].parse::<usize>().unwrap_or(0));
    let seed = seed as u64;
    let ours = match target {
        "gaussian" | "gaussian-tensor" => {
            let (precision, dim) = read_matrix(&format!("{dir}/gaussian_precision.csv"), 0)?;
            if target == "gaussian" {
                let p = precision.clone();
                let f = move |q: &[f64], g: &mut [f64]| {
                    for (row, gi) in p.chunks_exact(dim).zip(g.iter_mut()) {
                        *gi = dot(row, q);
                    }
                    0.5 * dot(q, g)
                };
                sample(
                    FnPotential::new(dim, f),
                    chains,
                    warmup,
                    draws,
                    seed,
                    separate,
                    criterion,
                )?
            } else {
                let p = Tensor::from_vec(precision, (dim, dim), &Device::Cpu)?;
                let f = move |q: &Tensor| (q.matmul(&p)? * q)?.sum(D::Minus1)? * 0.5;
                sample(
                    TensorPotential::new(dim, DType::F64, &Device::Cpu, f)?,
                    chains,
                    warmup,
                    draws,
                    seed,
                    separate,
                    criterion,
                )?
            }
        }
        "logistic" | "logistic-tensor" => {
            // make_targets.py writes x1..x25 then the label y, after one
            // header line.
            let (table, n) = read_matrix(&format!("{dir}/logistic.csv"), 1)?;
            if n == 0 || table.len() % n != 0 || table.len() == n {
                bail!("{dir}/logistic.csv: expected rows of predictors then a label");
            }
            let width = table.len() / n;
            let names = (1..width).map(|i| format!("x{i}")).collect();
            let mut features = Vec::with_capacity(n * (width - 1));
            let mut labels = Vec::with_capacity(n);
            for row in table.chunks_exact(width) {
                features.extend_from_slice(&row[..width - 1]);
                labels.push(row[width - 1]);
            }
            let model = LogisticRegression::new(names, &features, labels.clone(), 10.0)?;
            if target == "logistic" {
                sample(model, chains, warmup, draws, seed, separate, criterion)?
            } else {
                let k = width;
                let mut design = Vec::with_capacity(n * k);
                for row in features.chunks_exact(k - 1) {
                    design.push(1.0);
                    design.extend_from_slice(row);
                }
                let x = Tensor::from_vec(design, (n, k), &Device::Cpu)?;
                let y = Tensor::from_vec(labels, (n, 1), &Device::Cpu)?;
                let f = move |beta: &Tensor| -> candle_core::Result<Tensor> {
                    // beta: [chains, k]; eta: [n, chains].
                    let eta = x.matmul(&beta.t()?)?;
                    let softplus = (eta.exp()? + 1.0)?.log()?;
                    let likelihood = (softplus - eta.broadcast_mul(&y)?)?.sum(0)?;
                    let prior = (beta.sqr()?.sum(D::Minus1)? * (0.5 / 100.0))?;
                    likelihood + prior
                };
                sample(
                    TensorPotential::new(k, DType::F64, &Device::Cpu, f)?,
                    chains,
                    warmup,
                    draws,
                    seed,
                    separate,
                    criterion,
                )?
            }
        }
        other => bail!("unknown target {other:?}"),
    };
    let per_ess = ours.sampling_gradients as f64 / ours.min_ess;
    println!(
        "{{\"sampler\": \"candle-hamiltonian{}\", \"target\": \"{target}\", \"seconds\": {:.4}, \"min_bulk_ess\": {:.1}, \"ess_per_second\": {:.1}, \"gradients_per_ess\": {:.2}, \"warmup_gradients\": {}, \"sampling_gradients\": {}, \"divergences\": {}}}",
        match (separate, criterion) {
            (false, UTurnCriterion::Stan) => "",
            (true, UTurnCriterion::Stan) => " (separate adaptation)",
            (false, UTurnCriterion::NumPyro) => " (NumPyro criterion)",
            (true, UTurnCriterion::NumPyro) => " (separate adaptation, NumPyro criterion)",
        },
        ours.seconds, ours.min_ess, ours.min_ess / ours.seconds, per_ess, ours.warmup_gradients, ours.sampling_gradients, ours.divergences
    );
    if let Some(json_path) = args.get(7).copied() {
        let json = std::fs::read_to_string(json_path)?;
        let base = target.trim_end_matches("-tensor");
        let raw = std::fs::read(format!("{dir}/numpyro_{base}.f64"))?;
        let peer: Vec<f64> = raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let dim = peer.len() / (chains * draws);
        let ess = min_bulk_ess(&peer, chains, draws, dim)?;
        let seconds = json_number(&json, "seconds")?;
        let grads = json_number(&json, "sampling_gradients")?;
        println!(
            "{{\"sampler\": \"numpyro\", \"target\": \"{base}\", \"seconds\": {seconds:.4}, \"min_bulk_ess\": {ess:.1}, \"ess_per_second\": {:.1}, \"gradients_per_ess\": {:.2}, \"mcmc_run_seconds\": {:.3}, \"divergences\": {}}}",
            ess / seconds,
            grads / ess,
            json_number(&json, "mcmc_run_seconds")?,
            json_number(&json, "divergences")?
        );
        println!(
            "ratio {target}: ESS/s ours/numpyro = {:.2}, gradients per ESS ours/numpyro = {:.2}",
            (ours.min_ess / ours.seconds) / (ess / seconds),
            per_ess / (grads / ess)
        );
    }
    Ok(())
}
