//! The pre-allocated ring-buffer KV cache of HIP-19 §Memory Management.
//!
//! Every layer owns one buffer for keys and one for values, sized once for
//! `slots` concurrent sequences × `capacity` positions; generating a token
//! writes into it and never allocates. Position `p` of a sequence lives at
//! ring index `p % capacity`. Full-attention layers get the whole context as
//! capacity, so their ring never wraps (going past it is an error the engine
//! reports before running); sliding-window layers get `window + chunk`
//! entries, enough for the window plus the tokens of one forward step, and
//! wrap around. Keys are stored after RoPE, so a key's ring index does not
//! matter to attention; the position of each entry is kept to mask it.

use crate::model::Backend;
use crate::{kv_math, Error, Result};
use candle_core::{DType, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::ops::Range;
use std::sync::Mutex;

/// Geometry of one layer's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerGeometry {
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `None` for full attention, `Some(w)` when a query sees only the last
    /// `w` positions (itself included).
    pub window: Option<usize>,
}

/// Element type of the stored keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvPrecision {
    /// Exact f32: what comparisons against f32 reference implementations use.
    #[default]
    F32,
    /// Half the memory and bandwidth of f32. Rounds like llama.cpp's default
    /// f16 cache: keys and values are stored as f16, and the query and the
    /// attention weights are rounded to f16 before they meet them.
    F16,
}

/// How one precision stores values and rounds the operands that meet them.
trait KvElement: Copy + Send + Sync + 'static + crate::kv_math::Load8 {
    fn store(src: &[f32], dst: &mut [Self]);
    fn load(src: &[Self], dst: &mut [f32]);
    fn round_operand(x: f32) -> f32;
}

impl KvElement for f32 {
    fn store(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    fn load(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn round_operand(x: f32) -> f32 {
        x
    }
}

impl KvElement for f16 {
    fn store(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
    fn load(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn round_operand(x: f32) -> f32 {
        f16::from_f32(x).to_f32()
    }
}

/// Keys and values of one layer.
#[derive(Debug)]
enum KvStore {
    /// For our CPU kernels: [slots, kv_heads, capacity, head_dim] each.
    F32 {
        k: Vec<f32>,
        v: Vec<f32>,
    },
    F16 {
        k: Vec<f16>,
        v: Vec<f16>,
    },
    /// For the tensor path, on its device: [slots * capacity, kv_heads *
    /// head_dim] each (a ring index's heads in one row, so a run of
    /// positions is one contiguous copy), in the precision's dtype.
    Tensors {
        k: Tensor,
        v: Tensor,
    },
}

#[derive(Debug)]
struct LayerCache {
    geometry: LayerGeometry,
    capacity: usize,
    store: KvStore,
    /// [slots, capacity]: the position stored at each ring index, or
    /// `EMPTY`.
    positions: Vec<u32>,
}

const EMPTY: u32 = u32::MAX;

/// Where a token sits: its layer, sequence slot and position.
#[derive(Clone, Copy, Debug)]
pub struct CachePosition {
    pub layer: usize,
    pub slot: usize,
    pub position: usize,
}

/// How raw attention scores are formed: `q·k * scale`, then, for models
/// that cap their logits (Gemma 2), `cap * tanh(score / cap)`.
#[derive(Clone, Copy, Debug)]
pub struct ScoreParams {
    pub scale: f32,
    pub softcap: Option<f32>,
}

/// KV cache for a model's layers and a fixed number of sequence slots.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    slots: usize,
    max_context: usize,
    max_step_tokens: usize,
    precision: KvPrecision,
    backend: Backend,
    /// Tokens held for each slot (its next position).
    lengths: Vec<usize>,
}

impl KvCache {
    /// Allocates an f32 cache: `max_context` positions per sequence, `slots`
    /// sequences, and at most `max_step_tokens` new tokens per sequence in
    /// one forward step (prompts are fed in chunks of at most that size).
    pub fn new(
        layers: &[LayerGeometry],
        slots: usize,
        max_context: usize,
        max_step_tokens: usize,
    ) -> Result<Self> {
        Self::with_precision(
            layers,
            slots,
            max_context,
            max_step_tokens,
            KvPrecision::F32,
        )
    }

    /// [`KvCache::new`] with keys and values stored in `precision`.
    pub fn with_precision(
        layers: &[LayerGeometry],
        slots: usize,
        max_context: usize,
        max_step_tokens: usize,
        precision: KvPrecision,
    ) -> Result<Self> {
        Self::for_backend(
            layers,
            slots,
            max_context,
            max_step_tokens,
            precision,
            &Backend::Native,
        )
    }

    /// [`KvCache::with_precision`] for a decoder built for `backend`
    /// ([`crate::Decoder::backend`]): host buffers for our CPU kernels,
    /// tensors on the device for the tensor path.
    pub fn for_backend(
        layers: &[LayerGeometry],
        slots: usize,
        max_context: usize,
        max_step_tokens: usize,
        precision: KvPrecision,
        backend: &Backend,
    ) -> Result<Self> {
        if slots == 0 || max_context == 0 || max_step_tokens == 0 {
            return Err(Error::InvalidCacheGeometry(format!(
                "slots ({slots}), max_context ({max_context}) and max_step_tokens ({max_step_tokens}) must be positive"
            )));
        }
        let layers = layers
            .iter()
            .map(|&geometry| {
                let capacity = match geometry.window {
                    Some(w) if w + max_step_tokens < max_context => w + max_step_tokens,
                    _ => max_context,
                };
                let elems = slots
                    .checked_mul(geometry.kv_heads)
                    .and_then(|n| n.checked_mul(capacity))
                    .and_then(|n| n.checked_mul(geometry.head_dim))
                    .ok_or_else(|| {
                        Error::InvalidCacheGeometry(format!(
                            "cache of {slots} x {capacity} positions overflows"
                        ))
                    })?;
                // Zeroed allocations: pages are committed only as positions
                // are written.
                let store = match (backend, precision) {
                    (Backend::Tensors(device), _) => {
                        let dtype = match precision {
                            KvPrecision::F32 => DType::F32,
                            KvPrecision::F16 => DType::F16,
                        };
                        let shape = (slots * capacity, geometry.kv_heads * geometry.head_dim);
                        KvStore::Tensors {
                            k: Tensor::zeros(shape, dtype, device)?,
                            v: Tensor::zeros(shape, dtype, device)?,
                        }
                    }
                    (Backend::Native, KvPrecision::F32) => KvStore::F32 {
                        k: vec![0.0; elems],
                        v: vec![0.0; elems],
                    },
                    // `vec![f16::ZERO; n]` would write every element and
                    // commit the pages up front.
                    (Backend::Native, KvPrecision::F16) => KvStore::F16 {
                        k: bytemuck::zeroed_vec(elems),
                        v: bytemuck::zeroed_vec(elems),
                    },
                };
                Ok(LayerCache {
                    geometry,
                    capacity,
                    store,
                    positions: vec![EMPTY; slots * capacity],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            slots,
            max_context,
            max_step_tokens,
            precision,
            backend: backend.clone(),
            lengths: vec![0; slots],
        })
    }

    /// What the cache was built for: a decoder runs only with a cache of its
    /// own backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn max_context(&self) -> usize {
        self.max_context
    }

    pub fn precision(&self) -> KvPrecision {
        self.precision
    }

    /// The most tokens of one sequence a forward step may add.
    pub fn max_step_tokens(&self) -> usize {
        self.max_step_tokens
    }

    /// Number of positions sequence `slot` holds.
    pub fn len(&self, slot: usize) -> usize {
        self.lengths[slot]
    }

    /// Bytes held by the cache (keys, values and positions).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let values = match &l.store {
                    KvStore::F32 { k, v } => (k.len() + v.len()) * 4,
                    KvStore::F16 { k, v } => (k.len() + v.len()) * 2,
                    KvStore::Tensors { k, v } => {
                        (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes()
                    }
                };
                values + l.positions.len() * 4
            })
            .sum()
    }

    /// Fails with a clear error when `new_tokens` more tokens do not fit the
    /// context of `slot`.
    pub fn check_room(&self, slot: usize, new_tokens: usize) -> Result<()> {
        let needed = self.lengths[slot] + new_tokens;
        if needed > self.max_context {
            return Err(Error::ContextExceeded {
                needed,
                max_context: self.max_context,
            });
        }
        Ok(())
    }

    /// Forgets sequence `slot` so that a new sequence can use it.
    pub fn clear(&mut self, slot: usize) {
        self.lengths[slot] = 0;
        for layer in &mut self.layers {
            let c = layer.capacity;
            layer.positions[slot * c..(slot + 1) * c].fill(EMPTY);
        }
    }

    /// Keeps the first `len` positions of `slot` and forgets the rest, so
    /// that a new sequence sharing that prefix continues from it. Fails,
    /// changing nothing, when a sliding-window layer has already overwritten
    /// an entry the continuation would attend to.
    pub fn truncate(&mut self, slot: usize, len: usize) -> Result<()> {
        if len > self.lengths[slot] {
            return Err(Error::InvalidBatch(format!(
                "slot {slot} holds {} positions, cannot keep {len}",
                self.lengths[slot]
            )));
        }
        for layer in &self.layers {
            let c = layer.capacity;
            let ring = &layer.positions[slot * c..(slot + 1) * c];
            // The query at `len` sees the last `window` positions.
            let oldest = layer
                .geometry
                .window
                .map_or(0, |w| (len + 1).saturating_sub(w));
            if let Some(lost) = (oldest..len).find(|&p| ring[p % c] != p as u32) {
                return Err(Error::InvalidBatch(format!(
                    "slot {slot}: a sliding-window layer no longer holds position {lost}"
                )));
            }
        }
        for layer in &mut self.layers {
            let c = layer.capacity;
            for entry in &mut layer.positions[slot * c..(slot + 1) * c] {
                if *entry != EMPTY && *entry as usize >= len {
                    *entry = EMPTY;
                }
            }
        }
        self.lengths[slot] = len;
        Ok(())
    }

    /// Records that `slot` now holds `len` positions (after a forward step
    /// wrote them into every layer).
    pub fn set_len(&mut self, slot: usize, len: usize) {
        self.lengths[slot] = len;
    }

    /// Stores one token's keys and values for `layer`.
    ///
    /// k, v: [kv_heads * head_dim], head-major.
    pub fn write(
        &mut self,
        layer: usize,
        slot: usize,
        position: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        if let KvStore::Tensors { k: keys, .. } = &self.layers[layer].store {
            let device = keys.device().clone();
            let row = |x: &[f32]| Tensor::from_slice(x, (1, x.len()), &device);
            return self.write_rows(layer, slot, position, &row(k)?, &row(v)?);
        }
        let l = &mut self.layers[layer];
        let LayerGeometry {
            kv_heads, head_dim, ..
        } = l.geometry;
        let index = position % l.capacity;
        let capacity = l.capacity;
        let rows = (0..kv_heads).map(|h| {
            let dst = ((slot * kv_heads + h) * capacity + index) * head_dim;
            (dst..dst + head_dim, h * head_dim..(h + 1) * head_dim)
        });
        fn store<E: KvElement>(
            (keys, values): (&mut [E], &mut [E]),
            rows: impl Iterator<Item = (Range<usize>, Range<usize>)>,
            (k, v): (&[f32], &[f32]),
        ) {
            for (dst, src) in rows {
                E::store(&k[src.clone()], &mut keys[dst.clone()]);
                E::store(&v[src], &mut values[dst]);
            }
        }
        match &mut l.store {
            KvStore::F32 { k: ks, v: vs } => store((ks, vs), rows, (k, v)),
            KvStore::F16 { k: ks, v: vs } => store((ks, vs), rows, (k, v)),
            KvStore::Tensors { .. } => unreachable!("tensor stores returned above"),
        }
        l.positions[slot * capacity + index] = position as u32;
        Ok(())
    }

    /// Stores the keys and values of consecutive positions `first..` of
    /// sequence `slot` in a tensor cache.
    ///
    /// k, v: [tokens, kv_heads * head_dim] on the cache's device.
    pub(crate) fn write_rows(
        &mut self,
        layer: usize,
        slot: usize,
        first: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<()> {
        let l = &mut self.layers[layer];
        let KvStore::Tensors { k: keys, v: values } = &l.store else {
            return Err(Error::InvalidBatch(
                "tensor rows written to a host-buffer cache".into(),
            ));
        };
        let (capacity, tokens) = (l.capacity, k.dim(0)?);
        let (k, v) = (k.to_dtype(keys.dtype())?, v.to_dtype(values.dtype())?);
        // A run of ring indices without a wrap is one copy per tensor.
        let mut done = 0;
        while done < tokens {
            let index = (first + done) % capacity;
            let run = (capacity - index).min(tokens - done);
            let row = slot * capacity + index;
            keys.slice_set(&k.narrow(0, done, run)?.contiguous()?, 0, row)?;
            values.slice_set(&v.narrow(0, done, run)?.contiguous()?, 0, row)?;
            for i in 0..run {
                l.positions[row + i] = (first + done + i) as u32;
            }
            done += run;
        }
        Ok(())
    }

    /// The keys and values `[entries, kv_heads * head_dim]` (f32) that
    /// queries of sequence `slot` up to position `last` may see in a tensor
    /// cache's `layer`, on the cache's device.
    pub(crate) fn visible_rows(
        &self,
        layer: usize,
        slot: usize,
        last: usize,
    ) -> Result<(Tensor, Tensor)> {
        let l = &self.layers[layer];
        let KvStore::Tensors { k: keys, v: values } = &l.store else {
            return Err(Error::InvalidBatch(
                "tensor attention over a host-buffer cache".into(),
            ));
        };
        let rows = |t: &Tensor| {
            t.narrow(0, slot * l.capacity, l.visible_entries(last))?
                .to_dtype(DType::F32)
        };
        Ok((rows(keys)?, rows(values)?))
    }

    /// The additive mask `[positions, entries]` over [`KvCache::visible_rows`]
    /// (0 where a query may attend, -inf elsewhere), on `device`. Layers of
    /// the same window hold the same positions, so they share it.
    pub(crate) fn mask(
        &self,
        layer: usize,
        slot: usize,
        positions: &[usize],
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let l = &self.layers[layer];
        let last = positions.iter().copied().max().unwrap_or(0);
        let entries = l.visible_entries(last);
        let stored = &l.positions[slot * l.capacity..slot * l.capacity + entries];
        let mask: Vec<f32> = positions
            .iter()
            .flat_map(|&position| {
                let oldest = l
                    .geometry
                    .window
                    .map_or(0, |w| (position + 1).saturating_sub(w));
                stored.iter().map(move |&p| {
                    let seen = p != EMPTY && (p as usize) <= position && (p as usize) >= oldest;
                    if seen {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        Ok(Tensor::from_vec(mask, (positions.len(), entries), device)?)
    }

    /// Attention of one query token at `position` of sequence `slot` over
    /// the cached keys it may see (positions `<= position`, within the
    /// layer's window), with grouped-query heads.
    ///
    /// q: [heads * head_dim]; out: [heads * head_dim].
    pub fn attend(
        &self,
        at: CachePosition,
        q: &[f32],
        scores: ScoreParams,
        out: &mut [f32],
    ) -> Result<()> {
        let l = self.host_layer(at.layer)?;
        let LayerGeometry {
            kv_heads, head_dim, ..
        } = l.geometry;
        let group_len = q.len() / kv_heads;
        for (g, out) in out.chunks_mut(group_len).enumerate() {
            let q = &q[g * group_len..(g + 1) * group_len];
            l.attend_group(at.slot, at.position, g, q, head_dim, scores, out);
        }
        Ok(())
    }

    /// `layer`, if its keys and values are host buffers that our CPU
    /// attention reads.
    fn host_layer(&self, layer: usize) -> Result<&LayerCache> {
        let l = &self.layers[layer];
        match l.store {
            KvStore::Tensors { .. } => Err(Error::InvalidBatch(
                "this cache holds tensors for the tensor path; the CPU attention needs a cache built for Backend::Native".into(),
            )),
            _ => Ok(l),
        }
    }

    /// [`KvCache::attend`] for every token of a step, spread over the
    /// quantized matmuls' thread pool (one task per token and KV head, so
    /// the result does not depend on the thread count).
    ///
    /// slots, positions: [n]; q: [n, heads * head_dim]; out: [n, heads * head_dim].
    pub fn attend_batch(
        &self,
        layer: usize,
        slots: &[usize],
        positions: &[usize],
        q: &[f32],
        scores: ScoreParams,
        out: &mut [f32],
    ) -> Result<()> {
        let l = self.host_layer(layer)?;
        let LayerGeometry {
            kv_heads, head_dim, ..
        } = l.geometry;
        let n = slots.len();
        if n == 0 {
            return Ok(());
        }
        if positions.len() != n || q.len() != out.len() || !q.len().is_multiple_of(n * kv_heads) {
            return Err(Error::InvalidBatch(format!(
                "attention over {n} slots, {} positions, {} query and {} output values",
                positions.len(),
                q.len(),
                out.len()
            )));
        }
        let group_len = q.len() / (n * kv_heads);
        let pool = candle_quant::kernels::global_pool()?;
        // A decode step of a model with one KV head (Gemma-3) would be a single
        // task: split the group's query heads over the threads instead. Every
        // head's scores, softmax and sum are its own, so any split gives the same
        // bits.
        let heads = group_len / head_dim;
        let splits = pool
            .num_threads()
            .div_ceil(n * kv_heads)
            .clamp(1, heads.max(1));
        let part_len = heads.div_ceil(splits) * head_dim;
        let parts_per_group = group_len.div_ceil(part_len);
        let outputs: Vec<Mutex<&mut [f32]>> = out
            .chunks_mut(group_len)
            .flat_map(|group| group.chunks_mut(part_len))
            .map(Mutex::new)
            .collect();
        let task = |i: usize| {
            let (group, part) = (i / parts_per_group, i % parts_per_group);
            let (t, g) = (group / kv_heads, group % kv_heads);
            let start = group * group_len + part * part_len;
            let end = (start + part_len).min((group + 1) * group_len);
            let mut out = outputs[i].lock().unwrap_or_else(|e| e.into_inner());
            l.attend_group(
                slots[t],
                positions[t],
                g,
                &q[start..end],
                head_dim,
                scores,
                &mut out,
            );
        };
        pool.run(outputs.len(), &task);
        Ok(())
    }
}

impl LayerCache {
    /// Ring entries a query at position `last` may need: until the ring
    /// wraps, index i holds position i, so the first `last + 1`.
    fn visible_entries(&self, last: usize) -> usize {
        (last + 1).min(self.capacity)
    }

    /// The query heads of KV head `g` for one token: two-pass softmax over
    /// the visible keys, so every score and weight is formed once.
    ///
    /// q, out: [heads_per_kv_head * head_dim].
    #[allow(clippy::too_many_arguments)]
    fn attend_group(
        &self,
        slot: usize,
        position: usize,
        g: usize,
        q: &[f32],
        head_dim: usize,
        scores: ScoreParams,
        out: &mut [f32],
    ) {
        match &self.store {
            KvStore::F32 { k, v } => {
                self.attend_group_in(k, v, slot, position, g, q, head_dim, scores, out)
            }
            KvStore::F16 { k, v } => {
                self.attend_group_in(k, v, slot, position, g, q, head_dim, scores, out)
            }
            KvStore::Tensors { .. } => unreachable!("host_layer refuses tensor stores"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attend_group_in<E: KvElement>(
        &self,
        keys: &[E],
        values: &[E],
        slot: usize,
        position: usize,
        g: usize,
        q: &[f32],
        head_dim: usize,
        scores: ScoreParams,
        out: &mut [f32],
    ) {
        let ScoreParams { scale, softcap } = scores;
        let capacity = self.capacity;
        let oldest = self
            .geometry
            .window
            .map_or(0, |w| (position + 1).saturating_sub(w));
        let positions = &self.positions[slot * capacity..(slot + 1) * capacity];
        // Until the ring wraps, index i holds position i: scan only the
        // indices that can be visible instead of the whole capacity.
        let scan = if position < capacity {
            oldest..position + 1
        } else {
            0..capacity
        };
        let visible: Vec<usize> = scan
            .filter(|&i| {
                let p = positions[i];
                p != EMPTY && (p as usize) <= position && (p as usize) >= oldest
            })
            .collect();
        let heads = q.len() / head_dim;
        let m = visible.len();
        let q: Vec<f32> = q.iter().map(|&x| E::round_operand(x)).collect();
        let base = (slot * self.geometry.kv_heads + g) * capacity;
        let mut row = vec![0f32; head_dim];
        let mut weights = vec![0f32; heads * m];
        let mut head_scores = vec![0f32; heads];
        for (j, &index) in visible.iter().enumerate() {
            let at = (base + index) * head_dim;
            kv_math::key_scores(
                &q,
                &keys[at..at + head_dim],
                head_dim,
                E::load,
                &mut row,
                &mut head_scores,
            );
            for (h, &dot) in head_scores.iter().enumerate() {
                let mut score = dot * scale;
                if let Some(cap) = softcap {
                    score = cap * (score / cap).tanh();
                }
                weights[h * m + j] = score;
            }
        }
        for head_weights in weights.chunks_mut(m.max(1)) {
            let max = head_weights
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            for w in head_weights.iter_mut() {
                *w = crate::rows::exp(*w - max);
            }
            let sum: f64 = head_weights.iter().map(|&w| w as f64).sum();
            let inv = (1.0 / sum) as f32;
            for w in head_weights.iter_mut() {
                *w = E::round_operand(*w * inv);
            }
        }
        let value = |j: usize| {
            let at = (base + visible[j]) * head_dim;
            &values[at..at + head_dim]
        };
        kv_math::weighted_values(&weights, m, value, head_dim, E::load, &mut row, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        // A small LCG: deterministic test data without another dependency.
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn truncate_keeps_a_prefix_unless_a_window_ring_overwrote_it() {
        let geometry = |window| LayerGeometry {
            kv_heads: 1,
            head_dim: 2,
            window,
        };
        // Window 4 with 2-token steps: a ring of 6 entries per slot.
        let mut cache = KvCache::new(&[geometry(None), geometry(Some(4))], 1, 16, 2).unwrap();
        for position in 0..10 {
            for layer in 0..2 {
                cache
                    .write(layer, 0, position, &[1.0, 2.0], &[3.0, 4.0])
                    .unwrap();
            }
        }
        cache.set_len(0, 10);
        // Positions 6..10 overwrote ring entries 0..4 (positions 0..4): a
        // query at 4 would need positions 1..4 of the window.
        let err = cache.truncate(0, 4).unwrap_err().to_string();
        assert!(err.contains("no longer holds position 1"), "{err}");
        assert_eq!(cache.len(0), 10);
        // A query at 8 needs positions 5..8, all still in the ring.
        cache.truncate(0, 8).unwrap();
        assert_eq!(cache.len(0), 8);
        assert!(cache.truncate(0, 9).is_err());
        let ring = &cache.layers[1].positions;
        assert_eq!(ring, &[6, 7, EMPTY, EMPTY, 4, 5]);
    }

    /// Reference: dense causal attention over the last `window` positions,
    /// computed with candle-ops' SDPA and an explicit mask.
    /// dims: (heads, kv_heads, head_dim, tokens)
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dims: (usize, usize, usize, usize),
        window: Option<usize>,
    ) -> Vec<f32> {
        let (heads, kv_heads, d, n) = dims;
        let q = Tensor::from_slice(q, (n, heads, d), &Device::Cpu)
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let k = Tensor::from_slice(k, (n, kv_heads, d), &Device::Cpu)
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let v = Tensor::from_slice(v, (n, kv_heads, d), &Device::Cpu)
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask: Vec<u8> = (0..n)
            .flat_map(|i| (0..n).map(move |j| u8::from(j <= i && window.is_none_or(|w| i - j < w))))
            .collect();
        let mask = Tensor::from_vec(mask, (n, n), &Device::Cpu).unwrap();
        let out = candle_ops::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(&mask),
            1.0 / (d as f64).sqrt(),
        )
        .unwrap();
        out.squeeze(0)
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Reference for the f16 cache, in f64: the same roundings the cache
    /// applies (q, k and v to f16; the normalised weights to f16), then
    /// exact arithmetic. dims: (heads, kv_heads, head_dim, tokens)
    fn reference_f16(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dims: (usize, usize, usize, usize),
        window: Option<usize>,
    ) -> Vec<f32> {
        let (heads, kv_heads, d, n) = dims;
        let r = |x: f32| f16::from_f32(x).to_f32() as f64;
        let mut out = vec![0f32; n * heads * d];
        for i in 0..n {
            for h in 0..heads {
                let g = h / (heads / kv_heads);
                let keys: Vec<usize> = (0..=i)
                    .filter(|&j| window.is_none_or(|w| i - j < w))
                    .collect();
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        (0..d)
                            .map(|e| {
                                r(q[(i * heads + h) * d + e]) * r(k[(j * kv_heads + g) * d + e])
                            })
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for e in 0..d {
                    out[(i * heads + h) * d + e] = keys
                        .iter()
                        .zip(&scores)
                        .map(|(&j, s)| {
                            r(((s - max).exp() / sum) as f32) * r(v[(j * kv_heads + g) * d + e])
                        })
                        .sum::<f64>() as f32;
                }
            }
        }
        out
    }

    fn run_cache(window: Option<usize>, step: usize, precision: KvPrecision) {
        let (heads, kv_heads, d, n) = (4, 2, 8, 37);
        let q = random(n * heads * d, 1);
        let k = random(n * kv_heads * d, 2);
        let v = random(n * kv_heads * d, 3);
        let geometry = LayerGeometry {
            kv_heads,
            head_dim: d,
            window,
        };
        let mut cache = KvCache::with_precision(&[geometry], 2, 64, step, precision).unwrap();
        let scores = ScoreParams {
            scale: 1.0 / (d as f32).sqrt(),
            softcap: None,
        };
        let mut got = vec![0f32; n * heads * d];
        // Feed the sequence in chunks of `step` tokens into slot 1, as the
        // engine does: write the chunk, then let its tokens attend together.
        for chunk_start in (0..n).step_by(step) {
            let chunk = chunk_start..(chunk_start + step).min(n);
            for p in chunk.clone() {
                cache
                    .write(
                        0,
                        1,
                        p,
                        &k[p * kv_heads * d..][..kv_heads * d],
                        &v[p * kv_heads * d..][..kv_heads * d],
                    )
                    .unwrap();
            }
            let positions: Vec<usize> = chunk.clone().collect();
            let rows = chunk.start * heads * d..chunk.end * heads * d;
            cache
                .attend_batch(
                    0,
                    &vec![1; positions.len()],
                    &positions,
                    &q[rows.clone()],
                    scores,
                    &mut got[rows],
                )
                .unwrap();
            // The one-token entry point computes the same thing in the same
            // order: bitwise equal.
            for p in chunk {
                let mut alone = vec![0f32; heads * d];
                let at = CachePosition {
                    layer: 0,
                    slot: 1,
                    position: p,
                };
                cache
                    .attend(at, &q[p * heads * d..][..heads * d], scores, &mut alone)
                    .unwrap();
                assert_eq!(alone, got[p * heads * d..][..heads * d]);
            }
        }
        let dims = (heads, kv_heads, d, n);
        let expected = match precision {
            KvPrecision::F32 => reference(&q, &k, &v, dims, window),
            KvPrecision::F16 => reference_f16(&q, &k, &v, dims, window),
        };
        let max_diff = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Both sides see identical (rounded) operands and differ only in f32
        // vs f64/other-order accumulation over <= 37 keys of values of order
        // 1: a few ulps.
        assert!(
            max_diff < 1e-5,
            "{precision:?}, window {window:?}, step {step}: max diff {max_diff}"
        );
    }

    #[test]
    fn full_attention_cache_matches_dense_causal_attention() {
        for precision in [KvPrecision::F32, KvPrecision::F16] {
            run_cache(None, 1, precision);
            run_cache(None, 16, precision);
        }
    }

    #[test]
    fn sliding_window_ring_wraps_and_matches_dense_windowed_attention() {
        // Capacity is window + step = 13 < 37 positions: the ring wraps.
        for precision in [KvPrecision::F32, KvPrecision::F16] {
            run_cache(Some(5), 8, precision);
            run_cache(Some(5), 1, precision);
        }
    }

    /// One decode token of a one-KV-head model has its query heads split over
    /// the pool's threads; the same token inside a two-token batch is not split.
    /// Every head is computed on its own, so the two must be bitwise equal. (On a
    /// one-thread pool nothing is split and the test holds trivially.)
    #[test]
    fn splitting_a_group_over_threads_gives_the_same_bits() {
        let (heads, d, n) = (4, 16, 9);
        let k = random(n * d, 5);
        let v = random(n * d, 6);
        let q = random(2 * heads * d, 7);
        let geometry = LayerGeometry {
            kv_heads: 1,
            head_dim: d,
            window: None,
        };
        for precision in [KvPrecision::F32, KvPrecision::F16] {
            let mut cache = KvCache::with_precision(&[geometry], 1, 16, 4, precision).unwrap();
            for p in 0..n {
                cache
                    .write(0, 0, p, &k[p * d..][..d], &v[p * d..][..d])
                    .unwrap();
            }
            let scores = ScoreParams {
                scale: 0.25,
                softcap: None,
            };
            let mut pair = vec![0f32; 2 * heads * d];
            cache
                .attend_batch(0, &[0, 0], &[n - 2, n - 1], &q, scores, &mut pair)
                .unwrap();
            let mut alone = vec![0f32; heads * d];
            let last = &q[heads * d..];
            cache
                .attend_batch(0, &[0], &[n - 1], last, scores, &mut alone)
                .unwrap();
            assert_eq!(alone, pair[heads * d..], "{precision:?}");
        }
    }

    #[test]
    fn f16_cache_takes_half_the_bytes() {
        let g = LayerGeometry {
            kv_heads: 2,
            head_dim: 8,
            window: None,
        };
        let f32_cache = KvCache::new(&[g], 1, 16, 4).unwrap();
        let f16_cache = KvCache::with_precision(&[g], 1, 16, 4, KvPrecision::F16).unwrap();
        let positions = 16 * 4;
        assert_eq!(f32_cache.bytes(), 2 * 2 * 16 * 8 * 4 + positions);
        assert_eq!(f16_cache.bytes(), 2 * 2 * 16 * 8 * 2 + positions);
    }

    #[test]
    fn exceeding_the_context_is_a_clear_error() {
        let g = LayerGeometry {
            kv_heads: 1,
            head_dim: 4,
            window: None,
        };
        let mut cache = KvCache::new(&[g], 1, 8, 4).unwrap();
        cache.set_len(0, 6);
        assert!(cache.check_room(0, 2).is_ok());
        let err = cache.check_room(0, 3).unwrap_err();
        assert!(
            err.to_string().contains("9") && err.to_string().contains("8"),
            "{err}"
        );
        cache.clear(0);
        assert_eq!(cache.len(0), 0);
    }
}
