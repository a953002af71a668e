//! `QLinear` on CPU: indexing against the reference dot product, error bounds against an
//! f32 matmul of the dequantized weights, thread-count independence, zero-copy slices and
//! typed errors.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_quant::kernels::{set_num_threads, Isa, Kernel};
use candle_quant::quant::{
    self, quantize_activations, BlockFormat, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0,
    BlockQ5_1, BlockQ6K, BlockQ8_0,
};
use candle_quant::{QLinear, QuantError, QuantType, WeightBytes};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

fn forward_vec(layer: &QLinear, x: &[f32], m: usize) -> Vec<f32> {
    let x = Tensor::from_vec(x.to_vec(), (m, layer.in_features()), &Device::Cpu).unwrap();
    layer
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The scalar path must equal, bit for bit, the reference dot product of each weight row
/// with each quantized activation row: this pins down row/column indexing and tiling.
fn assert_scalar_forward_is_reference_dot<B: BlockFormat>(out_f: usize, in_f: usize, m: usize) {
    let mut rng = StdRng::seed_from_u64(in_f as u64 * 31 + m as u64);
    let w = random_vec(&mut rng, out_f * in_f, 0.5);
    let x = random_vec(&mut rng, m * in_f, 2.0);
    let bytes = quant::quantize(B::TYPE, &w).unwrap();
    let layer = QLinear::from_bytes(B::TYPE, out_f, in_f, bytes.clone())
        .unwrap()
        .with_isa(Isa::Scalar);
    let y = forward_vec(&layer, &x, m);
    let blocks: &[B] = bytemuck::cast_slice(&bytes);
    let per_row = in_f / B::ELEMS;
    for i in 0..m {
        let acts: Vec<B::Act> = quantize_activations(&x[i * in_f..(i + 1) * in_f]);
        for r in 0..out_f {
            let expected = B::dot_ref(&blocks[r * per_row..(r + 1) * per_row], &acts);
            assert_eq!(
                y[i * out_f + r].to_bits(),
                expected.to_bits(),
                "{:?} row {r} input {i}",
                B::TYPE
            );
        }
    }
}

#[test]
fn scalar_forward_is_the_reference_dot_for_every_format() {
    for m in [1, 3, 40] {
        assert_scalar_forward_is_reference_dot::<BlockQ4_0>(37, 64, m);
        assert_scalar_forward_is_reference_dot::<BlockQ4_1>(37, 96, m);
        assert_scalar_forward_is_reference_dot::<BlockQ5_0>(19, 64, m);
        assert_scalar_forward_is_reference_dot::<BlockQ5_1>(19, 64, m);
        assert_scalar_forward_is_reference_dot::<BlockQ8_0>(70, 32, m);
        assert_scalar_forward_is_reference_dot::<BlockQ4K>(17, 512, m);
        assert_scalar_forward_is_reference_dot::<BlockQ5K>(17, 256, m);
        assert_scalar_forward_is_reference_dot::<BlockQ6K>(17, 256, m);
        assert_scalar_forward_is_reference_dot::<f16>(37, 19, m);
        assert_scalar_forward_is_reference_dot::<bf16>(37, 19, m);
    }
}

/// Every output of an F16/BF16 layer, on every instruction set here, must be bitwise
/// the set's own dot product of that weight row with that input row: the matmul's
/// split into thread tasks, 16-row activation tiles and 4-row kernels (with partial
/// tiles and groups of every size here) may not change a value. How far those dot
/// products are from the scalar reference is bounded in src/kernels/tests.rs.
fn assert_half_precision_forward_is_the_isa_dot<B: Kernel<Act = f32>>() {
    let mut rng = StdRng::seed_from_u64(41);
    for (out_f, in_f) in [(1, 1), (7, 33), (33, 64), (20, 7)] {
        let w = random_vec(&mut rng, out_f * in_f, 0.5);
        let bytes = quant::quantize(B::TYPE, &w).unwrap();
        let rows: &[B] = bytemuck::cast_slice(&bytes);
        for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Simd128] {
            let layer = QLinear::from_bytes(B::TYPE, out_f, in_f, bytes.clone())
                .unwrap()
                .with_isa(isa);
            for m in [1, 3, 4, 5, 17, 37] {
                let x = random_vec(&mut rng, m * in_f, 2.0);
                let y = forward_vec(&layer, &x, m);
                for i in 0..m {
                    for r in 0..out_f {
                        let want = B::dot_fn(isa)(
                            &rows[r * in_f..(r + 1) * in_f],
                            &x[i * in_f..(i + 1) * in_f],
                        );
                        assert_eq!(
                            y[i * out_f + r].to_bits(),
                            want.to_bits(),
                            "{:?} {isa:?} {out_f}x{in_f} m={m}: row {r} input {i}",
                            B::TYPE
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn half_precision_forward_is_the_isa_dot_at_every_row_and_input() {
    assert_half_precision_forward_is_the_isa_dot::<f16>();
    assert_half_precision_forward_is_the_isa_dot::<bf16>();
}

/// How far 8-bit activation quantization can move `ŵ · x` (f64), per activation block
/// of `act_block` values with `a = max|x_block|`:
/// - rounding each value to the f32 grid `d = a / 127` moves it by at most `a / 254`;
/// - the 32-value blocks store `d` as f16 (relative error <= 2^-11), moving each of the
///   |q| <= 127 steps by `a · 2^-11` in total;
/// - Q8_1's block sum `s = f16(d Σq)` adds another 2^-11 of `|d Σq| <= 32 a`, times the
///   weight minimum `|m| <= max|ŵ|` (the minimum is a block value, quantized to q = 0),
///   and the scale term sees `|ŵ - m| <= |ŵ| + max|ŵ|`;
///
/// so `Σ_i |ŵ_i| · a (1/254 + 2^-11) + Σ_blocks 64 · max|ŵ| · a · 2^-11`. Q8_K keeps an
/// f32 scale and is covered by the first term.
fn activation_rounding_bound(wr: &[f32], x: &[f32], act_block: usize) -> f64 {
    wr.chunks(act_block)
        .zip(x.chunks(act_block))
        .map(|(w, xb)| {
            let a = xb.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
            let wmax = w.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
            let wsum: f64 = w.iter().map(|&v| (v as f64).abs()).sum();
            wsum * a * (1.0 / 254.0 + 1.0 / 2048.0)
                + (w.len() / 32) as f64 * 64.0 * wmax * a / 2048.0
        })
        .sum()
}

/// Forward (fastest ISA) against f64 `x · ŴT` with Ŵ the dequantized weight.
///
/// The only approximation besides float rounding is the 8-bit activation quantization,
/// bounded by [`activation_rounding_bound`], plus 1e-4 relative slack for the f32
/// arithmetic (bounded in src/kernels/tests.rs to far below this).
fn assert_forward_within_activation_rounding(
    ty: QuantType,
    w: &[f32],
    out_f: usize,
    in_f: usize,
    x: &[f32],
) {
    let m = x.len() / in_f;
    let bytes = quant::quantize(ty, w).unwrap();
    let w_hat = quant::dequantize(ty, &bytes, w.len()).unwrap();
    let layer = QLinear::from_bytes(ty, out_f, in_f, bytes).unwrap();
    let y = forward_vec(&layer, x, m);
    let act_block = if ty.block_elems() == 256 { 256 } else { 32 };
    for i in 0..m {
        let xi = &x[i * in_f..(i + 1) * in_f];
        for r in 0..out_f {
            let wr = &w_hat[r * in_f..(r + 1) * in_f];
            let exact: f64 = wr.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
            let bound: f64 = activation_rounding_bound(wr, xi, act_block)
                + 1e-4
                    * wr.iter()
                        .zip(xi)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum::<f64>();
            let got = y[i * out_f + r] as f64;
            assert!(
                (got - exact).abs() <= bound,
                "{ty} row {r} input {i}: {got} vs {exact} (bound {bound})"
            );
        }
    }
}

#[test]
fn forward_matches_dequantized_matmul_within_activation_rounding() {
    let mut rng = StdRng::seed_from_u64(7);
    for ty in [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
    ] {
        let (out_f, in_f) = (24, 512);
        let w = random_vec(&mut rng, out_f * in_f, 0.2);
        for m in [1, 5] {
            let x = random_vec(&mut rng, m * in_f, 3.0);
            assert_forward_within_activation_rounding(ty, &w, out_f, in_f, &x);
        }
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn forward_on_real_model_rows_matches_gguf_py_dequantization() {
    let cases = [
        ("real_smollm2_q4_1", QuantType::Q4_1),
        ("real_smollm2_q8_0", QuantType::Q8_0),
        ("real_gemma3_q5_0", QuantType::Q5_0),
        ("real_gemma3_q4_k", QuantType::Q4K),
        ("real_gemma3_q6_k", QuantType::Q6K),
    ];
    let mut rng = StdRng::seed_from_u64(11);
    for (case, ty) in cases {
        let bytes = fixture(&format!("{case}.q"));
        let w_hat: Vec<f32> = fixture(&format!("{case}.deq.f32"))
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let out_f = 3;
        let in_f = w_hat.len() / out_f;
        let layer = QLinear::from_bytes(ty, out_f, in_f, bytes).unwrap();
        let x = random_vec(&mut rng, in_f, 1.0);
        let y = forward_vec(&layer, &x, 1);
        let act_block = if ty.block_elems() == 256 { 256 } else { 32 };
        for r in 0..out_f {
            let wr = &w_hat[r * in_f..(r + 1) * in_f];
            let exact: f64 = wr.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            // Same bound as above: activation rounding plus f32 slack.
            let bound: f64 = activation_rounding_bound(wr, &x, act_block)
                + 1e-4
                    * wr.iter()
                        .zip(&x)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum::<f64>();
            assert!(
                (y[r] as f64 - exact).abs() <= bound,
                "{case} row {r}: {} vs {exact}",
                y[r]
            );
        }
    }
}

#[test]
fn results_are_bitwise_independent_of_thread_count() {
    let mut rng = StdRng::seed_from_u64(5);
    let (out_f, in_f) = (300, 256);
    let w = random_vec(&mut rng, out_f * in_f, 0.3);
    for ty in [QuantType::Q4_1, QuantType::Q4K, QuantType::F16] {
        let layer = QLinear::from_bytes(ty, out_f, in_f, quant::quantize(ty, &w).unwrap()).unwrap();
        for m in [1, 9] {
            let x = random_vec(&mut rng, m * in_f, 1.0);
            let mut outputs = Vec::new();
            for threads in [1, 2, 3, 5] {
                set_num_threads(threads).unwrap();
                outputs.push(forward_vec(&layer, &x, m));
            }
            for out in &outputs[1..] {
                let same = out
                    .iter()
                    .zip(&outputs[0])
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{ty} m={m}: output changed with the thread count");
            }
        }
    }
}

#[test]
fn leading_dimensions_are_preserved() {
    let w = vec![0.25f32; 8 * 64];
    let layer = QLinear::from_bytes(
        QuantType::Q8_0,
        8,
        64,
        quant::quantize(QuantType::Q8_0, &w).unwrap(),
    )
    .unwrap();
    let x = Tensor::ones((2, 3, 64), DType::F32, &Device::Cpu).unwrap();
    let y = layer.forward(&x).unwrap();
    assert_eq!(y.dims(), &[2, 3, 8]);
    // 64 * 0.25 * 1 = 16; the Q8_0 scale 0.25/127 is stored as f16 (relative error
    // <= 2^-11), so each output is within 16 * 2^-11 < 0.01 of 16.
    let values: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    assert!(
        values.iter().all(|&v| (v - 16.0).abs() < 0.01),
        "{values:?}"
    );
    // A transposed (non-contiguous) input gives the same result as its contiguous copy.
    let xt = Tensor::ones((64, 4), DType::F32, &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    assert_eq!(layer.forward(&xt).unwrap().dims(), &[4, 8]);
}

#[test]
fn weights_are_borrowed_from_a_shared_buffer_even_when_unaligned() {
    let mut rng = StdRng::seed_from_u64(9);
    let w = random_vec(&mut rng, 4 * 64, 1.0);
    let q = quant::quantize(QuantType::Q4_0, &w).unwrap();
    let x = random_vec(&mut rng, 64, 1.0);
    let expected = forward_vec(
        &QLinear::from_bytes(QuantType::Q4_0, 4, 64, q.clone()).unwrap(),
        &x,
        1,
    );
    for offset in [0usize, 1, 3, 8] {
        let mut file = vec![0xAAu8; offset];
        file.extend_from_slice(&q);
        file.extend_from_slice(&[0x55; 5]);
        let file = Arc::new(file);
        let slice = WeightBytes::new(Arc::clone(&file), offset..offset + q.len()).unwrap();
        let layer = QLinear::from_bytes(QuantType::Q4_0, 4, 64, slice).unwrap();
        assert_eq!(forward_vec(&layer, &x, 1), expected, "offset {offset}");
    }
    let file = Arc::new(vec![0u8; 10]);
    assert!(matches!(
        WeightBytes::new(file, 4..11),
        Err(QuantError::ByteRange {
            start: 4,
            end: 11,
            len: 10
        })
    ));
}

/// An F16/BF16 layer keeps the caller's buffer (one more owner of the `Arc`) instead of
/// a widened copy, unless the bytes start at an odd address, where the kernels cannot
/// read 16-bit values and the layer keeps an aligned copy; both compute the same.
#[test]
fn half_precision_weights_stay_in_the_callers_buffer() {
    let mut rng = StdRng::seed_from_u64(43);
    let (out_f, in_f) = (6, 40);
    let w = random_vec(&mut rng, out_f * in_f, 1.0);
    let x = random_vec(&mut rng, 2 * in_f, 1.0);
    for ty in [QuantType::F16, QuantType::BF16] {
        let bytes = quant::quantize(ty, &w).unwrap();
        let expected = forward_vec(
            &QLinear::from_bytes(ty, out_f, in_f, bytes.clone()).unwrap(),
            &x,
            2,
        );
        for (offset, borrowed) in [(0usize, true), (2, true), (1, false)] {
            let mut file = vec![0u8; offset];
            file.extend_from_slice(&bytes);
            // The Vec's allocation is at least 2-aligned, so `offset` decides.
            let file = Arc::new(file);
            let slice = WeightBytes::new(Arc::clone(&file), offset..offset + bytes.len()).unwrap();
            let layer = QLinear::from_bytes(ty, out_f, in_f, slice).unwrap();
            assert_eq!(
                Arc::strong_count(&file),
                if borrowed { 2 } else { 1 },
                "{ty} at offset {offset}"
            );
            assert_eq!(forward_vec(&layer, &x, 2), expected, "{ty} offset {offset}");
        }
    }
}

#[test]
fn float_weights_use_the_same_type() {
    let mut rng = StdRng::seed_from_u64(13);
    let (out_f, in_f) = (5, 7);
    let w = random_vec(&mut rng, out_f * in_f, 1.0);
    let x = random_vec(&mut rng, 2 * in_f, 1.0);
    for ty in [QuantType::F32, QuantType::F16, QuantType::BF16] {
        let bytes = quant::quantize(ty, &w).unwrap();
        let w_hat = quant::dequantize(ty, &bytes, w.len()).unwrap();
        let layer = QLinear::from_bytes(ty, out_f, in_f, bytes).unwrap();
        let y = forward_vec(&layer, &x, 2);
        assert_eq!(
            layer
                .dequantize()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            w_hat
        );
        for i in 0..2 {
            for r in 0..out_f {
                let exact: f64 = (0..in_f)
                    .map(|k| w_hat[r * in_f + k] as f64 * x[i * in_f + k] as f64)
                    .sum();
                // f32 dot of 7 terms of magnitude <= 1: error <= 7 * 2^-24 * 7 < 1e-5.
                assert!((y[i * out_f + r] as f64 - exact).abs() < 1e-5, "{ty}");
            }
        }
    }
}

#[test]
fn dequantize_returns_the_weight_matrix() {
    let w: Vec<f32> = (0..2 * 256).map(|i| (i as f32 * 0.37).sin()).collect();
    let bytes = quant::quantize(QuantType::Q6K, &w).unwrap();
    let layer = QLinear::from_bytes(QuantType::Q6K, 2, 256, bytes.clone()).unwrap();
    let t = layer.dequantize().unwrap();
    assert_eq!(t.dims(), &[2, 256]);
    assert_eq!(
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        quant::dequantize(QuantType::Q6K, &bytes, 512).unwrap()
    );
}

#[test]
fn bad_inputs_are_typed_errors() {
    let bytes = vec![0u8; 2 * 18];
    let err = QLinear::from_bytes(QuantType::Q4_0, 2, 32, bytes[..35].to_vec()).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::ByteLength {
                expected: 36,
                got: 35,
                ..
            }
        ),
        "{err}"
    );
    let err = QLinear::from_bytes(QuantType::Q4_0, 1, 48, vec![0u8; 27]).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::RowNotBlockMultiple {
                row_len: 48,
                block_elems: 32,
                ..
            }
        ),
        "{err}"
    );
    let err = QLinear::from_bytes(QuantType::Q4_0, 0, 32, Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::ZeroDimension {
                what: "out_features",
                ..
            }
        ),
        "{err}"
    );

    let layer = QLinear::from_bytes(QuantType::Q4_0, 2, 32, bytes).unwrap();
    let err = layer
        .forward(&Tensor::zeros((1, 31), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::InputShape {
                expected_in: 32,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("[1, 31]"), "{err}");
    let err = layer
        .forward(&Tensor::zeros((1, 32), DType::F16, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::InputDType {
                got: DType::F16,
                ..
            }
        ),
        "{err}"
    );
    let err = layer
        .forward(&Tensor::zeros((), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(matches!(err, QuantError::InputShape { .. }), "{err}");
    assert!(matches!(
        set_num_threads(0),
        Err(QuantError::ThreadCount { got: 0 })
    ));
}

#[test]
fn each_output_row_is_bitwise_independent_of_the_rest_of_the_batch() {
    let mut rng = StdRng::seed_from_u64(17);
    let (out_f, in_f) = (33, 256);
    let w = random_vec(&mut rng, out_f * in_f, 0.4);
    for ty in ALL_KERNEL_TYPES {
        let layer = QLinear::from_bytes(ty, out_f, in_f, quant::quantize(ty, &w).unwrap()).unwrap();
        // 37 rows: full 4-row groups, a remainder, and more than one activation tile.
        let m = 37;
        let x = random_vec(&mut rng, m * in_f, 1.5);
        let batched = forward_vec(&layer, &x, m);
        for i in 0..m {
            let single = forward_vec(&layer, &x[i * in_f..(i + 1) * in_f], 1);
            let same = single
                .iter()
                .zip(&batched[i * out_f..(i + 1) * out_f])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{ty}: row {i} differs between batch and single-row forward"
            );
        }
    }
}

#[test]
fn layers_can_be_shared_across_threads() {
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    assert_send_sync_clone::<QLinear>();
    assert_send_sync_clone::<WeightBytes>();
}

#[test]
fn float_weight_layers_reject_non_f32_inputs_with_a_typed_error() {
    let dense = QLinear::from_bytes(QuantType::F32, 1, 2, vec![0u8; 8]).unwrap();
    let x = Tensor::zeros((1, 2), DType::BF16, &Device::Cpu).unwrap();
    let err = dense.forward(&x).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::InputDType {
                got: DType::BF16,
                ..
            }
        ),
        "{err}"
    );
}

/// Upstream candle on the same bytes approximates the same product: its activation
/// blocks carry f16 scales (relative error <= 2^-11 on top of the 8-bit rounding), so
/// the bound gets an extra 1e-3 of Σ|ŵ·x|.
#[test]
fn upstream_fallback_computes_the_same_product() {
    let mut rng = StdRng::seed_from_u64(23);
    let (out_f, in_f) = (8, 512);
    let w = random_vec(&mut rng, out_f * in_f, 0.3);
    let x = random_vec(&mut rng, 2 * in_f, 1.0);
    for ty in [
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q8_0,
        QuantType::Q4K,
        QuantType::Q6K,
    ] {
        let bytes = quant::quantize(ty, &w).unwrap();
        let w_hat = quant::dequantize(ty, &bytes, w.len()).unwrap();
        let layer = QLinear::upstream_from_bytes(ty, out_f, in_f, bytes, &Device::Cpu).unwrap();
        let y = forward_vec(&layer, &x, 2);
        for i in 0..2 {
            let xi = &x[i * in_f..(i + 1) * in_f];
            for r in 0..out_f {
                let wr = &w_hat[r * in_f..(r + 1) * in_f];
                let exact: f64 = wr.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
                let abs: f64 = wr
                    .iter()
                    .zip(xi)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                // Per-element activation rounding <= max|x| / 254 <= 1/254 here.
                let rounding: f64 = wr.iter().map(|&a| (a as f64).abs() / 254.0).sum();
                let got = y[i * out_f + r] as f64;
                assert!(
                    (got - exact).abs() <= rounding + 1e-3 * abs,
                    "{ty} row {r}: {got} vs {exact}"
                );
            }
        }
    }
}

/// Every type the crate's kernels multiply.
const ALL_KERNEL_TYPES: [QuantType; 10] = [
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q8_0,
    QuantType::Q4K,
    QuantType::Q5K,
    QuantType::Q6K,
    QuantType::F16,
    QuantType::BF16,
];

#[test]
fn forward_slice_equals_forward_bitwise() {
    let mut rng = StdRng::seed_from_u64(29);
    let (out_f, in_f) = (21, 512);
    let w = random_vec(&mut rng, out_f * in_f, 0.4);
    for ty in ALL_KERNEL_TYPES.into_iter().chain([QuantType::F32]) {
        let layer = QLinear::from_bytes(ty, out_f, in_f, quant::quantize(ty, &w).unwrap()).unwrap();
        for m in [1, 6] {
            let x = random_vec(&mut rng, m * in_f, 1.0);
            let mut y = vec![0f32; m * out_f];
            layer.forward_slice(&x, m, &mut y).unwrap();
            let expected = forward_vec(&layer, &x, m);
            assert!(
                y.iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty} m={m}"
            );
        }
    }
}

/// A q/k/v-like group with formats needing all three activation kinds (as in Q4_K_M
/// files, where v is Q6_K) plus a float layer: every output must be bitwise the layer's
/// own result, for any thread count.
#[test]
fn forward_group_equals_each_layers_forward_bitwise() {
    let mut rng = StdRng::seed_from_u64(31);
    let in_f = 256;
    let layers: Vec<QLinear> = [
        (QuantType::Q4K, 40),
        (QuantType::Q6K, 16),
        (QuantType::Q4_1, 33),
        (QuantType::Q8_0, 7),
        (QuantType::Q5_0, 18),
        (QuantType::F16, 5),
    ]
    .into_iter()
    .map(|(ty, out_f)| {
        let w = random_vec(&mut rng, out_f * in_f, 0.3);
        QLinear::from_bytes(ty, out_f, in_f, quant::quantize(ty, &w).unwrap()).unwrap()
    })
    .collect();
    let refs: Vec<&QLinear> = layers.iter().collect();
    for m in [1, 9] {
        let x = random_vec(&mut rng, m * in_f, 1.5);
        let expected: Vec<Vec<f32>> = layers.iter().map(|l| forward_vec(l, &x, m)).collect();
        for threads in [1, 3] {
            set_num_threads(threads).unwrap();
            let mut outs: Vec<Vec<f32>> = layers
                .iter()
                .map(|l| vec![f32::NAN; m * l.out_features()])
                .collect();
            let mut out_refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            QLinear::forward_group(&refs, &x, m, &mut out_refs).unwrap();
            for (k, (got, want)) in outs.iter().zip(&expected).enumerate() {
                assert!(
                    got.iter()
                        .zip(want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "layer {k} ({}) m={m} threads={threads}",
                    layers[k].quant_type()
                );
            }
        }
    }
}

#[test]
fn slice_apis_reject_bad_lengths_with_typed_errors() {
    let w = vec![0.5f32; 4 * 64];
    let a = QLinear::from_bytes(
        QuantType::Q8_0,
        4,
        64,
        quant::quantize(QuantType::Q8_0, &w).unwrap(),
    )
    .unwrap();
    let b = QLinear::from_bytes(
        QuantType::Q8_0,
        8,
        32,
        quant::quantize(QuantType::Q8_0, &w).unwrap(),
    )
    .unwrap();
    let x = vec![1f32; 64];
    let mut y = vec![0f32; 4];
    let err = a.forward_slice(&x[..63], 1, &mut y).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::SliceLength {
                expected: 64,
                got: 63,
                ..
            }
        ),
        "{err}"
    );
    let err = a.forward_slice(&x, 1, &mut y[..3]).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::SliceLength {
                expected: 4,
                got: 3,
                ..
            }
        ),
        "{err}"
    );
    let mut z = vec![0f32; 8];
    let err = QLinear::forward_group(&[&a, &b], &x, 1, &mut [&mut y, &mut z]).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::GroupInFeatures {
                index: 1,
                expected: 64,
                got: 32,
                ..
            }
        ),
        "{err}"
    );
    let err = QLinear::forward_group(&[&a, &a], &x, 1, &mut [&mut y]).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::SliceLength {
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{err}"
    );
}

/// `to_f32` is the exact reference of a quantized layer: its weights are the
/// dequantized values, and its products are f32 dot products of those with
/// the unquantized input (here against an f64 sum: within f32 summation
/// error, ~in_features * 2^-24 relative to the sum of |terms|).
#[test]
fn to_f32_multiplies_the_dequantized_weights_without_quantizing_the_input() {
    let (out_f, in_f, m) = (16, 256, 3);
    let mut rng = StdRng::seed_from_u64(7);
    let w = random_vec(&mut rng, out_f * in_f, 0.5);
    let x = random_vec(&mut rng, m * in_f, 2.0);
    for ty in [QuantType::Q4_1, QuantType::Q4K, QuantType::Q8_0] {
        let layer = QLinear::from_bytes(ty, out_f, in_f, quant::quantize(ty, &w).unwrap()).unwrap();
        let exact = layer.to_f32().unwrap();
        assert_eq!(exact.quant_type(), QuantType::F32);
        let weights: Vec<f32> = layer
            .dequantize()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let same: Vec<f32> = exact
            .dequantize()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(weights, same, "{ty:?}");
        let mut y = vec![0f32; m * out_f];
        exact.forward_slice(&x, m, &mut y).unwrap();
        for r in 0..m {
            for o in 0..out_f {
                let terms =
                    (0..in_f).map(|i| weights[o * in_f + i] as f64 * x[r * in_f + i] as f64);
                let (sum, abs): (f64, f64) =
                    terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                let got = y[r * out_f + o] as f64;
                assert!(
                    (got - sum).abs() <= abs * in_f as f64 * 2f64.powi(-24),
                    "{ty:?} row {r} out {o}: {got} vs {sum}"
                );
            }
        }
    }
}
