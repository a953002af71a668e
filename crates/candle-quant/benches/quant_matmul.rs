//! Micro-benchmarks of the quantized matmul: GB/s of weights streamed per format, against
//! upstream candle's `QMatMul` on the same bytes in the same run, and the thread pool's
//! per-call dispatch cost.
//!
//! `cargo bench -p candle-quant --bench quant_matmul [-- QUICK]`
//! Env: HANZO_BENCH_THREADS=1,2 (our thread counts). Upstream candle sizes its pool from
//! CANDLE_NUM_THREADS / RAYON_NUM_THREADS (default: all cores) at first use.

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use candle_quant::kernels::{global_pool, set_num_threads};
use candle_quant::{quant, QLinear, QuantType};

/// Measured ~11 GB/s with 1 thread and 16–19 GB/s with 2 on the reference machine
/// (shared/PERF-NOTES.md); printed as the ceiling to compare against.
const BANDWIDTH_GBS: [(usize, f64); 2] = [(1, 11.0), (2, 17.5)];

fn median_time(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 5 {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn ggml(ty: QuantType) -> GgmlDType {
    match ty {
        QuantType::Q4_0 => GgmlDType::Q4_0,
        QuantType::Q4_1 => GgmlDType::Q4_1,
        QuantType::Q5_0 => GgmlDType::Q5_0,
        QuantType::Q5_1 => GgmlDType::Q5_1,
        QuantType::Q8_0 => GgmlDType::Q8_0,
        QuantType::Q4K => GgmlDType::Q4K,
        QuantType::Q5K => GgmlDType::Q5K,
        QuantType::Q6K => GgmlDType::Q6K,
        other => panic!("no benchmark for {other}"),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "QUICK");
    let budget = Duration::from_millis(if quick { 150 } else { 600 });
    let threads: Vec<usize> = std::env::var("HANZO_BENCH_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    for &t in &threads {
        set_num_threads(t).unwrap();
        let pool = global_pool().unwrap();
        let per_call = median_time(budget, || {
            pool.run(t * 4, &|i| {
                black_box(i);
            })
        });
        println!(
            "pool dispatch, {t} threads: {:.2} µs per call",
            per_call.as_secs_f64() * 1e6
        );
    }

    let formats = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
    ];
    // (label, out_features, in_features, activation rows)
    let shapes: &[(&str, usize, usize, usize)] = &[
        ("decode 64x64 (per-call overhead)", 64, 64, 1),
        (
            "decode 1536x576 (SmolLM2 ffn, cache-resident)",
            1536,
            576,
            1,
        ),
        ("decode 32768x4096 (streams from DRAM)", 32768, 4096, 1),
        (
            "prefill 1536x512 x 128 rows (rate: GFLOP/s)",
            1536,
            512,
            128,
        ),
    ];
    println!(
        "\nrate: GB/s of weights for decode, GFLOP/s for prefill; ratio = candle time / ours;\n\
         upstream candle threads: CANDLE_NUM_THREADS={}",
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "unset (all cores)".into())
    );
    println!(
        "{:<46} {:<5} {:>3} {:>10} {:>8} {:>10} {:>8} {:>7} {:>9}",
        "shape", "type", "thr", "ours µs", "rate", "candle µs", "rate", "ratio", "%ceiling"
    );
    for &(label, out_f, in_f, m) in shapes {
        let w: Vec<f32> = (0..out_f * in_f)
            .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let x: Vec<f32> = (0..m * in_f)
            .map(|i| ((i * 40503) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let x = Tensor::from_vec(x, (m, in_f), &Device::Cpu).unwrap();
        for ty in formats {
            if in_f % ty.block_elems() > 0 {
                continue;
            }
            let bytes = quant::quantize(ty, &w).unwrap();
            let n_bytes = bytes.len() as f64;
            let storage =
                QStorage::from_data(std::borrow::Cow::Borrowed(&bytes), &Device::Cpu, ggml(ty))
                    .unwrap();
            let upstream =
                QMatMul::from_qtensor(QTensor::new(storage, (out_f, in_f)).unwrap()).unwrap();
            let ours = QLinear::from_bytes(ty, out_f, in_f, bytes).unwrap();
            let theirs = median_time(budget, || {
                black_box(upstream.forward(&x).unwrap());
            });
            for &t in &threads {
                set_num_threads(t).unwrap();
                let mine = median_time(budget, || {
                    black_box(ours.forward(&x).unwrap());
                });
                // Weight bytes per second for decode; multiply-adds for prefill.
                let work = if m == 1 {
                    n_bytes
                } else {
                    2.0 * (m * out_f * in_f) as f64
                };
                let gbs = |d: Duration| work / d.as_secs_f64() / 1e9;
                let ceiling = BANDWIDTH_GBS
                    .iter()
                    .find(|(n, _)| *n == t && m == 1)
                    .map(|(_, b)| *b);
                println!(
                    "{:<46} {:<5} {:>3} {:>10.1} {:>8.2} {:>10.1} {:>8.2} {:>7.2} {:>9}",
                    label,
                    ty.name(),
                    t,
                    mine.as_secs_f64() * 1e6,
                    gbs(mine),
                    theirs.as_secs_f64() * 1e6,
                    gbs(theirs),
                    theirs.as_secs_f64() / mine.as_secs_f64(),
                    ceiling.map_or("-".to_string(), |c| format!(
                        "{:.0}%",
                        100.0 * gbs(mine) / c
                    )),
                );
            }
        }
    }
}
