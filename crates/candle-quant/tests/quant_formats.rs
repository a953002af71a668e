//! Block formats against gguf-py (scripts/quant_fixtures.py): quantization must produce
//! the same bytes, dequantization the same f32 values, including blocks taken from the
//! real SmolLM2-135M Q4_1 and Gemma-3-270M Q4_K_M files.

use std::path::PathBuf;

use candle_quant::quant::{self, QuantType};

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

/// Exact equality (tolerance 0): our dequantizers perform the same f32 operations in the
/// same order as gguf-py's (`d * q`, `d * q + m`, `(d * sc) * q - dmin * m`), so any
/// difference is a layout bug, not rounding.
fn assert_dequantizes_like_gguf_py(case: &str, ty: QuantType) {
    let bytes = fixture(&format!("{case}.q"));
    let expected = f32s(&fixture(&format!("{case}.deq.f32")));
    let got = quant::dequantize(ty, &bytes, expected.len()).unwrap();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            g.to_bits(),
            e.to_bits(),
            "{case}: value {i}: got {g}, gguf-py {e}"
        );
    }
}

/// gguf-py's quantizers for these formats follow ggml's reference C rounding
/// (`trunc(x/d + 8.5)`, `roundf`), so the bytes must be identical.
fn assert_quantizes_like_gguf_py(case: &str, ty: QuantType) {
    let input = f32s(&fixture(&format!("{case}.in.f32")));
    let expected = fixture(&format!("{case}.q"));
    let got = quant::quantize(ty, &input).unwrap();
    assert_eq!(got.len(), expected.len(), "{case}: byte length");
    let block = ty.block_bytes();
    for (b, (g, e)) in got.chunks(block).zip(expected.chunks(block)).enumerate() {
        assert_eq!(g, e, "{case}: block {b} differs from gguf-py");
    }
    assert_dequantizes_like_gguf_py(case, ty);
}

#[test]
fn q4_0_quantize_matches_gguf_py() {
    assert_quantizes_like_gguf_py("q4_0_quantize", QuantType::Q4_0);
}

#[test]
fn q4_1_quantize_matches_gguf_py() {
    assert_quantizes_like_gguf_py("q4_1_quantize", QuantType::Q4_1);
}

#[test]
fn q5_0_quantize_matches_gguf_py() {
    assert_quantizes_like_gguf_py("q5_0_quantize", QuantType::Q5_0);
}

#[test]
fn q5_1_quantize_matches_gguf_py() {
    assert_quantizes_like_gguf_py("q5_1_quantize", QuantType::Q5_1);
}

#[test]
fn q8_0_quantize_matches_gguf_py() {
    assert_quantizes_like_gguf_py("q8_0_quantize", QuantType::Q8_0);
}

#[test]
fn k_quant_random_blocks_dequantize_like_gguf_py() {
    assert_dequantizes_like_gguf_py("q4_k_random_blocks", QuantType::Q4K);
    assert_dequantizes_like_gguf_py("q5_k_random_blocks", QuantType::Q5K);
    assert_dequantizes_like_gguf_py("q6_k_random_blocks", QuantType::Q6K);
}

#[test]
fn smollm2_q4_1_file_rows_dequantize_like_gguf_py() {
    assert_dequantizes_like_gguf_py("real_smollm2_q4_1", QuantType::Q4_1);
    assert_dequantizes_like_gguf_py("real_smollm2_q8_0", QuantType::Q8_0);
}

#[test]
fn gemma3_q4_k_m_file_rows_dequantize_like_gguf_py() {
    assert_dequantizes_like_gguf_py("real_gemma3_q5_0", QuantType::Q5_0);
    assert_dequantizes_like_gguf_py("real_gemma3_q4_k", QuantType::Q4K);
    assert_dequantizes_like_gguf_py("real_gemma3_q6_k", QuantType::Q6K);
    assert_dequantizes_like_gguf_py("real_gemma3_q8_0", QuantType::Q8_0);
}

#[test]
fn block_sizes_are_ggmls() {
    let expected = [
        (QuantType::Q4_0, 32, 18),
        (QuantType::Q4_1, 32, 20),
        (QuantType::Q5_0, 32, 22),
        (QuantType::Q5_1, 32, 24),
        (QuantType::Q8_0, 32, 34),
        (QuantType::Q4K, 256, 144),
        (QuantType::Q5K, 256, 176),
        (QuantType::Q6K, 256, 210),
    ];
    for (ty, elems, bytes) in expected {
        assert_eq!((ty.block_elems(), ty.block_bytes()), (elems, bytes), "{ty}");
        assert_eq!(QuantType::from_ggml_id(ty.ggml_id()), Some(ty));
    }
}

#[test]
fn wrong_lengths_are_typed_errors() {
    let err = quant::quantize(QuantType::Q4K, &[0.0; 300]).unwrap_err();
    assert!(matches!(
        err,
        quant::QuantError::RowNotBlockMultiple {
            row_len: 300,
            block_elems: 256,
            ..
        }
    ));
    let err = quant::dequantize(QuantType::Q8_0, &[0u8; 33], 32).unwrap_err();
    assert!(matches!(
        err,
        quant::QuantError::ByteLength {
            expected: 34,
            got: 33,
            ..
        }
    ));
    assert!(err.to_string().contains("34") && err.to_string().contains("33"));
}
