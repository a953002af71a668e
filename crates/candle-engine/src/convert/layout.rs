//! The llama tensor layout: which tensors a decoder of a given config has,
//! with which shapes, and the query/key row order GGUF llama files use.

use crate::config::DecoderConfig;
use crate::weights::{GlobalTensor, LayerTensor, TensorName};

/// The decoder's tensors with their row-major shapes, in llama.cpp's
/// order: embedding, layer by layer, final norm, output.
pub(super) fn expected_tensors(
    c: &DecoderConfig,
    has_output: bool,
) -> Vec<(TensorName, Vec<usize>)> {
    let (h, ffn) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    let mut list = vec![(
        TensorName::Global(GlobalTensor::TokenEmbedding),
        vec![c.vocab_size, h],
    )];
    for i in 0..c.num_layers {
        list.extend([
            (TensorName::Layer(i, LayerTensor::AttentionNorm), vec![h]),
            (TensorName::Layer(i, LayerTensor::Query), vec![q, h]),
            (TensorName::Layer(i, LayerTensor::Key), vec![kv, h]),
            (TensorName::Layer(i, LayerTensor::Value), vec![kv, h]),
            (
                TensorName::Layer(i, LayerTensor::AttentionOutput),
                vec![h, q],
            ),
            (TensorName::Layer(i, LayerTensor::FfnNorm), vec![h]),
            (TensorName::Layer(i, LayerTensor::FfnGate), vec![ffn, h]),
            (TensorName::Layer(i, LayerTensor::FfnUp), vec![ffn, h]),
            (TensorName::Layer(i, LayerTensor::FfnDown), vec![h, ffn]),
        ]);
    }
    list.push((TensorName::Global(GlobalTensor::OutputNorm), vec![h]));
    if has_output && !c.tie_word_embeddings {
        list.push((
            TensorName::Global(GlobalTensor::Output),
            vec![c.vocab_size, h],
        ));
    }
    list
}

/// Reorders the rows of each head from rotate-half pairing `(i, i + d/2)`
/// to adjacent pairing `(2i, 2i + 1)`, as llama.cpp's converter does.
///
/// w: [heads * head_dim, cols]
pub fn interleave_rope_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    permute_rope_rows(w, heads, cols, true)
}

/// Inverse of [`interleave_rope_rows`].
///
/// w: [heads * head_dim, cols]
pub fn deinterleave_rope_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    permute_rope_rows(w, heads, cols, false)
}

fn permute_rope_rows(w: &[f32], heads: usize, cols: usize, interleave: bool) -> Vec<f32> {
    let head_dim = w.len() / (heads * cols).max(1);
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let rotate_half_row = h * head_dim + j * half + i;
                let adjacent_row = h * head_dim + 2 * i + j;
                let (from, to) = if interleave {
                    (rotate_half_row, adjacent_row)
                } else {
                    (adjacent_row, rotate_half_row)
                };
                out[to * cols..(to + 1) * cols].copy_from_slice(&w[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_row_permutation_pairs_half_rotations_and_inverts() {
        // One head of dim 8, one column: rotate-half pairs rows (0,4),
        // (1,5), (2,6), (3,7); after the permutation they are adjacent.
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let p = interleave_rope_rows(&w, 1, 1);
        assert_eq!(p, [0., 4., 1., 5., 2., 6., 3., 7.]);
        let two_heads: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let back = deinterleave_rope_rows(&interleave_rope_rows(&two_heads, 2, 2), 2, 2);
        assert_eq!(back, two_heads);
    }
}
