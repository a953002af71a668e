//! Activation blocks byte-identical to llama.cpp's x86 CPU backend, against blocks from
//! scripts/quant_activation_fixtures.py (a numpy transcription of ggml's algorithm,
//! cross-checked there byte for byte against the shipped libggml-cpu).

use std::path::PathBuf;

use candle_quant::quant::{quantize_activations, ActBlock, BlockQ8K, BlockQ8_0, BlockQ8_1};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn input() -> Vec<f32> {
    fixture("activations.in.f32")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Compares block by block so a failure names the first differing block.
fn assert_blocks_equal<A: ActBlock + std::fmt::Debug>(case: &str) {
    let x = input();
    let ours: Vec<A> = quantize_activations(&x);
    let expected = fixture(case);
    let size = std::mem::size_of::<A>();
    assert_eq!(ours.len() * size, expected.len(), "{case}: byte length");
    for (i, (block, want)) in ours.iter().zip(expected.chunks_exact(size)).enumerate() {
        assert_eq!(
            bytemuck::bytes_of(block),
            want,
            "{case}: block {i} differs: ours {block:?}"
        );
    }
}

#[test]
fn q8_0_activations_are_llama_cpp_x86_blocks() {
    assert_blocks_equal::<BlockQ8_0>("activations.q8_0");
}

#[test]
fn q8_1_activations_are_llama_cpp_x86_blocks() {
    assert_blocks_equal::<BlockQ8_1>("activations.q8_1");
}

#[test]
fn q8_k_activations_are_llama_cpp_x86_blocks() {
    assert_blocks_equal::<BlockQ8K>("activations.q8_k");
}

#[test]
fn ties_round_half_to_even_unlike_the_weight_quantizer() {
    // max|x| = 127 makes the multiplier exactly 1: 2.5 -> 2 and -3.5 -> -4 (to even),
    // where ggml's reference (used for Q8_0 *weights*) rounds away from zero: 3 and -4.
    let mut x = [0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -3.5;
    let act = <BlockQ8_0 as ActBlock>::quantize(&x);
    assert_eq!(&act.qs[..3], &[127, 2, -4]);
    let weight = <BlockQ8_0 as candle_quant::quant::BlockFormat>::quantize(&x);
    assert_eq!(&weight.qs[..3], &[127, 3, -4]);
}
