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

use crate::{Error, Result};

/// Geometry of one layer's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerGeometry {
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `None` for full attention, `Some(w)` when a query sees only the last
    /// `w` positions (itself included).
    pub window: Option<usize>,
}

#[derive(Debug)]
struct LayerCache {
    geometry: LayerGeometry,
    capacity: usize,
    /// [slots, kv_heads, capacity, head_dim]
    k: Vec<f32>,
    /// [slots, kv_heads, capacity, head_dim]
    v: Vec<f32>,
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
    /// Tokens held for each slot (its next position).
    lengths: Vec<usize>,
}

impl KvCache {
    /// Allocates the cache: `max_context` positions per sequence, `slots`
    /// sequences, and at most `max_step_tokens` new tokens per sequence in one
    /// forward step (prompts are fed in chunks of at most that size).
    pub fn new(
        layers: &[LayerGeometry],
        slots: usize,
        max_context: usize,
        max_step_tokens: usize,
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
                Ok(LayerCache {
                    geometry,
                    capacity,
                    k: vec![0.0; elems],
                    v: vec![0.0; elems],
                    positions: vec![EMPTY; slots * capacity],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            slots,
            max_context,
            max_step_tokens,
            lengths: vec![0; slots],
        })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn max_context(&self) -> usize {
        self.max_context
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
            .map(|l| (l.k.len() + l.v.len()) * 4 + l.positions.len() * 4)
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

    /// Records that `slot` now holds `len` positions (after a forward step
    /// wrote them into every layer).
    pub fn set_len(&mut self, slot: usize, len: usize) {
        self.lengths[slot] = len;
    }

    /// Stores one token's keys and values for `layer`.
    ///
    /// k, v: [kv_heads * head_dim], head-major.
    pub fn write(&mut self, layer: usize, slot: usize, position: usize, k: &[f32], v: &[f32]) {
        let l = &mut self.layers[layer];
        let LayerGeometry {
            kv_heads, head_dim, ..
        } = l.geometry;
        let index = position % l.capacity;
        for h in 0..kv_heads {
            let dst = ((slot * kv_heads + h) * l.capacity + index) * head_dim;
            l.k[dst..dst + head_dim].copy_from_slice(&k[h * head_dim..(h + 1) * head_dim]);
            l.v[dst..dst + head_dim].copy_from_slice(&v[h * head_dim..(h + 1) * head_dim]);
        }
        l.positions[slot * l.capacity + index] = position as u32;
    }

    /// Attention of one query token at `position` of sequence `slot` over
    /// the cached keys it may see (positions `<= position`, within the
    /// layer's window), with grouped-query heads and online softmax.
    ///
    /// q: [heads * head_dim]; out: [heads * head_dim].
    pub fn attend(&self, at: CachePosition, q: &[f32], scores: ScoreParams, out: &mut [f32]) {
        let CachePosition {
            layer,
            slot,
            position,
        } = at;
        let ScoreParams { scale, softcap } = scores;
        let l = &self.layers[layer];
        let LayerGeometry {
            kv_heads,
            head_dim,
            window,
        } = l.geometry;
        let heads = q.len() / head_dim;
        let group = heads / kv_heads;
        let oldest = window.map_or(0, |w| (position + 1).saturating_sub(w));
        let positions = &l.positions[slot * l.capacity..(slot + 1) * l.capacity];
        // Until the ring wraps, index i holds position i: scan only the
        // indices that can be visible instead of the whole capacity.
        let scan = if position < l.capacity {
            oldest..position + 1
        } else {
            0..l.capacity
        };
        for h in 0..heads {
            let q_head = &q[h * head_dim..(h + 1) * head_dim];
            let base = (slot * kv_heads + h / group) * l.capacity;
            let acc = &mut out[h * head_dim..(h + 1) * head_dim];
            acc.fill(0.0);
            let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
            for (index, &p) in positions.iter().enumerate().take(scan.end).skip(scan.start) {
                if p == EMPTY || (p as usize) > position || (p as usize) < oldest {
                    continue;
                }
                let row = (base + index) * head_dim;
                let mut score = dot(q_head, &l.k[row..row + head_dim]) * scale;
                if let Some(cap) = softcap {
                    score = cap * (score / cap).tanh();
                }
                if score > max {
                    let correction = (max - score).exp();
                    sum *= correction;
                    acc.iter_mut().for_each(|a| *a *= correction);
                    max = score;
                }
                let weight = (score - max).exp();
                sum += weight;
                for (a, &v) in acc.iter_mut().zip(&l.v[row..row + head_dim]) {
                    *a += weight * v;
                }
            }
            if sum > 0.0 {
                let inv = sum.recip();
                acc.iter_mut().for_each(|a| *a *= inv);
            }
        }
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut partial = [0f32; LANES];
    let split = a.len() / LANES * LANES;
    for (ca, cb) in a[..split]
        .chunks_exact(LANES)
        .zip(b[..split].chunks_exact(LANES))
    {
        for lane in 0..LANES {
            partial[lane] += ca[lane] * cb[lane];
        }
    }
    partial.iter().sum::<f32>()
        + a[split..]
            .iter()
            .zip(&b[split..])
            .map(|(x, y)| x * y)
            .sum::<f32>()
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

    fn run_cache(window: Option<usize>, step: usize) {
        let (heads, kv_heads, d, n) = (4, 2, 8, 37);
        let q = random(n * heads * d, 1);
        let k = random(n * kv_heads * d, 2);
        let v = random(n * kv_heads * d, 3);
        let geometry = LayerGeometry {
            kv_heads,
            head_dim: d,
            window,
        };
        let mut cache = KvCache::new(&[geometry], 2, 64, step).unwrap();
        let mut got = vec![0f32; n * heads * d];
        // Feed the sequence in chunks of `step` tokens into slot 1, as the
        // engine does: write the chunk, then let each of its tokens attend.
        for chunk_start in (0..n).step_by(step) {
            let chunk = chunk_start..(chunk_start + step).min(n);
            for p in chunk.clone() {
                cache.write(
                    0,
                    1,
                    p,
                    &k[p * kv_heads * d..][..kv_heads * d],
                    &v[p * kv_heads * d..][..kv_heads * d],
                );
            }
            for p in chunk {
                let out = &mut got[p * heads * d..][..heads * d];
                let at = CachePosition {
                    layer: 0,
                    slot: 1,
                    position: p,
                };
                let scores = ScoreParams {
                    scale: 1.0 / (d as f32).sqrt(),
                    softcap: None,
                };
                cache.attend(at, &q[p * heads * d..][..heads * d], scores, out);
            }
        }
        let expected = reference(&q, &k, &v, (heads, kv_heads, d, n), window);
        let max_diff = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Both are f32 online softmax over <= 37 keys in different orders:
        // a few ulps of values of order 1.
        assert!(
            max_diff < 1e-5,
            "window {window:?}, step {step}: max diff {max_diff}"
        );
    }

    #[test]
    fn full_attention_cache_matches_dense_causal_attention() {
        run_cache(None, 1);
        run_cache(None, 16);
    }

    #[test]
    fn sliding_window_ring_wraps_and_matches_dense_windowed_attention() {
        // Capacity is window + step = 13 < 37 positions: the ring wraps.
        run_cache(Some(5), 8);
        run_cache(Some(5), 1);
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
