//! Micro-benchmarks of the quantized matmul: GB/s of weights streamed per format, against
//! upstream candle's `QMatMul` on the same bytes in the same run, the thread pool's
//! per-call dispatch cost, the per-call cost of `forward` (tensor) vs `forward_slice`,
//! and whole decoder layers of SmolLM2-135M and Gemma-3-270M (the 7 projections of one
//! token: per-layer `forward` calls, the grouped slice API, and upstream).
//!
//! `cargo bench -p candle-quant --bench quant_matmul [-- QUICK]`
//! Env: HANZO_BENCH_THREADS=1,2 (our thread counts). Upstream candle sizes its pool from
//! CANDLE_NUM_THREADS / RAYON_NUM_THREADS (default: all cores) at first use.
//!
//! `cargo test --all-targets` runs this binary too, without the `--bench` flag that
//! `cargo bench` passes: then every measurement runs once, on the small shapes and one
//! layer of each model with a short output head, so that the test suite proves the
//! benchmark still works without spending minutes (and gigabytes) on it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use candle_quant::kernels::{global_pool, set_num_threads};
use candle_quant::{quant, QLinear, QuantType};

/// Measured ~11 GB/s with 1 thread and 16–19 GB/s with 2 on the reference machine
/// (shared/PERF-NOTES.md); printed as the ceiling to compare against.
const BANDWIDTH_GBS: [(usize, f64); 2] = [(1, 11.0), (2, 17.5)];

/// How long each measurement runs, and whether this is the test suite's smoke run.
struct Timing {
    budget: Duration,
    min_samples: usize,
    smoke: bool,
}

impl Timing {
    fn from_args() -> Timing {
        let args: Vec<String> = std::env::args().collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        if !has("--bench") {
            return Timing {
                budget: Duration::ZERO,
                min_samples: 1,
                smoke: true,
            };
        }
        Timing {
            budget: Duration::from_millis(if has("QUICK") { 150 } else { 600 }),
            min_samples: 5,
            smoke: false,
        }
    }

    fn median_time(&self, mut f: impl FnMut()) -> Duration {
        f();
        let mut samples = Vec::new();
        let start = Instant::now();
        while start.elapsed() < self.budget || samples.len() < self.min_samples {
            let t = Instant::now();
            f();
            samples.push(t.elapsed());
        }
        samples.sort();
        samples[samples.len() / 2]
    }
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
    let timing = Timing::from_args();
    let threads: Vec<usize> = std::env::var("HANZO_BENCH_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    for &t in &threads {
        set_num_threads(t).unwrap();
        let pool = global_pool().unwrap();
        let per_call = timing.median_time(|| {
            pool.run(t * 4, &|i| {
                black_box(i);
            })
        });
        println!(
            "pool dispatch, {t} threads: {:.2} µs per call",
            per_call.as_secs_f64() * 1e6
        );
    }

    decoder_layers(&timing, &threads);
    for spec in [&SMOLLM2, &GEMMA3] {
        if timing.smoke {
            model_token(
                &timing,
                &threads,
                &ModelSpec {
                    n_layers: 1,
                    vocab: 256,
                    ..*spec
                },
            );
        } else {
            model_token(&timing, &threads, spec);
        }
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
    // The DRAM-sized matrix alone is 512 MB of f32 to quantize.
    let smoke_shape = |out_f: usize, in_f: usize| out_f * in_f <= 1 << 20;
    for &(label, out_f, in_f, m) in shapes
        .iter()
        .filter(|&&(_, out_f, in_f, _)| !timing.smoke || smoke_shape(out_f, in_f))
    {
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
            let theirs = timing.median_time(|| {
                black_box(upstream.forward(&x).unwrap());
            });
            for &t in &threads {
                set_num_threads(t).unwrap();
                let mine = timing.median_time(|| {
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

fn pseudo_random(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + seed) * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

struct Proj {
    ours: QLinear,
    upstream: QMatMul,
    bytes: usize,
}

fn proj(ty: QuantType, out_f: usize, in_f: usize, seed: usize) -> Proj {
    let bytes = quant::quantize(ty, &pseudo_random(out_f * in_f, seed)).unwrap();
    let storage =
        QStorage::from_data(std::borrow::Cow::Borrowed(&bytes), &Device::Cpu, ggml(ty)).unwrap();
    let upstream = QMatMul::from_qtensor(QTensor::new(storage, (out_f, in_f)).unwrap()).unwrap();
    Proj {
        bytes: bytes.len(),
        ours: QLinear::from_bytes(ty, out_f, in_f, bytes).unwrap(),
        upstream,
    }
}

/// One token through the 7 projections of a decoder layer: q, k, v (grouped), o,
/// gate, up (grouped), down. `shape`: (hidden, q_out, kv_out, intermediate).
fn decoder_layers(timing: &Timing, threads: &[usize]) {
    println!(
        "\none decode token through a layer's 7 projections (µs); GB/s of weights; \
         ratio = upstream / ours"
    );
    println!(
        "{:<34} {:>3} {:>10} {:>10} {:>10} {:>8} {:>9} {:>7}",
        "layer", "thr", "forward", "grouped", "upstream", "GB/s", "%ceiling", "ratio"
    );
    // (label, hidden, q_out, kv_out, intermediate, attention type, ffn type, down type)
    let layers = [
        (
            "SmolLM2-135M Q4_1",
            576,
            576,
            192,
            1536,
            QuantType::Q4_1,
            QuantType::Q4_1,
            QuantType::Q4_1,
        ),
        (
            "Gemma-3-270M Q5_0 (+Q8_0 down)",
            640,
            1024,
            256,
            2048,
            QuantType::Q5_0,
            QuantType::Q5_0,
            QuantType::Q8_0,
        ),
    ];
    for (label, hidden, q_out, kv_out, inter, attn_ty, ffn_ty, down_ty) in layers {
        let q = proj(attn_ty, q_out, hidden, 1);
        let k = proj(attn_ty, kv_out, hidden, 2);
        let v = proj(attn_ty, kv_out, hidden, 3);
        let o = proj(attn_ty, hidden, q_out, 4);
        let gate = proj(ffn_ty, inter, hidden, 5);
        let up = proj(ffn_ty, inter, hidden, 6);
        let down = proj(down_ty, hidden, inter, 7);
        let all = [&q, &k, &v, &o, &gate, &up, &down];
        let weight_bytes: usize = all.iter().map(|p| p.bytes).sum();
        let x = pseudo_random(hidden, 8);
        let xa = pseudo_random(q_out, 9);
        let xf = pseudo_random(inter, 10);
        let xt = Tensor::from_vec(x.clone(), (1, hidden), &Device::Cpu).unwrap();
        let xat = Tensor::from_vec(xa.clone(), (1, q_out), &Device::Cpu).unwrap();
        let xft = Tensor::from_vec(xf.clone(), (1, inter), &Device::Cpu).unwrap();
        let upstream = timing.median_time(|| {
            for p in [&q, &k, &v, &gate, &up] {
                black_box(p.upstream.forward(&xt).unwrap());
            }
            black_box(o.upstream.forward(&xat).unwrap());
            black_box(down.upstream.forward(&xft).unwrap());
        });
        let (mut yq, mut yk, mut yv) = (vec![0f32; q_out], vec![0f32; kv_out], vec![0f32; kv_out]);
        let (mut yo, mut yg, mut yu, mut yd) = (
            vec![0f32; hidden],
            vec![0f32; inter],
            vec![0f32; inter],
            vec![0f32; hidden],
        );
        for &t in threads {
            set_num_threads(t).unwrap();
            let per_call = timing.median_time(|| {
                for p in [&q, &k, &v, &gate, &up] {
                    black_box(p.ours.forward(&xt).unwrap());
                }
                black_box(o.ours.forward(&xat).unwrap());
                black_box(down.ours.forward(&xft).unwrap());
            });
            let grouped = timing.median_time(|| {
                QLinear::forward_group(
                    &[&q.ours, &k.ours, &v.ours],
                    &x,
                    1,
                    &mut [&mut yq, &mut yk, &mut yv],
                )
                .unwrap();
                o.ours.forward_slice(&xa, 1, &mut yo).unwrap();
                QLinear::forward_group(&[&gate.ours, &up.ours], &x, 1, &mut [&mut yg, &mut yu])
                    .unwrap();
                down.ours.forward_slice(&xf, 1, &mut yd).unwrap();
                black_box((&yq, &yk, &yv, &yo, &yg, &yu, &yd));
            });
            let gbs = weight_bytes as f64 / grouped.as_secs_f64() / 1e9;
            let ceiling = BANDWIDTH_GBS.iter().find(|(n, _)| *n == t).map(|(_, b)| *b);
            println!(
                "{:<34} {:>3} {:>10.1} {:>10.1} {:>10.1} {:>8.2} {:>9} {:>7.2}",
                label,
                t,
                per_call.as_secs_f64() * 1e6,
                grouped.as_secs_f64() * 1e6,
                upstream.as_secs_f64() * 1e6,
                gbs,
                ceiling.map_or("-".to_string(), |c| format!("{:.0}%", 100.0 * gbs / c)),
                upstream.as_secs_f64() / grouped.as_secs_f64(),
            );
        }
    }
    for &t in threads {
        set_num_threads(t).unwrap();
        let layer = proj(QuantType::Q4_1, 64, 64, 11);
        let x = pseudo_random(64, 12);
        let xt = Tensor::from_vec(x.clone(), (1, 64), &Device::Cpu).unwrap();
        let mut y = vec![0f32; 64];
        let tensor = timing.median_time(|| {
            black_box(layer.ours.forward(&xt).unwrap());
        });
        let slice = timing.median_time(|| {
            layer.ours.forward_slice(&x, 1, &mut y).unwrap();
            black_box(&y);
        });
        println!(
            "per-call cost, 64x64 q4_1, {t} threads: forward {:.2} µs, forward_slice {:.2} µs",
            tensor.as_secs_f64() * 1e6,
            slice.as_secs_f64() * 1e6
        );
    }
}

/// A decoder's projection shapes and weight types, as in its GGUF file.
struct ModelSpec {
    name: &'static str,
    n_layers: usize,
    hidden: usize,
    q_out: usize,
    kv_out: usize,
    inter: usize,
    /// Types of q, k, v, o, gate, up, down in layer `l`.
    types: fn(usize) -> [QuantType; 7],
    vocab: usize,
}

const SMOLLM2: ModelSpec = ModelSpec {
    name: "SmolLM2-135M Q4_1",
    n_layers: 30,
    hidden: 576,
    q_out: 576,
    kv_out: 192,
    inter: 1536,
    types: |_| [QuantType::Q4_1; 7],
    vocab: 49152,
};

/// Gemma-3-270M Q4_K_M: Q5_0 q/k/gate/up, v alternating Q5_0/Q8_0, Q4_K o, down
/// alternating Q4_K/Q6_K, Q8_0 tied output head.
const GEMMA3: ModelSpec = ModelSpec {
    name: "Gemma-3-270M Q4_K_M",
    n_layers: 18,
    hidden: 640,
    q_out: 1024,
    kv_out: 256,
    inter: 2048,
    types: |l| {
        use QuantType::*;
        let (v, down) = if l % 2 == 0 { (Q5_0, Q4K) } else { (Q8_0, Q6K) };
        [Q5_0, Q5_0, v, Q4K, Q5_0, Q5_0, down]
    },
    vocab: 262144,
};

/// One layer's seven projections (q, k, v, o, gate, up, down).
struct Layer {
    p: [Proj; 7],
}

struct Buffers {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

impl Buffers {
    fn new(spec: &ModelSpec, rows: usize) -> Buffers {
        Buffers {
            q: vec![0f32; rows * spec.q_out],
            k: vec![0f32; rows * spec.kv_out],
            v: vec![0f32; rows * spec.kv_out],
            o: vec![0f32; rows * spec.hidden],
            gate: vec![0f32; rows * spec.inter],
            up: vec![0f32; rows * spec.inter],
            down: vec![0f32; rows * spec.hidden],
        }
    }
}

/// x: [rows, hidden], xa: [rows, q_out], xf: [rows, inter]
fn run_layers(layers: &[Layer], x: &[f32], xa: &[f32], xf: &[f32], rows: usize, b: &mut Buffers) {
    for Layer {
        p: [q, k, v, o, gate, up, down],
    } in layers
    {
        QLinear::forward_group(
            &[&q.ours, &k.ours, &v.ours],
            x,
            rows,
            &mut [&mut b.q, &mut b.k, &mut b.v],
        )
        .unwrap();
        o.ours.forward_slice(xa, rows, &mut b.o).unwrap();
        QLinear::forward_group(
            &[&gate.ours, &up.ours],
            x,
            rows,
            &mut [&mut b.gate, &mut b.up],
        )
        .unwrap();
        down.ours.forward_slice(xf, rows, &mut b.down).unwrap();
    }
    black_box(b);
}

/// The matmuls of one decode token with every weight distinct (so weights stream from
/// DRAM as in a real decode, output head included): ours (grouped slice API) vs
/// upstream `QMatMul`, the tokens/s those matmuls alone allow, and with one thread the
/// CPU time of a decode token and of a 128-token prefill through the layers.
fn model_token(timing: &Timing, threads: &[usize], spec: &ModelSpec) {
    let (hidden, inter) = (spec.hidden, spec.inter);
    let layers: Vec<Layer> = (0..spec.n_layers)
        .map(|l| {
            let t = (spec.types)(l);
            let seed = 100 * l;
            let shapes = [
                (spec.q_out, hidden),
                (spec.kv_out, hidden),
                (spec.kv_out, hidden),
                (hidden, spec.q_out),
                (inter, hidden),
                (inter, hidden),
                (hidden, inter),
            ];
            Layer {
                p: std::array::from_fn(|i| proj(t[i], shapes[i].0, shapes[i].1, seed + i)),
            }
        })
        .collect();
    let head = proj(QuantType::Q8_0, spec.vocab, hidden, 99);
    let total: usize = layers
        .iter()
        .flat_map(|l| &l.p)
        .map(|p| p.bytes)
        .sum::<usize>()
        + head.bytes;
    let x = pseudo_random(hidden, 8);
    let xa = pseudo_random(spec.q_out, 9);
    let xf = pseudo_random(inter, 10);
    let xt = Tensor::from_vec(x.clone(), (1, hidden), &Device::Cpu).unwrap();
    let xat = Tensor::from_vec(xa.clone(), (1, spec.q_out), &Device::Cpu).unwrap();
    let xft = Tensor::from_vec(xf.clone(), (1, inter), &Device::Cpu).unwrap();
    let upstream = timing.median_time(|| {
        for Layer {
            p: [q, k, v, o, gate, up, down],
        } in &layers
        {
            for p in [q, k, v, gate, up] {
                black_box(p.upstream.forward(&xt).unwrap());
            }
            black_box(o.upstream.forward(&xat).unwrap());
            black_box(down.upstream.forward(&xft).unwrap());
        }
        black_box(head.upstream.forward(&xt).unwrap());
    });
    let mut bufs = Buffers::new(spec, 1);
    let mut logits = vec![0f32; spec.vocab];
    let mut token = |bufs: &mut Buffers| {
        run_layers(&layers, &x, &xa, &xf, 1, bufs);
        head.ours.forward_slice(&x, 1, &mut logits).unwrap();
        black_box(&logits);
    };
    println!(
        "\n{} decode token, matmuls only ({:.1} MB of weights, all distinct)",
        spec.name,
        total as f64 / 1e6
    );
    for &t in threads {
        set_num_threads(t).unwrap();
        let ours = timing.median_time(|| token(&mut bufs));
        if t == 1 {
            // On the oversubscribed VM a 10 ms token is preempted several times, so
            // wall time mostly measures the other tenants; with one thread the
            // calling thread does all the work and its CPU time is the honest figure
            // (compare with scripts/quant_bench_llamacpp.py's CPU-time column).
            let tokens = 10;
            let cpu0 = thread_cpu_ns();
            (0..tokens).for_each(|_| token(&mut bufs));
            if let (Some(a), Some(b)) = (cpu0, thread_cpu_ns()) {
                let per_token = (b - a) as f64 / tokens as f64 / 1e9;
                println!(
                    "1 thread, CPU time: decode {:.2} ms per token ({:.1} tok/s, {:.2} GB/s)",
                    per_token * 1e3,
                    1.0 / per_token,
                    total as f64 / per_token / 1e9
                );
            }
            let rows = 128;
            let mut prefill = Buffers::new(spec, rows);
            let xs = pseudo_random(rows * hidden, 13);
            let xas = pseudo_random(rows * spec.q_out, 14);
            let xfs = pseudo_random(rows * inter, 15);
            let cpu0 = thread_cpu_ns();
            run_layers(&layers, &xs, &xas, &xfs, rows, &mut prefill);
            if let (Some(a), Some(b)) = (cpu0, thread_cpu_ns()) {
                println!(
                    "1 thread, CPU time: prefill of {rows} tokens through the layers (no head): {:.1} tok/s",
                    rows as f64 / ((b - a) as f64 / 1e9)
                );
            }
        }
        println!(
            "{t} threads, wall: ours {:.2} ms ({:.1} tok/s, {:.2} GB/s), upstream {:.2} ms ({:.1} tok/s), ratio {:.2}",
            ours.as_secs_f64() * 1e3,
            1.0 / ours.as_secs_f64(),
            total as f64 / ours.as_secs_f64() / 1e9,
            upstream.as_secs_f64() * 1e3,
            1.0 / upstream.as_secs_f64(),
            upstream.as_secs_f64() / ours.as_secs_f64()
        );
    }
}

/// CPU time of the calling thread in ns (Linux `schedstat`), `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
