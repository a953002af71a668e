//! Every fast path against the scalar reference on random blocks.

use bytemuck::Zeroable;
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{DotFn, Isa, Kernel};
use crate::quant::{
    ActBlock, BlockFormat, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
    BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};

fn random_bytes<B: bytemuck::Pod + Zeroable>(rng: &mut StdRng, n: usize) -> Vec<B> {
    let mut blocks = vec![B::zeroed(); n];
    rng.fill(bytemuck::cast_slice_mut::<B, u8>(&mut blocks));
    blocks
}

/// The same random activation quants (in `-limit..=limit`, scale `d`) as Q8_0 blocks
/// and as Q8_1 blocks.
fn random_q8_0_and_q8_1(
    rng: &mut StdRng,
    n: usize,
    limit: i8,
    d: impl Fn(&mut StdRng) -> f32,
) -> (Vec<BlockQ8_0>, Vec<BlockQ8_1>) {
    (0..n)
        .map(|_| {
            let mut qs = [0i8; 32];
            qs.iter_mut()
                .for_each(|q| *q = rng.random_range(-limit..=limit));
            let d = f16::from_f32(d(rng));
            let sum = qs.iter().map(|&q| q as i32).sum::<i32>() as f32;
            let s = f16::from_f32(d.to_f32() * sum);
            (BlockQ8_0 { d, qs }, BlockQ8_1 { d, s, qs })
        })
        .unzip()
}

fn random_q8k(
    rng: &mut StdRng,
    n: usize,
    limit: i8,
    d: impl Fn(&mut StdRng) -> f32,
) -> Vec<BlockQ8K> {
    (0..n)
        .map(|_| {
            let mut qs = [0i8; 256];
            qs.iter_mut()
                .for_each(|q| *q = rng.random_range(-limit..=limit));
            let mut bsums = [0i16; 16];
            for (s, g) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
                *s = g.iter().map(|&q| q as i16).sum();
            }
            BlockQ8K {
                d: d(rng),
                qs,
                bsums,
            }
        })
        .collect()
}

/// The instruction set `HANZO_REQUIRE_ISA` names (`avx2`, `avx512`, `simd128`), which
/// CI sets where the machine has it: there a kernel test fails, rather than skips,
/// when it cannot run the kernels it must check.
fn required_isa() -> Option<Isa> {
    let name = std::env::var("HANZO_REQUIRE_ISA").ok()?;
    let isa = Isa::named(name.trim());
    assert!(
        isa.is_some(),
        "HANZO_REQUIRE_ISA={name:?} names no instruction set (avx2, avx512, simd128, scalar)"
    );
    isa
}

/// Whether the kernels of `isa` run here. Panics when they do not but
/// `HANZO_REQUIRE_ISA` requires them: the AVX-512 kernels require AVX2 too, which
/// their tests compare against.
fn runs_here(isa: Isa) -> bool {
    if isa.is_available() {
        return true;
    }
    if let Some(required) = required_isa() {
        let implied = required == isa || (required == Isa::Avx512Vnni && isa == Isa::Avx2);
        assert!(
            !implied,
            "HANZO_REQUIRE_ISA={required:?} but this machine cannot run the {isa:?} kernels"
        );
    }
    false
}

fn isas_under_test() -> Vec<Isa> {
    [Isa::Avx2, Isa::Avx512Vnni, Isa::Simd128]
        .into_iter()
        .filter(|&isa| runs_here(isa))
        .collect()
}

#[test]
fn the_required_instruction_set_runs_here() {
    if let Some(isa) = required_isa() {
        assert!(runs_here(isa));
    }
}

fn one(_: &mut StdRng) -> f32 {
    1.0
}

/// With every scale 1 (and integer offsets), each per-block term is an integer below
/// 2^24 (a Q8_1 block sum `s` is an f16 of an integer of magnitude <= 4064, which is
/// itself an integer), so f32 represents every partial sum exactly and any summation order gives the
/// same bits: the fast paths must equal the reference exactly.
fn assert_bit_exact<B: Kernel>(weights: &[B], acts: &[B::Act]) {
    let expected = B::dot_ref(weights, acts);
    for isa in isas_under_test() {
        let got = B::dot_fn(isa)(weights, acts);
        assert_eq!(
            got.to_bits(),
            expected.to_bits(),
            "{:?} {isa:?}: {got} vs {expected}",
            B::TYPE
        );
    }
}

fn set_f16(field: &mut f16, v: f32) {
    *field = f16::from_f32(v);
}

#[test]
fn fast_paths_equal_reference_bit_exactly_on_integer_scaled_blocks() {
    let mut rng = StdRng::seed_from_u64(1);
    for n_blocks in [1, 2, 7, 8] {
        // 8 blocks of 32: |partial sums| <= 8 * 32 * 128 * 127 < 2^24.
        let (acts0, acts1) = random_q8_0_and_q8_1(&mut rng, n_blocks, 127, one);
        let mut w: Vec<BlockQ4_0> = random_bytes(&mut rng, n_blocks);
        w.iter_mut().for_each(|b| set_f16(&mut b.d, 1.0));
        assert_bit_exact(&w, &acts0);
        let mut w: Vec<BlockQ5_0> = random_bytes(&mut rng, n_blocks);
        w.iter_mut().for_each(|b| set_f16(&mut b.d, 1.0));
        assert_bit_exact(&w, &acts0);
        let mut w: Vec<BlockQ8_0> = random_bytes(&mut rng, n_blocks);
        w.iter_mut().for_each(|b| set_f16(&mut b.d, 1.0));
        assert_bit_exact(&w, &acts0);
        let mut w: Vec<BlockQ4_1> = random_bytes(&mut rng, n_blocks);
        for b in &mut w {
            set_f16(&mut b.d, 1.0);
            set_f16(&mut b.m, rng.random_range(-8..=8) as f32);
        }
        assert_bit_exact(&w, &acts1);
        let mut w: Vec<BlockQ5_1> = random_bytes(&mut rng, n_blocks);
        for b in &mut w {
            set_f16(&mut b.d, 1.0);
            set_f16(&mut b.m, rng.random_range(-8..=8) as f32);
        }
        assert_bit_exact(&w, &acts1);
    }
    for _ in 0..20 {
        // One super-block, activations in -31..=31:
        // Q5_K: 256 * 31 * 31 * 63 < 2^24; Q6_K with |scale| <= 63: 256 * 32 * 31 * 63 < 2^24.
        let acts = random_q8k(&mut rng, 1, 31, one);
        let mut w: Vec<BlockQ4K> = random_bytes(&mut rng, 1);
        w.iter_mut().for_each(|b| {
            set_f16(&mut b.d, 1.0);
            set_f16(&mut b.dmin, 1.0);
        });
        assert_bit_exact(&w, &acts);
        let mut w: Vec<BlockQ5K> = random_bytes(&mut rng, 1);
        w.iter_mut().for_each(|b| {
            set_f16(&mut b.d, 1.0);
            set_f16(&mut b.dmin, 1.0);
        });
        assert_bit_exact(&w, &acts);
        let mut w: Vec<BlockQ6K> = random_bytes(&mut rng, 1);
        w.iter_mut().for_each(|b| {
            set_f16(&mut b.d, 1.0);
            b.scales
                .iter_mut()
                .for_each(|s| *s = rng.random_range(-63..=63));
        });
        assert_bit_exact(&w, &acts);
    }
}

/// Weights quantized from uniform data and full-range activations with real scales.
///
/// Tolerance: every per-block term carries at most 3 f32 roundings and the row sum at
/// most `n + 8` additions (8 SIMD lanes plus the horizontal sum), each with relative
/// error `eps = 2^-24`; with `S` = Σ over blocks of (max |ŵ| in the block + max offset)
/// · Σ|â|, which bounds the magnitude of every term and partial sum, the difference
/// between any two summation orders is at most `2 (n + 11) eps S`.
///
/// Against the exact f64 product of the dequantized blocks the reference also differs
/// by the Q8_1 block sums: `s = f16(d_f32 Σq)` is not `d_f16 Σq` (two f16 roundings,
/// each relative 2^-11, of a value at most Σ|â|(1 + 2^-11)), times the weight minimum
/// `|m| <= max|ŵ|` (the minimum is itself a block value, quantized to q = 0): at most
/// `2^-9 Σ_blocks max|ŵ| Σ|â|`, which is added for every format.
fn assert_close_on_quantized_data<B: Kernel>(rng: &mut StdRng, n_blocks: usize) {
    let n = n_blocks * B::ELEMS;
    let w_f: Vec<f32> = (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) * 0.3 + 0.05)
        .collect();
    let x_f: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let weights: Vec<B> = w_f.chunks_exact(B::ELEMS).map(B::quantize).collect();
    let acts: Vec<B::Act> = crate::quant::quantize_activations(&x_f);
    let mut w_hat = vec![0f32; n];
    weights
        .iter()
        .zip(w_hat.chunks_exact_mut(B::ELEMS))
        .for_each(|(b, d)| b.dequantize(d));
    let mut a_hat = vec![0f32; n];
    let a_elems = <B::Act as ActBlock>::ELEMS;
    acts.iter()
        .zip(a_hat.chunks_exact_mut(a_elems))
        .for_each(|(b, d)| b.dequantize(d));
    // Offsets (m, dmin·m) are at most the block's range plus one step, < 2 max|ŵ| + 1 here.
    let s: f64 = w_hat
        .chunks_exact(B::ELEMS)
        .zip(a_hat.chunks_exact(B::ELEMS))
        .map(|(w, a)| {
            let wmax = w.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
            (3.0 * wmax + 1.0) * a.iter().map(|&v| (v as f64).abs()).sum::<f64>()
        })
        .sum();
    let tol = 2.0 * (n_blocks as f64 + 11.0) * f32::EPSILON as f64 / 2.0 * s;
    let block_sum_rounding: f64 = w_hat
        .chunks_exact(B::ELEMS)
        .zip(a_hat.chunks_exact(B::ELEMS))
        .map(|(w, a)| {
            let wmax = w.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
            wmax * a.iter().map(|&v| (v as f64).abs()).sum::<f64>() / 512.0
        })
        .sum();
    let expected = B::dot_ref(&weights, &acts) as f64;
    let exact: f64 = w_hat
        .iter()
        .zip(&a_hat)
        .map(|(&w, &a)| w as f64 * a as f64)
        .sum();
    assert!(
        (expected - exact).abs() <= tol + block_sum_rounding,
        "{:?} reference {expected} vs exact {exact}",
        B::TYPE
    );
    for isa in isas_under_test() {
        let got = B::dot_fn(isa)(&weights, &acts) as f64;
        assert!(
            (got - expected).abs() <= tol,
            "{:?} {isa:?}: {got} vs {expected} (tol {tol})",
            B::TYPE
        );
    }
}

#[test]
fn fast_paths_match_reference_within_float_reordering_bound() {
    let mut rng = StdRng::seed_from_u64(2);
    for n_blocks in [1, 3, 16, 40] {
        assert_close_on_quantized_data::<BlockQ4_0>(&mut rng, n_blocks);
        assert_close_on_quantized_data::<BlockQ4_1>(&mut rng, n_blocks);
        assert_close_on_quantized_data::<BlockQ5_0>(&mut rng, n_blocks);
        assert_close_on_quantized_data::<BlockQ5_1>(&mut rng, n_blocks);
        assert_close_on_quantized_data::<BlockQ8_0>(&mut rng, n_blocks);
    }
    for n_blocks in [1, 2, 5] {
        assert_close_on_quantized_data::<BlockQ4K>(&mut rng, n_blocks);
        assert_close_on_quantized_data::<BlockQ5K>(&mut rng, n_blocks);
        assert_close_on_quantized_data::<BlockQ6K>(&mut rng, n_blocks);
    }
}

#[test]
fn q8_0_weights_holding_minus_128_are_exact() {
    // ggml never writes -128, but files from other tools may; |-128| must not wrap.
    let mut rng = StdRng::seed_from_u64(3);
    let (acts, _) = random_q8_0_and_q8_1(&mut rng, 4, 127, one);
    let mut w: Vec<BlockQ8_0> = random_bytes(&mut rng, 4);
    for b in &mut w {
        set_f16(&mut b.d, 1.0);
        b.qs[..8].iter_mut().for_each(|q| *q = -128);
    }
    assert_bit_exact(&w, &acts);
}

/// One row of `n_blocks` weight blocks quantized from uniform data, and four rows
/// of activation blocks.
fn weights_and_four_rows<B: Kernel>(
    rng: &mut StdRng,
    n_blocks: usize,
) -> (Vec<B>, Vec<Vec<B::Act>>) {
    let n = n_blocks * B::ELEMS;
    let w_f: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let weights = w_f.chunks_exact(B::ELEMS).map(B::quantize).collect();
    let rows = (0..4)
        .map(|_| {
            let x: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect();
            crate::quant::quantize_activations(&x)
        })
        .collect();
    (weights, rows)
}

fn assert_dot4_matches_dot<B: Kernel>(rng: &mut StdRng, n_blocks: usize) {
    let (weights, rows) = weights_and_four_rows::<B>(rng, n_blocks);
    for isa in isas_under_test() {
        let Some(dot4) = B::dot4_fn(isa) else {
            continue;
        };
        let got = dot4(&weights, [&rows[0], &rows[1], &rows[2], &rows[3]]);
        for (r, row) in rows.iter().enumerate() {
            let single = B::dot_fn(isa)(&weights, row);
            assert_eq!(
                got[r].to_bits(),
                single.to_bits(),
                "{:?} {isa:?} row {r}",
                B::TYPE
            );
        }
    }
}

#[test]
fn four_row_kernels_equal_the_single_row_kernel_bitwise() {
    let mut rng = StdRng::seed_from_u64(4);
    for n_blocks in [1, 2, 5, 18] {
        assert_dot4_matches_dot::<BlockQ4_0>(&mut rng, n_blocks);
        assert_dot4_matches_dot::<BlockQ4_1>(&mut rng, n_blocks);
        assert_dot4_matches_dot::<BlockQ5_0>(&mut rng, n_blocks);
        assert_dot4_matches_dot::<BlockQ5_1>(&mut rng, n_blocks);
        assert_dot4_matches_dot::<BlockQ8_0>(&mut rng, n_blocks);
    }
    for n_blocks in [1, 3] {
        assert_dot4_matches_dot::<BlockQ4K>(&mut rng, n_blocks);
        assert_dot4_matches_dot::<BlockQ5K>(&mut rng, n_blocks);
        assert_dot4_matches_dot::<BlockQ6K>(&mut rng, n_blocks);
    }
    // F16/BF16 "blocks" are single values: every length from one partial vector to
    // several pairs of full 16-lane vectors plus a partial one.
    for n in [1, 7, 8, 9, 16, 17, 31, 32, 33, 47, 576] {
        assert_dot4_matches_dot::<f16>(&mut rng, n);
        assert_dot4_matches_dot::<bf16>(&mut rng, n);
    }
}

/// The AVX-512 module forms each lane's 4-product integer sum with `vpdpbusd` where the
/// AVX2 module uses `maddubs` + `madd`; the lanes hold the same integers, so every
/// result, single-row and four-row, must be bitwise equal on real-scaled random data.
fn assert_avx512_equals_avx2<B: Kernel>(rng: &mut StdRng, n_blocks: usize) {
    if !runs_here(Isa::Avx512Vnni) {
        return;
    }
    let (weights, rows) = weights_and_four_rows::<B>(rng, n_blocks);
    let rows4 = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
    let four = |isa| B::dot4_fn(isa).map(|dot4| dot4(&weights, rows4));
    assert_eq!(
        four(Isa::Avx512Vnni).map(|r| r.map(f32::to_bits)),
        four(Isa::Avx2).map(|r| r.map(f32::to_bits)),
        "{:?} four-row",
        B::TYPE
    );
    for row in &rows {
        assert_eq!(
            B::dot_fn(Isa::Avx512Vnni)(&weights, row).to_bits(),
            B::dot_fn(Isa::Avx2)(&weights, row).to_bits(),
            "{:?} single-row",
            B::TYPE
        );
    }
}

#[test]
fn avx512_vnni_kernels_equal_the_avx2_kernels_bitwise() {
    let mut rng = StdRng::seed_from_u64(5);
    for n_blocks in [1, 2, 5, 20] {
        assert_avx512_equals_avx2::<BlockQ4_0>(&mut rng, n_blocks);
        assert_avx512_equals_avx2::<BlockQ4_1>(&mut rng, n_blocks);
        assert_avx512_equals_avx2::<BlockQ5_0>(&mut rng, n_blocks);
        assert_avx512_equals_avx2::<BlockQ5_1>(&mut rng, n_blocks);
        assert_avx512_equals_avx2::<BlockQ8_0>(&mut rng, n_blocks);
    }
    for n_blocks in [1, 3] {
        assert_avx512_equals_avx2::<BlockQ4K>(&mut rng, n_blocks);
        assert_avx512_equals_avx2::<BlockQ5K>(&mut rng, n_blocks);
        assert_avx512_equals_avx2::<BlockQ6K>(&mut rng, n_blocks);
    }
}

/// Runs `run` (a tile kernel) over all of `weights` × `acts` and over rows and tokens
/// that start past zero and end in partial groups (8 rows; 16, 8, 4, 1 tokens): every
/// output must be bitwise `reference`'s and nothing outside the tile may be written.
fn assert_tile_equals<B: Kernel>(
    weights: &[B],
    n_blocks: usize,
    acts: &[B::Act],
    reference: DotFn<B>,
    run: impl Fn(std::ops::Range<usize>, std::ops::Range<usize>, &mut [f32]),
) {
    let out_rows = weights.len() / n_blocks;
    let tokens = acts.len() / n_blocks;
    for (rows, token_range) in [
        (0..out_rows, 0..tokens),
        (out_rows.min(8)..out_rows, 2..tokens),
    ] {
        let mut out = vec![f32::NAN; tokens * out_rows];
        run(rows.clone(), token_range.clone(), &mut out);
        for i in 0..tokens {
            for r in 0..out_rows {
                let got = out[i * out_rows + r];
                if !rows.contains(&r) || !token_range.contains(&i) {
                    assert!(got.is_nan(), "{:?} wrote outside its tile", B::TYPE);
                    continue;
                }
                let want = reference(
                    &weights[r * n_blocks..(r + 1) * n_blocks],
                    &acts[i * n_blocks..(i + 1) * n_blocks],
                );
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{:?} token {i} row {r}",
                    B::TYPE
                );
            }
        }
    }
}

/// The [`super::ActAux`] kernels move the weight bias into the lanes' starting
/// values. Q8_0's lanes end on the integers of the plain kernel, so its tile kernel must
/// be bitwise equal to `dot_fn`'s, also for weights holding -128 (u = 0); the Q4_0 and
/// Q5_0 tile kernels (eight weight rows per vector) redo the scalar reference's
/// arithmetic, so they must be bitwise equal to `dot_ref`.
fn assert_aux_tile_equals<B: Kernel<Act = BlockQ8_0>>(
    isa: Isa,
    rng: &mut StdRng,
    n_blocks: usize,
    weights: Option<Vec<B>>,
    reference: DotFn<B>,
) {
    let Some(tile) = B::aux_tile(isa) else {
        return;
    };
    let bias = B::AUX_BIAS.expect("formats with aux kernels name their bias");
    let n = n_blocks * B::ELEMS;
    let weights = weights.unwrap_or_else(|| {
        let w_f: Vec<f32> = (0..21 * n)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        w_f.chunks_exact(B::ELEMS).map(B::quantize).collect()
    });
    let x: Vec<f32> = (0..31 * n)
        .map(|_| rng.random_range(-3.0f32..3.0))
        .collect();
    let acts: Vec<BlockQ8_0> = crate::quant::quantize_activations(&x);
    let aux: Vec<super::ActAux> = acts.iter().map(|a| super::ActAux::new(a, bias)).collect();
    let out_rows = weights.len() / n_blocks;
    assert_tile_equals(&weights, n_blocks, &acts, reference, |rows, tokens, out| {
        // SAFETY: out holds every token × out_rows values; acts and aux every token.
        unsafe {
            tile(
                &weights,
                n_blocks,
                rows,
                &acts,
                &aux,
                tokens,
                out.as_mut_ptr(),
                out_rows,
            )
        }
    });
}

#[test]
fn aux_kernels_equal_their_reference_bitwise() {
    for isa in isas_under_test() {
        let mut rng = StdRng::seed_from_u64(6);
        for n_blocks in [1, 2, 5, 20] {
            assert_aux_tile_equals::<BlockQ4_0>(isa, &mut rng, n_blocks, None, BlockQ4_0::dot_ref);
            assert_aux_tile_equals::<BlockQ5_0>(isa, &mut rng, n_blocks, None, BlockQ5_0::dot_ref);
            let plain = BlockQ8_0::dot_fn(isa);
            assert_aux_tile_equals::<BlockQ8_0>(isa, &mut rng, n_blocks, None, plain);
        }
        let mut w: Vec<BlockQ8_0> = random_bytes(&mut rng, 6);
        for b in &mut w {
            set_f16(&mut b.d, 0.01);
            b.qs[..8].iter_mut().for_each(|q| *q = -128);
        }
        let plain = BlockQ8_0::dot_fn(isa);
        assert_aux_tile_equals::<BlockQ8_0>(isa, &mut rng, 3, Some(w), plain);
    }
}

/// Every [`Kernel::tile`] kernel of `B` here against `dot_ref`, bitwise (see
/// [`assert_tile_equals`]).
fn assert_plain_tile_equals_reference<B: Kernel>(
    weights: Vec<B>,
    n_blocks: usize,
    acts: Vec<B::Act>,
) {
    let out_rows = weights.len() / n_blocks;
    for tile in isas_under_test().into_iter().filter_map(B::tile) {
        assert_tile_equals(
            &weights,
            n_blocks,
            &acts,
            B::dot_ref,
            |rows, tokens, out| {
                // SAFETY: out holds every token × out_rows values; acts every token.
                unsafe {
                    tile(
                        &weights,
                        n_blocks,
                        rows,
                        &acts,
                        tokens,
                        out.as_mut_ptr(),
                        out_rows,
                    )
                }
            },
        );
    }
}

/// The Q4_1 and Q5_1 tile kernels (eight weight rows per vector) redo the scalar
/// reference's arithmetic, `isum·(d·d_a) + m·s_a` per block: bitwise equal to
/// `dot_ref` on quantized real-valued rows (21 weight rows: two full groups of 8 and
/// a partial one; 31 tokens: every tile size and a remainder), including 18-block
/// rows (SmolLM2's 576 features), and on random quant bytes with real scales and mins.
#[test]
fn offset_format_tile_kernels_equal_the_reference_bitwise() {
    fn check<B: Kernel<Act = BlockQ8_1>>(rng: &mut StdRng, n_blocks: usize) {
        let n = n_blocks * B::ELEMS;
        let w_f: Vec<f32> = (0..21 * n)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let x: Vec<f32> = (0..31 * n)
            .map(|_| rng.random_range(-3.0f32..3.0))
            .collect();
        assert_plain_tile_equals_reference::<B>(
            w_f.chunks_exact(B::ELEMS).map(B::quantize).collect(),
            n_blocks,
            crate::quant::quantize_activations(&x),
        );
    }
    let mut rng = StdRng::seed_from_u64(10);
    for n_blocks in [1, 2, 5, 18] {
        check::<BlockQ4_1>(&mut rng, n_blocks);
        check::<BlockQ5_1>(&mut rng, n_blocks);
    }
    for n_blocks in [1, 3] {
        let (_, acts) = random_q8_0_and_q8_1(&mut rng, 29 * n_blocks, 127, |r| {
            r.random_range(0.001f32..0.1)
        });
        let mut w: Vec<BlockQ4_1> = random_bytes(&mut rng, 21 * n_blocks);
        for b in &mut w {
            set_f16(&mut b.d, rng.random_range(-0.1f32..0.1));
            set_f16(&mut b.m, rng.random_range(-0.1f32..0.1));
        }
        assert_plain_tile_equals_reference(w, n_blocks, acts.clone());
        let mut w: Vec<BlockQ5_1> = random_bytes(&mut rng, 21 * n_blocks);
        for b in &mut w {
            set_f16(&mut b.d, rng.random_range(-0.1f32..0.1));
            set_f16(&mut b.m, rng.random_range(-0.1f32..0.1));
        }
        assert_plain_tile_equals_reference(w, n_blocks, acts);
    }
}

/// The K-quant tile kernels (eight weight rows per vector) redo the scalar reference's
/// arithmetic: bitwise equal to `dot_ref`, on quantized real-valued rows and on random
/// bytes (every scale and min bit pattern, extreme activations).
#[test]
fn k_quant_tile_kernels_equal_the_reference_bitwise() {
    let check = assert_plain_tile_equals_reference::<BlockQ4K>;
    let mut rng = StdRng::seed_from_u64(9);
    for n_blocks in [1, 3] {
        let n = n_blocks * 256;
        let w_f: Vec<f32> = (0..13 * n)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let acts = random_q8k(&mut rng, 29 * n_blocks, 127, one);
        check(
            w_f.chunks_exact(256).map(BlockQ4K::quantize).collect(),
            n_blocks,
            acts,
        );
        let mut w: Vec<BlockQ4K> = random_bytes(&mut rng, 21 * n_blocks);
        for b in &mut w {
            set_f16(&mut b.d, rng.random_range(-0.1f32..0.1));
            set_f16(&mut b.dmin, rng.random_range(-0.1f32..0.1));
        }
        let acts = random_q8k(&mut rng, 29 * n_blocks, 127, |r| {
            r.random_range(0.001f32..0.1)
        });
        check(w, n_blocks, acts);
    }
}

/// Lengths that end on every kind of tail: within the first vector, on a vector edge
/// and past pairs of full vectors, for both 8 (AVX2) and 16 (AVX-512) lanes.
const HALF_PRECISION_LENGTHS: [usize; 13] = [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 576];

/// `w` and `a` as the weights of `B` (F16 or BF16) and f32 activations.
fn half_precision_row<B: Kernel<Act = f32>>(w: &[f32]) -> Vec<B> {
    w.iter().map(|&v| B::quantize(&[v])).collect()
}

/// Integers in -16..=16 are exact in f16, bf16 and f32, and with `n <= 576` every
/// product and partial sum is an integer of magnitude <= 576 · 256 < 2^24, so any
/// summation order, with or without FMA, gives the exact result: the fast paths must
/// equal the reference bitwise.
fn assert_half_precision_bit_exact<B: Kernel<Act = f32>>(rng: &mut StdRng) {
    for n in HALF_PRECISION_LENGTHS {
        let int = |rng: &mut StdRng| rng.random_range(-16i32..=16) as f32;
        let w: Vec<B> = half_precision_row(&(0..n).map(|_| int(rng)).collect::<Vec<_>>());
        let rows: Vec<Vec<f32>> = (0..4).map(|_| (0..n).map(|_| int(rng)).collect()).collect();
        let expected: Vec<f32> = rows.iter().map(|a| B::dot_ref(&w, a)).collect();
        for isa in isas_under_test() {
            for (a, want) in rows.iter().zip(&expected) {
                let got = B::dot_fn(isa)(&w, a);
                assert_eq!(got.to_bits(), want.to_bits(), "{:?} {isa:?} n={n}", B::TYPE);
            }
            if let Some(dot4) = B::dot4_fn(isa) {
                let got = dot4(&w, [&rows[0], &rows[1], &rows[2], &rows[3]]);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&expected), "{:?} {isa:?} n={n}", B::TYPE);
            }
        }
    }
}

#[test]
fn half_precision_fast_paths_equal_reference_bit_exactly_on_integer_values() {
    let mut rng = StdRng::seed_from_u64(10);
    assert_half_precision_bit_exact::<f16>(&mut rng);
    assert_half_precision_bit_exact::<bf16>(&mut rng);
}

/// Real-valued weights (magnitudes spread over six decades, both signs) and
/// activations.
///
/// Tolerance: widening F16/BF16 to f32 is exact, so both sides compute the same `n`
/// products `p_i` and differ only in rounding. The reference rounds each product and
/// each of its `n - 1` sums (a chain of at most `n` roundings per term); a fast path
/// rounds once per FMA, `ceil(n / (2 L))` per lane for `L <= 16` lanes, plus one to
/// join its two accumulators and `log2 L <= 4` in the horizontal sum: at most `n + 5`.
/// With `u = 2^-24` and `γ_k = k u / (1 - k u)`, each is within `γ_(n+5) Σ|p_i|` of
/// the exact sum, so of each other within `2 γ_(n+5) Σ|p_i|` (Higham, Accuracy and
/// Stability of Numerical Algorithms, §3.1); the reference is also checked against
/// the exact (f64) sum with `γ_n Σ|p_i|`.
fn assert_half_precision_close<B: Kernel<Act = f32>>(rng: &mut StdRng) {
    let gamma = |k: usize| {
        let ku = k as f64 * (f32::EPSILON as f64 / 2.0);
        ku / (1.0 - ku)
    };
    for n in HALF_PRECISION_LENGTHS {
        let w_f: Vec<f32> = (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-4..=1)))
            .collect();
        let w: Vec<B> = half_precision_row(&w_f);
        let a: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect();
        let mut w_hat = vec![0f32; n];
        w.iter()
            .zip(w_hat.chunks_exact_mut(1))
            .for_each(|(b, d)| b.dequantize(d));
        let products = w_hat.iter().zip(&a).map(|(&w, &a)| w as f64 * a as f64);
        let (exact, abs) = products.fold((0f64, 0f64), |(s, m), p| (s + p, m + p.abs()));
        let expected = B::dot_ref(&w, &a) as f64;
        assert!(
            (expected - exact).abs() <= gamma(n) * abs,
            "{:?} n={n}: reference {expected} vs exact {exact}",
            B::TYPE
        );
        let tol = 2.0 * gamma(n + 5) * abs;
        for isa in isas_under_test() {
            let got = B::dot_fn(isa)(&w, &a) as f64;
            assert!(
                (got - expected).abs() <= tol,
                "{:?} {isa:?} n={n}: {got} vs {expected} (tol {tol})",
                B::TYPE
            );
        }
    }
}

#[test]
fn half_precision_fast_paths_match_reference_within_the_f32_dot_product_bound() {
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..20 {
        assert_half_precision_close::<f16>(&mut rng);
        assert_half_precision_close::<bf16>(&mut rng);
    }
}

#[test]
fn instruction_sets_are_named_as_hanzo_isa_spells_them() {
    assert_eq!(Isa::named("avx2"), Some(Isa::Avx2));
    assert_eq!(Isa::named("AVX512"), Some(Isa::Avx512Vnni));
    assert_eq!(Isa::named("scalar"), Some(Isa::Scalar));
    assert_eq!(Isa::named("simd128"), Some(Isa::Simd128));
    assert_eq!(Isa::named("neon"), None);
}
