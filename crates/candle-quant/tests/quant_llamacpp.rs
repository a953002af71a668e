//! Our quantized dot products against llama.cpp's own (its x86 CPU backend's `vec_dot`
//! on its own activation blocks, scripts/quant_llamacpp_dot_fixtures.py) on real model
//! rows: with bit-identical activation blocks the only difference left is the order of
//! the f32 accumulation.

use std::path::PathBuf;

use candle_quant::{QLinear, QuantType};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Tolerance: both sides compute the same exact integer block sums and the same f32
/// scale products, then add the per-block terms in different orders (with or without
/// FMA). Each f32 operation has relative error `eps = 2^-24`; each side adds every
/// block's terms into one of at most 8 lanes (one term per block per lane chain) and
/// then sums the lanes, so any partial sum passes through at most `n + 16` roundings
/// for `n` blocks, and the two results differ by at most `2 (n + 16) eps S`, where `S`
/// bounds the sum of term magnitudes: per block, `4 max|ŵ| (Σ|x| + 32 max|x| / 127)`
/// (scale terms see `|ŵ - offset| <= 2 max|ŵ|`, offset terms another `max|ŵ|`, and
/// each activation moves by at most half a step when quantized). Observed: 9 of the 15
/// rows bitwise equal, the largest difference 1.1e-5 (Q4_1, whose offset terms cancel).
#[test]
fn dot_products_equal_llama_cpp_up_to_summation_order() {
    let cases = [
        ("real_smollm2_q4_1", QuantType::Q4_1),
        ("real_smollm2_q8_0", QuantType::Q8_0),
        ("real_gemma3_q5_0", QuantType::Q5_0),
        ("real_gemma3_q4_k", QuantType::Q4K),
        ("real_gemma3_q6_k", QuantType::Q6K),
    ];
    for (case, ty) in cases {
        let bytes = fixture(&format!("{case}.q"));
        let w_hat = f32s(&fixture(&format!("{case}.deq.f32")));
        let x = f32s(&fixture(&format!("{case}.x.f32")));
        let expected = f32s(&fixture(&format!("{case}.llamacpp.f32")));
        let (rows, in_f) = (expected.len(), x.len());
        let layer = QLinear::from_bytes(ty, rows, in_f, bytes).unwrap();
        let mut y = vec![0f32; rows];
        layer.forward_slice(&x, 1, &mut y).unwrap();
        let n_blocks = in_f / ty.block_elems();
        for r in 0..rows {
            let wr = &w_hat[r * in_f..(r + 1) * in_f];
            let s: f64 = wr
                .chunks(ty.block_elems())
                .zip(x.chunks(ty.block_elems()))
                .map(|(w, xb)| {
                    let wmax = w.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
                    let xmax = xb.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
                    let xsum: f64 = xb.iter().map(|&v| (v as f64).abs()).sum();
                    4.0 * wmax * (xsum + 32.0 * xmax / 127.0)
                })
                .sum();
            let tol = 2.0 * (n_blocks as f64 + 16.0) * (f32::EPSILON as f64 / 2.0) * s;
            let diff = (y[r] as f64 - expected[r] as f64).abs();
            assert!(
                diff <= tol,
                "{case} row {r}: ours {} vs llama.cpp {} (diff {diff:e}, tol {tol:e})",
                y[r],
                expected[r]
            );
        }
    }
}
