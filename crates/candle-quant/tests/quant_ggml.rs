//! Our quantizers against ggml's own: `ggml_quantize_chunk` (the call llama-quantize
//! makes, no importance matrix) run by scripts/quant_ggml_reference.py on rows of
//! several distributions (gaussian, uniform, one-signed, heavy-tailed, outliers, zero
//! blocks and rows, exact ties, magnitudes down to below ggml's epsilon).
//!
//! Tolerance 0: every format must give ggml's bytes, block for block. ggml-base is
//! compiled without fused multiply-adds and our quantizers do the same f32 operations
//! in the same order, so a differing byte is a bug, not rounding.

use std::path::PathBuf;

use candle_quant::quant::{self, QuantType};

const FIXTURES: &str = "tests/fixtures/quant";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(FIXTURES)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "missing: {} ({e}); run scripts/quant_ggml_reference.py (see its docstring)",
            path.display()
        )
    })
}

/// The rows and, for each, the name of the distribution it was drawn from.
struct Reference {
    n_per_row: usize,
    rows: Vec<Vec<f32>>,
    group_of_row: Vec<String>,
}

fn reference() -> Reference {
    let meta: serde_json::Value =
        serde_json::from_slice(&fixture("ggml_quantize.json")).expect("ggml_quantize.json");
    let n_per_row = meta["n_per_row"].as_u64().expect("n_per_row") as usize;
    let values: Vec<f32> = fixture("ggml_quantize.in.f32")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let rows: Vec<Vec<f32>> = values.chunks(n_per_row).map(<[f32]>::to_vec).collect();
    let mut group_of_row = Vec::new();
    for group in meta["groups"].as_array().expect("groups") {
        let name = group["name"].as_str().expect("group name");
        for _ in 0..group["rows"].as_u64().expect("group rows") {
            group_of_row.push(name.to_string());
        }
    }
    assert_eq!(group_of_row.len(), rows.len(), "ggml_quantize.json rows");
    Reference {
        n_per_row,
        rows,
        group_of_row,
    }
}

fn assert_quantizes_like_ggml(ty: QuantType) {
    let r = reference();
    let expected = fixture(&format!("ggml_quantize.{}", ty.name()));
    let row_bytes = ty.row_bytes(r.n_per_row).unwrap();
    assert_eq!(
        expected.len(),
        row_bytes * r.rows.len(),
        "{ty}: fixture length"
    );
    let block = ty.block_bytes();
    let mut differing = Vec::new();
    for (i, (row, want)) in r.rows.iter().zip(expected.chunks(row_bytes)).enumerate() {
        let got = quant::quantize(ty, row).unwrap();
        for (b, (g, w)) in got.chunks(block).zip(want.chunks(block)).enumerate() {
            if g != w {
                differing.push(format!("row {i} ({}) block {b}", r.group_of_row[i]));
            }
        }
    }
    let blocks = expected.len() / block;
    assert!(
        differing.is_empty(),
        "{ty}: {} of {blocks} blocks differ from ggml: {:#?}",
        differing.len(),
        &differing[..differing.len().min(10)]
    );
}

#[test]
fn q4_0_bytes_are_ggmls() {
    assert_quantizes_like_ggml(QuantType::Q4_0);
}

#[test]
fn q4_1_bytes_are_ggmls() {
    assert_quantizes_like_ggml(QuantType::Q4_1);
}

#[test]
fn q5_0_bytes_are_ggmls() {
    assert_quantizes_like_ggml(QuantType::Q5_0);
}

#[test]
fn q5_1_bytes_are_ggmls() {
    assert_quantizes_like_ggml(QuantType::Q5_1);
}

#[test]
fn q8_0_bytes_are_ggmls() {
    assert_quantizes_like_ggml(QuantType::Q8_0);
}

#[test]
fn q4_k_bytes_are_ggmls() {
    assert_quantizes_like_ggml(QuantType::Q4K);
}

#[test]
fn q5_k_bytes_are_ggmls() {
    assert_quantizes_like_ggml(QuantType::Q5K);
}

#[test]
fn q6_k_bytes_are_ggmls() {
    assert_quantizes_like_ggml(QuantType::Q6K);
}
