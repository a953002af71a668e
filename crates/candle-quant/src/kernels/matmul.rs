//! The threaded matmul driver: quantize activations once, then split output rows.

use super::{Kernel, ThreadPool};
use crate::kernels::Isa;
use crate::quant::{quantize_activations, ActBlock};

/// Output rows per task when one activation row is multiplied (decode): small enough to
/// balance 2–16 threads on a 576-row layer, large enough to amortise task claiming.
const DECODE_ROWS_PER_TASK: usize = 16;
/// Activation rows processed against a resident group of weight rows (prefill), sized
/// so the group's weights stay in L1 while the activations stream from L2.
const PREFILL_ACT_TILE: usize = 32;

/// Raw output pointer shared by tasks that write disjoint elements.
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint indices (one output row range each) and the pool joins
// all of them before the borrow of `out` ends.
unsafe impl Sync for SharedOut {}

/// `out = x · wᵀ` for quantized `w`.
///
/// weights: [out_features, in_features / B::ELEMS] blocks, row-major;
/// x: [m, in_features] f32; out: [m, out_features] f32.
///
/// Every output element is computed on one thread by the `isa` dot product (or its
/// four-row variant, which is bitwise equal), so the result is bitwise independent of
/// the pool's thread count and of the other rows in the batch.
///
/// The caller guarantees the shapes (`QLinear` validates them at its boundary).
pub fn matmul<B: Kernel>(
    weights: &[B],
    out_features: usize,
    in_features: usize,
    x: &[f32],
    out: &mut [f32],
    isa: Isa,
    pool: &ThreadPool,
) {
    let blocks_per_row = in_features / B::ELEMS;
    let acts_per_row = in_features / <B::Act as ActBlock>::ELEMS;
    let m = x.len() / in_features;
    debug_assert_eq!(weights.len(), out_features * blocks_per_row);
    debug_assert_eq!(out.len(), m * out_features);
    let acts = quantize_rows::<B::Act>(x, in_features, pool);
    let dot = B::dot_fn(isa);
    let dot4 = B::dot4_fn(isa);
    let rows_per_task = if m == 1 {
        DECODE_ROWS_PER_TASK
    } else {
        (out_features / (4 * pool.num_threads())).clamp(4, 64)
    };
    let n_tasks = out_features.div_ceil(rows_per_task);
    let out_ptr = SharedOut(out.as_mut_ptr());
    let out_ptr = &out_ptr;
    pool.run(n_tasks, &|task| {
        let rows = task * rows_per_task..((task + 1) * rows_per_task).min(out_features);
        for tile_start in (0..m).step_by(PREFILL_ACT_TILE) {
            let tile = tile_start..(tile_start + PREFILL_ACT_TILE).min(m);
            for r in rows.clone() {
                let w_row = &weights[r * blocks_per_row..(r + 1) * blocks_per_row];
                let a_row = |i: usize| &acts[i * acts_per_row..(i + 1) * acts_per_row];
                // SAFETY: (i, r) is in bounds and only this task owns output row r.
                let store = |i: usize, v: f32| unsafe { *out_ptr.0.add(i * out_features + r) = v };
                let mut i = tile.start;
                if let Some(dot4) = dot4 {
                    while i + 4 <= tile.end {
                        let y = dot4(w_row, [a_row(i), a_row(i + 1), a_row(i + 2), a_row(i + 3)]);
                        y.into_iter().enumerate().for_each(|(k, v)| store(i + k, v));
                        i += 4;
                    }
                }
                for i in i..tile.end {
                    store(i, dot(w_row, a_row(i)));
                }
            }
        }
    });
}

/// Quantizes every row of x: [m, in_features]; rows in parallel when there are many.
fn quantize_rows<A: ActBlock>(x: &[f32], in_features: usize, pool: &ThreadPool) -> Vec<A> {
    let m = x.len() / in_features;
    if m < 8 {
        return quantize_activations(x);
    }
    let per_row = in_features / A::ELEMS;
    let mut acts = vec![<A as bytemuck::Zeroable>::zeroed(); m * per_row];
    let acts_ptr = SharedActs(acts.as_mut_ptr());
    let acts_ptr = &acts_ptr;
    pool.run(m, &|i| {
        let row = &x[i * in_features..(i + 1) * in_features];
        for (j, chunk) in row.chunks_exact(A::ELEMS).enumerate() {
            // SAFETY: row i owns blocks i*per_row..(i+1)*per_row.
            unsafe { *acts_ptr.0.add(i * per_row + j) = A::quantize(chunk) };
        }
    });
    acts
}

struct SharedActs<A>(*mut A);
// SAFETY: tasks write disjoint rows and are joined before `acts` is used.
unsafe impl<A: Send> Sync for SharedActs<A> {}
