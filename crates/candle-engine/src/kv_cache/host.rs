//! Keys and values in host memory and the CPU attention over them.
//!
//! Each layer holds `[slots, kv_heads, capacity, head_dim]` keys and values
//! in f32 or f16; the ring ([`Ring`]) says which position each index holds.

use super::ring::Ring;
use super::{KvPrecision, LayerGeometry, ScoreParams};
use crate::{kv_math, Error, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::sync::Mutex;

/// How one precision stores values and rounds the operands that meet them.
trait KvElement: Copy + Send + Sync + 'static + kv_math::Load8 {
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

#[derive(Debug)]
enum Values {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
}

#[derive(Debug)]
struct HostLayer {
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    values: Values,
}

/// The keys and values of every layer in host memory.
#[derive(Debug)]
pub(crate) struct HostKv {
    layers: Vec<HostLayer>,
}

impl HostKv {
    pub(crate) fn new(
        geometry: &[LayerGeometry],
        ring: &Ring,
        precision: KvPrecision,
    ) -> Result<Self> {
        let layers = geometry
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let capacity = ring.capacity(i);
                let elems = ring
                    .slots()
                    .checked_mul(g.kv_heads)
                    .and_then(|n| n.checked_mul(capacity))
                    .and_then(|n| n.checked_mul(g.head_dim))
                    .ok_or_else(|| {
                        Error::InvalidCacheGeometry(format!(
                            "a cache of {} x {capacity} positions of {} x {} values overflows",
                            ring.slots(),
                            g.kv_heads,
                            g.head_dim
                        ))
                    })?;
                // Zeroed allocations: pages are committed only as positions
                // are written (`vec![f16::ZERO; n]` would write every element).
                let values = match precision {
                    KvPrecision::F32 => Values::F32 {
                        k: vec![0.0; elems],
                        v: vec![0.0; elems],
                    },
                    KvPrecision::F16 => Values::F16 {
                        k: bytemuck::zeroed_vec(elems),
                        v: bytemuck::zeroed_vec(elems),
                    },
                };
                Ok(HostLayer {
                    kv_heads: g.kv_heads,
                    head_dim: g.head_dim,
                    capacity,
                    values,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Writes one value per memory page, so that the kernel backs every
    /// page now.
    pub(crate) fn commit_memory(&mut self) {
        fn touch<T: Copy + Default>(values: &mut [T]) {
            let stride = (4096 / std::mem::size_of::<T>()).max(1);
            for v in values.iter_mut().step_by(stride) {
                // Volatile: storing a zero over calloc'd memory is otherwise
                // a store the optimiser may drop.
                // SAFETY: `v` is a valid, exclusive reference.
                unsafe { std::ptr::write_volatile(v, T::default()) };
            }
        }
        for layer in &mut self.layers {
            match &mut layer.values {
                Values::F32 { k, v } => {
                    touch(k);
                    touch(v);
                }
                Values::F16 { k, v } => {
                    touch(k);
                    touch(v);
                }
            }
        }
    }

    /// Bytes of keys and values.
    pub(crate) fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match &l.values {
                Values::F32 { k, v } => (k.len() + v.len()) * 4,
                Values::F16 { k, v } => (k.len() + v.len()) * 2,
            })
            .sum()
    }

    /// Stores one token's keys and values at ring `index` of `slot`.
    ///
    /// k, v: [kv_heads * head_dim], head-major.
    pub(crate) fn write(&mut self, layer: usize, slot: usize, index: usize, k: &[f32], v: &[f32]) {
        let l = &mut self.layers[layer];
        let (kv_heads, head_dim, capacity) = (l.kv_heads, l.head_dim, l.capacity);
        fn store<E: KvElement>(
            (keys, values): (&mut [E], &mut [E]),
            (k, v): (&[f32], &[f32]),
            (kv_heads, head_dim, capacity): (usize, usize, usize),
            (slot, index): (usize, usize),
        ) {
            for h in 0..kv_heads {
                let dst = ((slot * kv_heads + h) * capacity + index) * head_dim;
                let src = h * head_dim..(h + 1) * head_dim;
                E::store(&k[src.clone()], &mut keys[dst..dst + head_dim]);
                E::store(&v[src], &mut values[dst..dst + head_dim]);
            }
        }
        let shape = (kv_heads, head_dim, capacity);
        match &mut l.values {
            Values::F32 { k: ks, v: vs } => store((ks, vs), (k, v), shape, (slot, index)),
            Values::F16 { k: ks, v: vs } => store((ks, vs), (k, v), shape, (slot, index)),
        }
    }

    /// Attention of every token of a step over the keys its position may
    /// see, spread over the quantized matmuls' thread pool (one task per
    /// token and KV head, so the result does not depend on the thread
    /// count).
    ///
    /// slots, positions: [n]; q, out: [n, heads * head_dim].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend_batch(
        &self,
        layer: usize,
        ring: &Ring,
        slots: &[usize],
        positions: &[usize],
        q: &[f32],
        scores: ScoreParams,
        out: &mut [f32],
    ) -> Result<()> {
        let l = &self.layers[layer];
        let (kv_heads, head_dim) = (l.kv_heads, l.head_dim);
        let n = slots.len();
        if n == 0 {
            return Ok(());
        }
        if positions.len() != n || q.len() != out.len() || !q.len().is_multiple_of(n * kv_heads) {
            return Err(Error::Internal(format!(
                "attention over {n} slots, {} positions, {} query and {} output values",
                positions.len(),
                q.len(),
                out.len()
            )));
        }
        let group_len = q.len() / (n * kv_heads);
        let pool = candle_quant::kernels::global_pool()?;
        // A decode step of a model with one KV head (Gemma-3) would be a
        // single task: split the group's query heads over the threads
        // instead. Every head's scores, softmax and sum are its own, so any
        // split gives the same bits.
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
            // Each task owns its own output part: its lock cannot be
            // contended, and a poisoned one only means another part panicked.
            let mut out = outputs[i].lock().unwrap_or_else(|e| e.into_inner());
            let visible = ring.visible(layer, slots[t], positions[t]);
            let query = GroupQuery {
                slot: slots[t],
                g,
                q: &q[start..end],
                visible: &visible,
            };
            match &l.values {
                Values::F32 { k, v } => l.attend_group(k, v, &query, scores, &mut out),
                Values::F16 { k, v } => l.attend_group(k, v, &query, scores, &mut out),
            }
        };
        pool.run(outputs.len(), &task);
        Ok(())
    }
}

/// The query heads of KV head `g` of one token and the ring indices they see.
struct GroupQuery<'a> {
    slot: usize,
    g: usize,
    /// [heads_per_kv_head * head_dim]
    q: &'a [f32],
    visible: &'a [usize],
}

impl HostLayer {
    /// Two-pass softmax over the visible keys, so every score and weight is
    /// formed once. out: [heads_per_kv_head * head_dim].
    fn attend_group<E: KvElement>(
        &self,
        keys: &[E],
        values: &[E],
        query: &GroupQuery<'_>,
        scores: ScoreParams,
        out: &mut [f32],
    ) {
        let head_dim = self.head_dim;
        let visible = query.visible;
        let heads = query.q.len() / head_dim;
        let m = visible.len();
        let q: Vec<f32> = query.q.iter().map(|&x| E::round_operand(x)).collect();
        let base = (query.slot * self.kv_heads + query.g) * self.capacity;
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
                weights[h * m + j] = scores.score(dot);
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
    use half::f16;

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
        let mut ring = Ring::new(&[window], 2, 64, step).unwrap();
        let mut cache = HostKv::new(&[geometry], &ring, precision).unwrap();
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
                let index = ring.store(0, 1, p);
                let row = p * kv_heads * d..(p + 1) * kv_heads * d;
                cache.write(0, 1, index, &k[row.clone()], &v[row]);
            }
            let positions: Vec<usize> = chunk.clone().collect();
            let rows = chunk.start * heads * d..chunk.end * heads * d;
            cache
                .attend_batch(
                    0,
                    &ring,
                    &vec![1; positions.len()],
                    &positions,
                    &q[rows.clone()],
                    scores,
                    &mut got[rows],
                )
                .unwrap();
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
            let mut ring = Ring::new(&[None], 1, 16, 4).unwrap();
            let mut cache = HostKv::new(&[geometry], &ring, precision).unwrap();
            for p in 0..n {
                let index = ring.store(0, 0, p);
                cache.write(0, 0, index, &k[p * d..][..d], &v[p * d..][..d]);
            }
            let scores = ScoreParams {
                scale: 0.25,
                softcap: None,
            };
            let mut pair = vec![0f32; 2 * heads * d];
            cache
                .attend_batch(0, &ring, &[0, 0], &[n - 2, n - 1], &q, scores, &mut pair)
                .unwrap();
            let mut alone = vec![0f32; heads * d];
            let last = &q[heads * d..];
            cache
                .attend_batch(0, &ring, &[0], &[n - 1], last, scores, &mut alone)
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
        let ring = Ring::new(&[None], 1, 16, 4).unwrap();
        let f32_cache = HostKv::new(&[g], &ring, KvPrecision::F32).unwrap();
        let f16_cache = HostKv::new(&[g], &ring, KvPrecision::F16).unwrap();
        assert_eq!(f32_cache.bytes(), 2 * 2 * 16 * 8 * 4);
        assert_eq!(f16_cache.bytes(), 2 * 2 * 16 * 8 * 2);
    }
}
