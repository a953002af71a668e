//! The threaded matmul driver: quantize activations once, then split output rows.
//!
//! A group of layers sharing one input (q/k/v, gate/up) runs as one job: one activation
//! quantization per activation format and one pool dispatch for all of their rows.
//! F16 and BF16 weights take the f32 input itself as their activations.

use std::cell::Cell;
use std::ops::Range;

use half::{bf16, f16};

use super::{ActAux, Kernel, ThreadPool};
use crate::kernels::Isa;
use crate::quant::{
    ActBlock, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K,
    BlockQ8_0, BlockQ8_1, QuantType,
};

/// Decode tasks cover whole multiples of this many output rows: 16 f32 outputs fill
/// one cache line, so two threads never write the same line.
const DECODE_ROW_ALIGN: usize = 16;
/// Activation rows processed against each weight row of a task in turn (prefill):
/// the tile's activation blocks are read once per weight row and should stay in L1.
/// 32 rows of a 640-wide layer are 22 KiB, 45 KiB with their `ActAux`; 16 made the
/// aux kernels 10% faster and left the others unchanged.
const PREFILL_ACT_TILE: usize = 16;

/// Raw output pointer shared by tasks that write disjoint elements.
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint indices (one output row range each) and the pool joins
// all of them before the borrow of the output ends.
unsafe impl Sync for SharedOut {}

/// Activation blocks of one input, per format, reused from call to call on a thread.
#[derive(Default)]
struct Activations {
    q8_0: Vec<BlockQ8_0>,
    q8_1: Vec<BlockQ8_1>,
    q8_k: Vec<BlockQ8K>,
    /// [`ActAux`] of `q8_0` per weight bias in use, for the kernels that read it.
    aux: Vec<(i32, Vec<ActAux>)>,
}

impl Activations {
    fn aux(&self, bias: Option<i32>) -> Option<&[ActAux]> {
        let bias = bias?;
        self.aux
            .iter()
            .find(|(b, _)| *b == bias)
            .map(|(_, aux)| &aux[..])
    }
}

/// An activation format and where a matmul finds it: its slot in [`Activations`], or
/// the input `x` itself for f32.
trait StoredAct: ActBlock {
    fn slot<'a>(acts: &'a Activations, x: &'a [f32]) -> &'a [Self];
}

macro_rules! stored_act {
    ($ty:ty, $field:ident) => {
        impl StoredAct for $ty {
            fn slot<'a>(acts: &'a Activations, _: &'a [f32]) -> &'a [Self] {
                &acts.$field
            }
        }
    };
}
stored_act!(BlockQ8_0, q8_0);
stored_act!(BlockQ8_1, q8_1);
stored_act!(BlockQ8K, q8_k);

impl StoredAct for f32 {
    fn slot<'a>(_: &'a Activations, x: &'a [f32]) -> &'a [Self] {
        x
    }
}

thread_local! {
    /// Taken (not borrowed) for the duration of a call, so a nested call on the same
    /// thread simply allocates its own.
    static SCRATCH: Cell<Activations> = Cell::new(Activations::default());
}

/// A layer's weight blocks viewed as their block type.
#[derive(Clone, Copy)]
pub(crate) enum WeightBlocks<'a> {
    Q4_0(&'a [BlockQ4_0]),
    Q4_1(&'a [BlockQ4_1]),
    Q5_0(&'a [BlockQ5_0]),
    Q5_1(&'a [BlockQ5_1]),
    Q8_0(&'a [BlockQ8_0]),
    Q4K(&'a [BlockQ4K]),
    Q5K(&'a [BlockQ5K]),
    Q6K(&'a [BlockQ6K]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

macro_rules! with_blocks {
    ($w:expr, $blocks:ident => $body:expr) => {
        match $w {
            WeightBlocks::Q4_0($blocks) => $body,
            WeightBlocks::Q4_1($blocks) => $body,
            WeightBlocks::Q5_0($blocks) => $body,
            WeightBlocks::Q5_1($blocks) => $body,
            WeightBlocks::Q8_0($blocks) => $body,
            WeightBlocks::Q4K($blocks) => $body,
            WeightBlocks::Q5K($blocks) => $body,
            WeightBlocks::Q6K($blocks) => $body,
            WeightBlocks::F16($blocks) => $body,
            WeightBlocks::BF16($blocks) => $body,
        }
    };
}

impl<'a> WeightBlocks<'a> {
    /// The [`ActAux`] bias of this format's kernels for `isa` and `m` activation
    /// rows, when they are the ones to use.
    ///
    /// Single-row Q8_0 keeps the plain kernel: it streams from memory (the tied
    /// 262144×640 output layer of Gemma-3) and the aux kernel, with less arithmetic
    /// but a third input stream, measured 7% slower there (its aux kernel gives the
    /// plain kernel's bits, so batches still agree with single rows). Q4_0/Q5_0 use
    /// their rows-in-lanes kernels for every row count: those give `dot_ref`'s bits,
    /// which no plain kernel does.
    fn aux_bias(&self, isa: Isa, m: usize) -> Option<i32> {
        fn of<B: Kernel>(_: &[B], isa: Isa) -> Option<i32> {
            B::aux_tile(isa).and(B::AUX_BIAS)
        }
        if m == 1 && matches!(self, WeightBlocks::Q8_0(_)) {
            return None;
        }
        with_blocks!(*self, w => of(w, isa))
    }

    /// `bytes` as blocks of `ty`; `None` for F32 or when the length or alignment does
    /// not fit the block type.
    pub(crate) fn new(ty: QuantType, bytes: &'a [u8]) -> Option<WeightBlocks<'a>> {
        use crate::quant::cast_blocks;
        Some(match ty {
            QuantType::Q4_0 => WeightBlocks::Q4_0(cast_blocks(bytes)?),
            QuantType::Q4_1 => WeightBlocks::Q4_1(cast_blocks(bytes)?),
            QuantType::Q5_0 => WeightBlocks::Q5_0(cast_blocks(bytes)?),
            QuantType::Q5_1 => WeightBlocks::Q5_1(cast_blocks(bytes)?),
            QuantType::Q8_0 => WeightBlocks::Q8_0(cast_blocks(bytes)?),
            QuantType::Q4K => WeightBlocks::Q4K(cast_blocks(bytes)?),
            QuantType::Q5K => WeightBlocks::Q5K(cast_blocks(bytes)?),
            QuantType::Q6K => WeightBlocks::Q6K(cast_blocks(bytes)?),
            QuantType::F16 => WeightBlocks::F16(cast_blocks(bytes)?),
            QuantType::BF16 => WeightBlocks::BF16(cast_blocks(bytes)?),
            QuantType::F32 => return None,
        })
    }
}

/// One layer of a grouped matmul: its weights and where its output goes.
pub(crate) struct GroupMember<'a> {
    pub weights: WeightBlocks<'a>,
    pub out_features: usize,
    pub isa: Isa,
    /// [m, out_features]
    pub out: &'a mut [f32],
}

/// `out = x · wᵀ` for every member's `w` (block format, F16 or BF16), with one
/// x: [m, in_features]:
/// x is quantized once per activation format and the pool is dispatched once.
///
/// Each member's weights are [out_features, in_features / B::ELEMS] blocks, row-major,
/// and its `out` is [m, out_features]. Every output element is computed on one thread
/// by the member's `isa` dot product (or its four-row variant, which is bitwise equal),
/// so the result is bitwise independent of the pool's thread count, of the other rows
/// in the batch and of the other members of the group.
///
/// The caller guarantees the shapes (`QLinear` validates them at its boundary).
pub(crate) fn matmul_group(
    members: &mut [GroupMember<'_>],
    in_features: usize,
    x: &[f32],
    pool: &ThreadPool,
) {
    let m = x.len() / in_features;
    let mut acts = SCRATCH.with(Cell::take);
    let needs = |pred: fn(&WeightBlocks) -> bool| members.iter().any(|l| pred(&l.weights));
    if needs(|w| {
        matches!(
            w,
            WeightBlocks::Q4_0(_) | WeightBlocks::Q5_0(_) | WeightBlocks::Q8_0(_)
        )
    }) {
        quantize_rows(&mut acts.q8_0, x, in_features, pool);
    }
    if needs(|w| matches!(w, WeightBlocks::Q4_1(_) | WeightBlocks::Q5_1(_))) {
        quantize_rows(&mut acts.q8_1, x, in_features, pool);
    }
    if needs(|w| {
        matches!(
            w,
            WeightBlocks::Q4K(_) | WeightBlocks::Q5K(_) | WeightBlocks::Q6K(_)
        )
    }) {
        quantize_rows(&mut acts.q8_k, x, in_features, pool);
    }
    let mut biases: Vec<i32> = members
        .iter()
        .filter_map(|l| l.weights.aux_bias(l.isa, m))
        .collect();
    biases.sort_unstable();
    biases.dedup();
    let mut spare = std::mem::take(&mut acts.aux);
    acts.aux = biases
        .into_iter()
        .map(|bias| {
            let mut aux = spare.pop().map(|(_, v)| v).unwrap_or_default();
            build_aux(&mut aux, &acts.q8_0, bias, m, pool);
            (bias, aux)
        })
        .collect();
    // (first task, rows per task) of each member, then the total.
    let mut first_task = Vec::with_capacity(members.len());
    let mut n_tasks = 0;
    for member in members.iter() {
        let per = rows_per_task(member.out_features, m, pool);
        first_task.push((n_tasks, per));
        n_tasks += member.out_features.div_ceil(per);
    }
    let targets: Vec<(WeightBlocks, usize, Isa, SharedOut)> = members
        .iter_mut()
        .map(|l| {
            (
                l.weights,
                l.out_features,
                l.isa,
                SharedOut(l.out.as_mut_ptr()),
            )
        })
        .collect();
    let acts_ref = &acts;
    pool.run(n_tasks, &|task| {
        let k = first_task.partition_point(|&(first, _)| first <= task) - 1;
        let (first, per) = first_task[k];
        let (weights, out_features, isa, ref out) = targets[k];
        let local = task - first;
        let rows = local * per..((local + 1) * per).min(out_features);
        with_blocks!(weights, w => compute_rows(
            w,
            in_features,
            StoredAct::slot(acts_ref, x),
            acts_ref.aux(weights.aux_bias(isa, m)),
            m,
            rows,
            out,
            out_features,
            isa,
        ));
    });
    SCRATCH.with(|s| s.set(acts));
}

fn rows_per_task(out_features: usize, m: usize, pool: &ThreadPool) -> usize {
    if m == 1 {
        // One contiguous slice of the weights per thread: the hardware prefetchers
        // follow one long stream per core, where interleaved small tasks break the
        // streams every few KiB and decode with two threads ran slower than with one.
        out_features
            .div_ceil(pool.num_threads())
            .next_multiple_of(DECODE_ROW_ALIGN)
    } else {
        // Multiples of 8: the rows-in-lanes kernels work on groups of 8 weight rows.
        (out_features / (4 * pool.num_threads())).clamp(8, 64) / 8 * 8
    }
}

/// Output rows `rows` (of `out_features`) for all `m` activation rows.
#[allow(clippy::too_many_arguments)]
fn compute_rows<B: Kernel>(
    weights: &[B],
    in_features: usize,
    acts: &[B::Act],
    aux: Option<&[ActAux]>,
    m: usize,
    rows: Range<usize>,
    out: &SharedOut,
    out_features: usize,
    isa: Isa,
) {
    let blocks_per_row = in_features / B::ELEMS;
    let acts_per_row = in_features / <B::Act as ActBlock>::ELEMS;
    let dot = B::dot_fn(isa);
    let dot4 = B::dot4_fn(isa);
    let a_row = |i: usize| &acts[i * acts_per_row..(i + 1) * acts_per_row];
    // SAFETY: (i, r) is in bounds and only this task owns output row r.
    let store = |i: usize, r: usize, v: f32| unsafe { *out.0.add(i * out_features + r) = v };
    let tiles = (0..m)
        .step_by(PREFILL_ACT_TILE)
        .map(|start| start..(start + PREFILL_ACT_TILE).min(m));
    // SAFETY (both tile kernels): they write out[i * out_features + r] for this
    // task's rows only, all in bounds; `acts` and `aux` hold all m activation rows.
    if let Some(kernel) = B::tile(isa) {
        for tile in tiles {
            unsafe {
                kernel(
                    weights,
                    blocks_per_row,
                    rows.clone(),
                    acts,
                    tile,
                    out.0,
                    out_features,
                )
            };
        }
        return;
    }
    if let (Some(aux), Some(kernel)) = (aux, B::aux_tile(isa)) {
        for tile in tiles {
            unsafe {
                kernel(
                    weights,
                    blocks_per_row,
                    rows.clone(),
                    acts,
                    aux,
                    tile,
                    out.0,
                    out_features,
                )
            };
        }
        return;
    }
    for tile in tiles {
        for r in rows.clone() {
            let w_row = &weights[r * blocks_per_row..(r + 1) * blocks_per_row];
            let mut i = tile.start;
            if let Some(dot4) = dot4 {
                while i + 4 <= tile.end {
                    let y = dot4(w_row, [a_row(i), a_row(i + 1), a_row(i + 2), a_row(i + 3)]);
                    y.into_iter()
                        .enumerate()
                        .for_each(|(k, v)| store(i + k, r, v));
                    i += 4;
                }
            }
            for i in i..tile.end {
                store(i, r, dot(w_row, a_row(i)));
            }
        }
    }
}

/// Quantizes every row of x: [m, in_features] into `slot` (reusing its allocation);
/// rows in parallel when there are many.
fn quantize_rows<A: ActBlock>(slot: &mut Vec<A>, x: &[f32], in_features: usize, pool: &ThreadPool) {
    let m = x.len() / in_features;
    let per_row = in_features / A::ELEMS;
    slot.clear();
    if m < 8 {
        slot.extend(x.chunks_exact(A::ELEMS).map(A::quantize));
        return;
    }
    slot.resize(m * per_row, <A as bytemuck::Zeroable>::zeroed());
    let acts_ptr = SharedActs(slot.as_mut_ptr());
    let acts_ptr = &acts_ptr;
    pool.run(m, &|i| {
        let row = &x[i * in_features..(i + 1) * in_features];
        for (j, chunk) in row.chunks_exact(A::ELEMS).enumerate() {
            // SAFETY: row i owns blocks i*per_row..(i+1)*per_row.
            unsafe { *acts_ptr.0.add(i * per_row + j) = A::quantize(chunk) };
        }
    });
}

/// The [`ActAux`] of every block of `acts` ([m rows]) into `slot`; rows in
/// parallel when there are many (a 512-token prompt has 10k blocks per layer).
fn build_aux(slot: &mut Vec<ActAux>, acts: &[BlockQ8_0], bias: i32, m: usize, pool: &ThreadPool) {
    slot.clear();
    if m < 8 {
        slot.extend(acts.iter().map(|a| ActAux::new(a, bias)));
        return;
    }
    let per_row = acts.len() / m;
    slot.resize(acts.len(), ActAux::default());
    let aux_ptr = SharedActs(slot.as_mut_ptr());
    let aux_ptr = &aux_ptr;
    pool.run(m, &|i| {
        let row = &acts[i * per_row..(i + 1) * per_row];
        for (j, a) in row.iter().enumerate() {
            // SAFETY: row i owns blocks i*per_row..(i+1)*per_row.
            unsafe { *aux_ptr.0.add(i * per_row + j) = ActAux::new(a, bias) };
        }
    });
}

struct SharedActs<A>(*mut A);
// SAFETY: tasks write disjoint rows and are joined before `acts` is used.
unsafe impl<A: Send> Sync for SharedActs<A> {}
