//! HIP-19 conformance: every operation of §Core Operations, in every variant
//! the fixture generator defines, for every HIP-19 dtype, against PyTorch's
//! reference outputs (`scripts/gen_conformance_fixtures.py`).
//!
//! A cell is "pass" when every variant matches within the dtype's tolerance,
//! and "n.a." when PyTorch does not define the operation for the dtype; for
//! those we must return a typed error rather than invent a meaning. The
//! matrix this test computes is docs/CONFORMANCE.md; it fails when the
//! committed file is stale (`UPDATE_CONFORMANCE=1 cargo test -p candle-ops
//! --test conformance` rewrites it).

use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

#[derive(serde::Deserialize)]
struct Cell {
    op: String,
    variant: String,
    dtype: String,
    key: String,
    status: String,
    inputs: usize,
    #[serde(default)]
    outputs: usize,
    #[serde(default)]
    reason: String,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Tolerance `(rtol, atol)` for comparing with the correctly rounded
/// float64 reference. The references are rounded once; our kernels round
/// each intermediate of a short chain (≤ ~3 roundings plus an accumulation of
/// at most 300 terms), so a few units in the last place of the dtype:
/// f32 ε = 1.2e-7 -> 1e-5; f64 ε = 2.2e-16 -> 1e-12; f16 ε = 9.8e-4 ->
/// 4e-3 (4 ulp); bf16 ε = 7.8e-3 -> 3.2e-2 (4 ulp). Integers are exact.
fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-5, 1e-5),
        DType::F64 => (1e-12, 1e-12),
        DType::F16 => (4e-3, 4e-3),
        DType::BF16 => (3.2e-2, 3.2e-2),
        _ => (0.0, 0.0),
    }
}

fn dtype_of(name: &str) -> DType {
    match name {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f64" => DType::F64,
        "i64" => DType::I64,
        "u32" => DType::U32,
        "u8" => DType::U8,
        other => panic!("unknown dtype {other} in fixture"),
    }
}

/// Runs one fixture cell through candle-ops. The parameters of each variant
/// mirror the generator script.
fn run(op: &str, variant: &str, x: &[Tensor]) -> candle_ops::Result<Vec<Tensor>> {
    use candle_ops as ops;
    let one = |t: candle_ops::Result<Tensor>| t.map(|t| vec![t]);
    match (op, variant) {
        ("add", _) => one(ops::add(&x[0], &x[1])),
        ("sub", _) => one(ops::sub(&x[0], &x[1])),
        ("mul", _) => one(ops::mul(&x[0], &x[1])),
        ("div", _) => one(ops::div(&x[0], &x[1])),
        ("eq", _) => one(ops::eq(&x[0], &x[1])),
        ("lt", _) => one(ops::lt(&x[0], &x[1])),
        ("gt", _) => one(ops::gt(&x[0], &x[1])),
        ("neg", _) => one(ops::neg(&x[0])),
        ("abs", _) => one(ops::abs(&x[0])),
        ("exp", _) => one(ops::exp(&x[0])),
        ("log", _) => one(ops::log(&x[0])),
        ("sqrt", _) => one(ops::sqrt(&x[0])),
        ("recip", _) => one(ops::recip(&x[0])),
        ("relu", _) => one(ops::relu(&x[0])),
        ("gelu", _) => one(ops::gelu(&x[0])),
        ("silu", _) => one(ops::silu(&x[0])),
        ("tanh", _) => one(ops::tanh(&x[0])),
        ("sum", "dims_1") => one(ops::sum(&x[0], &[1])),
        ("sum", "dims_0_2") => one(ops::sum(&x[0], &[0, 2])),
        ("mean", _) => one(ops::mean(&x[0], &[1])),
        ("max", _) => one(ops::max(&x[0], 1)),
        ("min", _) => one(ops::min(&x[0], 1)),
        ("argmax", _) => one(ops::argmax(&x[0], 1)),
        ("argmin", _) => one(ops::argmin(&x[0], 0)),
        ("matmul", _) => one(ops::matmul(&x[0], &x[1])),
        ("transpose", _) => one(ops::transpose(&x[0], 0, 2)),
        ("contiguous", _) => one(ops::transpose(&x[0], 0, 1).and_then(|t| ops::contiguous(&t))),
        ("broadcast_as", _) => one(ops::broadcast_as(&x[0], &[2, 3, 4])),
        // `causal` has as many queries as keys; `causal_kv_cache` fewer,
        // with PyTorch given the bottom-right aligned mask a KV cache needs.
        ("scaled_dot_product_attention", "causal" | "causal_kv_cache") => one(
            ops::scaled_dot_product_attention_causal(&x[0], &x[1], &x[2], 0.3),
        ),
        ("scaled_dot_product_attention", _) => one(ops::scaled_dot_product_attention(
            &x[0],
            &x[1],
            &x[2],
            x.get(3),
            0.3,
        )),
        ("layer_norm", _) => one(ops::layer_norm(&x[0], &x[1], x.get(2), 1e-5)),
        ("rms_norm", _) => one(ops::rms_norm(&x[0], &x[1], 1e-6)),
        ("rms_norm_residual", _) => {
            ops::rms_norm_residual(&x[0], &x[1], &x[2], 1e-6).map(|(n, h)| vec![n, h])
        }
        ("rotary_embedding", "rotate_half") => one(ops::rotary_embedding(&x[0], &x[1], &x[2])),
        ("rotary_embedding", "interleaved") => {
            one(ops::apply_rotary_emb_interleaved(&x[0], &x[1], &x[2]))
        }
        ("softmax", "dim_1") => one(ops::softmax(&x[0], 1)),
        ("softmax", "last_dim") => one(ops::softmax(&x[0], 1)),
        ("log_softmax", "dim_0") => one(ops::log_softmax(&x[0], 0)),
        ("log_softmax", "last_dim") => one(ops::log_softmax(&x[0], 1)),
        ("embedding", _) => one(ops::embedding(&x[0], &x[1])),
        ("conv2d", "pad1_stride2_bias") => one(ops::conv2d(&x[0], &x[1], Some(&x[2]), 1, 2)),
        ("conv2d", "no_bias") => one(ops::conv2d(&x[0], &x[1], None, 0, 1)),
        ("avg_pool2d", "k2_s2") => one(ops::avg_pool2d(&x[0], 2, 2)),
        ("avg_pool2d", "k3_s1") => one(ops::avg_pool2d(&x[0], 3, 1)),
        ("max_pool2d", "k2_s2") => one(ops::max_pool2d(&x[0], 2, 2)),
        ("max_pool2d", "k3_s1") => one(ops::max_pool2d(&x[0], 3, 1)),
        ("reshape", _) => one(ops::reshape(&x[0], &[4, 6])),
        ("squeeze", "dim_1") => one(ops::squeeze(&x[0], 1)),
        ("squeeze", _) => one(ops::squeeze(&x[0], 0)),
        ("unsqueeze", _) => one(ops::unsqueeze(&x[0], 1)),
        ("narrow", _) => one(ops::narrow(&x[0], 1, 1, 2)),
        ("chunk", "8_in_3") => ops::chunk(&x[0], 3, 1),
        ("chunk", _) => ops::chunk(&x[0], 4, 1),
        ("cat", _) => one(ops::cat(&[&x[0], &x[1], &x[2]], 1)),
        ("stack", _) => one(ops::stack(&[&x[0], &x[1]], 1)),
        ("gather", _) => one(ops::gather(&x[0], &x[1], 1)),
        ("scatter", _) => one(ops::scatter(&x[0], &x[1], &x[2], 1)),
        ("index_select", _) => one(ops::index_select(&x[0], &x[1], 0)),
        _ => panic!("fixture names an op/variant the suite does not know: {op}/{variant}"),
    }
}

/// Compares within `tolerance(expected dtype)`; NaN matches NaN and
/// infinities must match exactly.
fn compare(got: &Tensor, expected: &Tensor) -> Result<(), String> {
    if got.dtype() != expected.dtype() {
        return Err(format!(
            "dtype {:?}, expected {:?}",
            got.dtype(),
            expected.dtype()
        ));
    }
    if got.dims() != expected.dims() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.dims(),
            expected.dims()
        ));
    }
    let to_f64 = |t: &Tensor| -> Vec<f64> {
        t.to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .expect("tensor converts to f64")
    };
    let (rtol, atol) = tolerance(expected.dtype());
    for (i, (g, e)) in to_f64(got).into_iter().zip(to_f64(expected)).enumerate() {
        let same = (g.is_nan() && e.is_nan()) || g == e || (g - e).abs() <= atol + rtol * e.abs();
        if !same {
            return Err(format!("element {i}: got {g}, expected {e}"));
        }
    }
    Ok(())
}

struct Outcome {
    /// (op, dtype) -> "pass" | "n.a." | "FAIL"
    matrix: BTreeMap<(String, String), &'static str>,
    failures: Vec<String>,
    na_reasons: BTreeMap<String, BTreeMap<String, String>>,
}

fn run_suite(device: &Device) -> Outcome {
    let manifest: Vec<Cell> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("ops.json")).expect("ops.json"),
    )
    .expect("manifest parses");
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixtures().join("ops.safetensors"), device)
            .expect("ops.safetensors loads");
    let mut out = Outcome {
        matrix: BTreeMap::new(),
        failures: vec![],
        na_reasons: BTreeMap::new(),
    };
    for cell in &manifest {
        let inputs: Vec<Tensor> = (0..cell.inputs)
            .map(|i| tensors[&format!("{}.in{i}", cell.key)].clone())
            .collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(&cell.op, &cell.variant, &inputs)
        }));
        let verdict = match (cell.status.as_str(), result) {
            (_, Err(_)) => Err("panicked".to_string()),
            ("n.a.", Ok(Err(_))) => Ok("n.a."),
            ("n.a.", Ok(Ok(_))) => Err(format!("accepted input PyTorch rejects ({})", cell.reason)),
            (_, Ok(Err(e))) => Err(format!("error: {e}")),
            (_, Ok(Ok(got))) => {
                if got.len() != cell.outputs {
                    Err(format!("{} outputs, expected {}", got.len(), cell.outputs))
                } else {
                    got.iter()
                        .enumerate()
                        .try_for_each(|(i, g)| {
                            compare(g, &tensors[&format!("{}.out{i}", cell.key)])
                                .map_err(|e| format!("output {i}: {e}"))
                        })
                        .map(|_| "pass")
                }
            }
        };
        if cell.status == "n.a." {
            out.na_reasons
                .entry(cell.op.clone())
                .or_default()
                .insert(cell.dtype.clone(), cell.reason.clone());
        }
        let key = (cell.op.clone(), cell.dtype.clone());
        let entry = out.matrix.entry(key).or_insert("pass");
        match verdict {
            Ok(v) => {
                if *entry != "FAIL" {
                    *entry = v;
                }
            }
            Err(e) => {
                *entry = "FAIL";
                out.failures
                    .push(format!("{} [{:?}]: {e}", cell.key, device.location()));
            }
        }
    }
    out
}

const DTYPE_COLUMNS: [&str; 7] = ["f32", "f16", "bf16", "f64", "i64", "u32", "u8"];

/// The devices of this build other than the CPU, each with the reason it
/// cannot be tested here when it cannot.
fn accelerators() -> Vec<(&'static str, Result<Device, String>)> {
    vec![
        (
            "cuda",
            Device::new_cuda(0)
                .map_err(|e| candle_ops::Error::from_candle("device", e).to_string()),
        ),
        (
            "metal",
            Device::new_metal(0)
                .map_err(|e| candle_ops::Error::from_candle("device", e).to_string()),
        ),
    ]
}

fn render(cpu: &Outcome) -> String {
    let ops: Vec<&String> = {
        let mut seen = vec![];
        for (op, _) in cpu.matrix.keys() {
            if !seen.contains(&op) {
                seen.push(op);
            }
        }
        seen
    };
    let mut s = String::new();
    s.push_str("# HIP-19 conformance matrix\n\n");
    s.push_str(
        "Generated by `crates/candle-ops/tests/conformance.rs` from the PyTorch fixtures of\n",
    );
    s.push_str("`scripts/gen_conformance_fixtures.py`; do not edit by hand. Regenerate with\n");
    s.push_str("`UPDATE_CONFORMANCE=1 cargo test -p candle-ops --test conformance`.\n\n");
    s.push_str(
        "- **pass**: every variant of the operation matches PyTorch within the dtype's tolerance\n",
    );
    s.push_str(
        "  (f32 1e-5, f64 1e-12, f16 4e-3, bf16 3.2e-2 relative+absolute; integers exact).\n",
    );
    s.push_str(
        "- **n.a.**: PyTorch does not define the operation for the dtype; we return a typed\n",
    );
    s.push_str("  error for it (checked by the suite). Reasons are listed below the table.\n");
    s.push_str(
        "- **not available here**: the backend is not compiled into this build or has no device\n",
    );
    s.push_str(
        "  on the machine that generated this file; the same suite runs on it when it is.\n\n",
    );
    s.push_str("## CPU\n\n| op |");
    for d in DTYPE_COLUMNS {
        s.push_str(&format!(" {d} |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(DTYPE_COLUMNS.len()));
    s.push('\n');
    for op in &ops {
        s.push_str(&format!("| `{op}` |"));
        for d in DTYPE_COLUMNS {
            let v = cpu
                .matrix
                .get(&((*op).clone(), d.to_string()))
                .copied()
                .unwrap_or("missing");
            s.push_str(&format!(" {v} |"));
        }
        s.push('\n');
    }
    s.push_str("\n## Other devices\n\n| device | status |\n|---|---|\n");
    for (name, device) in accelerators() {
        match device {
            Ok(_) => s.push_str(&format!(
                "| {name} | suite runs on it (see the test output of this build) |\n"
            )),
            Err(why) => s.push_str(&format!("| {name} | not available here: {why} |\n")),
        }
    }
    s.push_str("\n## Why the n.a. cells are n.a.\n\n");
    for (op, reasons) in &cpu.na_reasons {
        let mut by_reason: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
        for (dtype, reason) in reasons {
            by_reason.entry(reason).or_default().push(dtype);
        }
        for (reason, dtypes) in by_reason {
            let dtypes: Vec<&str> = dtypes.iter().map(|d| d.as_str()).collect();
            s.push_str(&format!("- `{op}` ({}): {reason}\n", dtypes.join(", ")));
        }
    }
    s
}

#[test]
fn every_cpu_cell_matches_pytorch_and_the_matrix_is_current() {
    let cpu = run_suite(&Device::Cpu);
    assert!(
        cpu.failures.is_empty(),
        "{} failing cells:\n{}",
        cpu.failures.len(),
        cpu.failures.join("\n")
    );
    let doc = render(&cpu);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/CONFORMANCE.md");
    if std::env::var_os("UPDATE_CONFORMANCE").is_some() {
        std::fs::write(&path, &doc).expect("write docs/CONFORMANCE.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == doc,
        "docs/CONFORMANCE.md is stale: rerun with UPDATE_CONFORMANCE=1 cargo test -p candle-ops --test conformance"
    );
}

#[test]
fn the_suite_passes_on_every_accelerator_of_this_build() {
    for (name, device) in accelerators() {
        let Ok(device) = device else { continue };
        let outcome = run_suite(&device);
        assert!(
            outcome.failures.is_empty(),
            "{name}: {}",
            outcome.failures.join("\n")
        );
    }
}

#[derive(serde::Deserialize)]
struct Promotion {
    a: Vec<f64>,
    b: Vec<f64>,
    table: BTreeMap<String, PromotionCell>,
    sums: BTreeMap<String, Vec<f64>>,
}

#[derive(serde::Deserialize)]
struct PromotionCell {
    dtype: Option<String>,
}

#[test]
fn promotion_table_matches_numpy_and_promoted_add_gives_numpy_values() {
    let p: Promotion =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("promotion.json")).unwrap())
            .unwrap();
    let mut undefined_in_numpy = vec![];
    for (pair, cell) in &p.table {
        let (a, b) = pair.split_once(',').unwrap();
        let ours = candle_ops::result_type(dtype_of(a), dtype_of(b)).unwrap();
        match &cell.dtype {
            Some(expected) => assert_eq!(ours, dtype_of(expected), "result_type({a}, {b})"),
            None => undefined_in_numpy.push((a, b, ours)),
        }
    }
    // Pairs NumPy/ml_dtypes leave undefined: bf16 behaves like f16 and
    // bf16 + f16 -> f32 (HIP-19 §Tensor Types).
    for (a, b, ours) in undefined_in_numpy {
        let expected = if [a, b].contains(&"f16") {
            DType::F32
        } else {
            DType::F64
        };
        assert_eq!(ours, expected, "HIP-19 extension for result_type({a}, {b})");
    }
    for (pair, expected) in &p.sums {
        let (a, b) = pair.split_once(',').unwrap();
        let ta = Tensor::new(p.a.as_slice(), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype_of(a))
            .unwrap();
        let tb = Tensor::new(p.b.as_slice(), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype_of(b))
            .unwrap();
        let sum = candle_ops::add(&ta, &tb).unwrap();
        let got = sum.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(&got, expected, "values of {a} + {b}");
    }
}
