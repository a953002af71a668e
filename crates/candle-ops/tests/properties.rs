//! Property tests on random shapes: broadcasting and the shape operations
//! against facts that hold for every shape.

use candle_core::{Device, Tensor};
use proptest::prelude::*;

fn iota(dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    Tensor::arange(0f32, n as f32, &Device::Cpu)
        .unwrap()
        .reshape(dims)
        .unwrap()
}

/// A shape of rank 1..=4 with dims 1..=5, and a shape broadcastable to it
/// (each dim kept or set to 1, leading dims possibly dropped).
fn shape_and_broadcastable() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..=5, 1..=4).prop_flat_map(|dims| {
        let rank = dims.len();
        (
            Just(dims.clone()),
            prop::collection::vec(any::<bool>(), rank),
            0..rank,
        )
            .prop_map(|(dims, ones, drop)| {
                let small: Vec<usize> = dims
                    .iter()
                    .zip(ones)
                    .map(|(&d, one)| if one { 1 } else { d })
                    .collect();
                (dims, small[drop..].to_vec())
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn broadcast_add_matches_elementwise_definition((big, small) in shape_and_broadcastable()) {
        let a = iota(&big);
        let b = iota(&small);
        let sum = candle_ops::add(&a, &b).unwrap();
        prop_assert_eq!(sum.dims(), big.as_slice());
        // Reference: index b with the broadcasting rule (size-1 dims repeat).
        let a_vals = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b_vals = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = sum.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let offset = big.len() - small.len();
        for (flat, &g) in got.iter().enumerate() {
            let mut rem = flat;
            let mut idx = vec![0; big.len()];
            for d in (0..big.len()).rev() {
                idx[d] = rem % big[d];
                rem /= big[d];
            }
            let mut b_flat = 0;
            for (d, &n) in small.iter().enumerate() {
                let i = if n == 1 { 0 } else { idx[d + offset] };
                b_flat = b_flat * n + i;
            }
            prop_assert_eq!(g, a_vals[flat] + b_vals[b_flat]);
        }
        // Broadcasting is symmetric.
        let swapped = candle_ops::add(&b, &a).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        prop_assert_eq!(swapped, got);
    }

    #[test]
    fn chunk_then_cat_is_identity(dims in prop::collection::vec(1usize..=6, 1..=3), chunks in 1usize..=7, dim_seed in 0usize..3) {
        let dim = dim_seed % dims.len();
        let x = iota(&dims);
        let parts = candle_ops::chunk(&x, chunks, dim).unwrap();
        let size = dims[dim];
        let step = size.div_ceil(chunks);
        prop_assert_eq!(parts.len(), size.div_ceil(step));
        prop_assert!(parts.iter().all(|p| p.dims()[dim] <= step));
        let refs: Vec<&Tensor> = parts.iter().collect();
        let back = candle_ops::cat(&refs, dim).unwrap();
        prop_assert_eq!(back.flatten_all().unwrap().to_vec1::<f32>().unwrap(), x.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn stack_then_index_select_recovers_each_input(dims in prop::collection::vec(1usize..=4, 1..=3), n in 1usize..=4, dim_seed in 0usize..4) {
        let dim = dim_seed % (dims.len() + 1);
        let inputs: Vec<Tensor> = (0..n).map(|i| (iota(&dims) + i as f64 * 100.0).unwrap()).collect();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let stacked = candle_ops::stack(&refs, dim).unwrap();
        prop_assert_eq!(stacked.dims()[dim], n);
        for (i, input) in inputs.iter().enumerate() {
            let picked = candle_ops::narrow(&stacked, dim, i, 1).unwrap();
            let picked = candle_ops::squeeze(&picked, dim).unwrap();
            prop_assert_eq!(picked.flatten_all().unwrap().to_vec1::<f32>().unwrap(), input.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }

    #[test]
    fn transpose_twice_and_reshape_round_trip(dims in prop::collection::vec(1usize..=5, 2..=4), a in 0usize..4, b in 0usize..4) {
        let (a, b) = (a % dims.len(), b % dims.len());
        let x = iota(&dims);
        let tt = candle_ops::transpose(&candle_ops::transpose(&x, a, b).unwrap(), a, b).unwrap();
        prop_assert_eq!(tt.flatten_all().unwrap().to_vec1::<f32>().unwrap(), x.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let flat = candle_ops::reshape(&x, &[x.elem_count()]).unwrap();
        let back = candle_ops::reshape(&flat, &dims).unwrap();
        prop_assert_eq!(back.dims(), dims.as_slice());
        let un = candle_ops::unsqueeze(&x, a).unwrap();
        let squeezed = candle_ops::squeeze(&un, a).unwrap();
        prop_assert_eq!(squeezed.dims(), dims.as_slice());
    }

    #[test]
    fn attention_matches_the_materialised_formula(heads_kv in 1usize..=2, group in 1usize..=2, q_len in 1usize..=20, kv_extra in 0usize..=80, d in 1usize..=9) {
        // Tiling must not change the result: compare with softmax(q kᵀ s) v
        // computed densely in f64 on random shapes around the tile sizes,
        // masked by `causal_mask` (what the other devices use). Whether that
        // alignment is right is PyTorch's verdict: the conformance case
        // `scaled_dot_product_attention/causal_kv_cache`.
        let kv_len = q_len + kv_extra;
        let heads = heads_kv * group;
        let q = Tensor::randn(0f64, 1., (1, heads, q_len, d), &Device::Cpu).unwrap();
        let k = Tensor::randn(0f64, 1., (1, heads_kv, kv_len, d), &Device::Cpu).unwrap();
        let v = Tensor::randn(0f64, 1., (1, heads_kv, kv_len, d), &Device::Cpu).unwrap();
        let scale = 1.0 / (d as f64).sqrt();
        let got = candle_ops::scaled_dot_product_attention_causal(&q, &k, &v, scale).unwrap();
        let k_full = k.unsqueeze(2).unwrap().broadcast_as((1, heads_kv, group, kv_len, d)).unwrap().reshape((1, heads, kv_len, d)).unwrap();
        let v_full = v.unsqueeze(2).unwrap().broadcast_as((1, heads_kv, group, kv_len, d)).unwrap().reshape((1, heads, kv_len, d)).unwrap();
        let scores = (q.matmul(&k_full.t().unwrap().contiguous().unwrap()).unwrap() * scale).unwrap();
        let mask = candle_ops::causal_mask(q_len, kv_len, &Device::Cpu).unwrap();
        let neg = Tensor::full(f64::NEG_INFINITY, scores.shape(), &Device::Cpu).unwrap();
        let scores = mask.broadcast_as(scores.shape()).unwrap().where_cond(&scores, &neg).unwrap();
        let weights = candle_ops::softmax(&scores, 3).unwrap();
        let expected = weights.matmul(&v_full.contiguous().unwrap()).unwrap();
        let diff = (got - expected).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
        // f64 with a different summation order: a few hundred ulps at most.
        prop_assert!(diff < 1e-12, "max abs diff {diff}");
    }
}
