//! The decoder: one forward pass for the LLaMA-style families, over a flat
//! batch of tokens that may come from several sequences at different
//! positions. [`Decoder::run`] reads top to bottom like HIP-19 §Execution
//! Flow: embed -> N x [norm, attention with KV cache, norm, FFN] -> norm ->
//! lm_head. The families differ only through `DecoderConfig` fields, which
//! switch the optional steps (biases, q/k norms, sandwich norms, softcaps...).
//!
//! The pass is written once over [`Step`], the operations of one step on
//! one backend: [`host`] runs them with our CPU kernels on host buffers,
//! [`device`] as candle tensor ops on a device.

mod device;
mod host;
mod load;

use crate::backend::Backend;
use crate::config::{Activation, DecoderConfig};
use crate::kv_cache::{CacheOptions, KvCache, LayerGeometry};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use candle_quant::QLinear;
use std::sync::atomic::AtomicU64;

/// Tokens to run through the model in one step. Token `i` belongs to the
/// sequence in cache slot `slots[i]` at position `positions[i]`; each
/// sequence's tokens appear in order and continue where its cache ends.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub positions: Vec<usize>,
    pub slots: Vec<usize>,
    /// Indices of the tokens whose next-token logits are wanted (usually the
    /// last token of each sequence).
    pub logits_for: Vec<usize>,
}

impl Batch {
    /// A batch holding `tokens` of one sequence, continuing at `start`,
    /// asking for the logits of every token.
    pub fn single(slot: usize, start: usize, tokens: &[u32]) -> Self {
        let n = tokens.len();
        Self {
            tokens: tokens.to_vec(),
            positions: (start..start + n).collect(),
            slots: vec![slot; n],
            logits_for: (0..n).collect(),
        }
    }
}

/// The linear layers of one decoder layer, in the backend's form.
struct Layer {
    query: QLinear,
    key: QLinear,
    value: QLinear,
    attention_output: QLinear,
    ffn_gate: QLinear,
    ffn_up: QLinear,
    ffn_down: QLinear,
    window: Option<usize>,
    /// Rotates with the sliding-window tables rather than the global ones.
    local_rope: bool,
}

/// The norm weights and biases of one layer, as the backend holds vectors.
struct LayerVectors<V> {
    attention_norm: V,
    /// [heads * head_dim], [kv_heads * head_dim] twice (Qwen2).
    biases: Option<[V; 3]>,
    /// [head_dim] each, applied to every head before RoPE.
    query_norm: Option<V>,
    key_norm: Option<V>,
    post_attention_norm: Option<V>,
    ffn_norm: V,
    post_ffn_norm: Option<V>,
}

/// cos and sin `[max_context, head_dim]`, in the layout of the config's
/// `rope_layout`.
struct Rope<V> {
    cos: V,
    sin: V,
}

/// Every vector of the model (norms, biases, RoPE tables), host `Vec<f32>`
/// or device `Tensor`.
struct Vectors<V> {
    layers: Vec<LayerVectors<V>>,
    output_norm: V,
    /// For full-attention layers (and every layer when `local_rope` is
    /// `None`); `local_rope` for sliding-window layers with their own base.
    global_rope: Rope<V>,
    local_rope: Option<Rope<V>>,
}

impl<V> Vectors<V> {
    /// The same vectors in another form (to upload them to a device).
    fn try_map<W>(&self, f: &dyn Fn(&V) -> Result<W>) -> Result<Vectors<W>> {
        let optional = |v: &Option<V>| v.as_ref().map(f).transpose();
        let rope = |r: &Rope<V>| -> Result<Rope<W>> {
            Ok(Rope {
                cos: f(&r.cos)?,
                sin: f(&r.sin)?,
            })
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerVectors {
                    attention_norm: f(&l.attention_norm)?,
                    biases: match &l.biases {
                        Some([q, k, v]) => Some([f(q)?, f(k)?, f(v)?]),
                        None => None,
                    },
                    query_norm: optional(&l.query_norm)?,
                    key_norm: optional(&l.key_norm)?,
                    post_attention_norm: optional(&l.post_attention_norm)?,
                    ffn_norm: f(&l.ffn_norm)?,
                    post_ffn_norm: optional(&l.post_ffn_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Vectors {
            layers,
            output_norm: f(&self.output_norm)?,
            global_rope: rope(&self.global_rope)?,
            local_rope: self.local_rope.as_ref().map(rope).transpose()?,
        })
    }
}

/// The vectors where the backend computes on them.
enum PlacedVectors {
    Host(Vectors<Vec<f32>>),
    Device(Device, Vectors<Tensor>),
}

/// The operations of one forward step on one backend. `Rows` holds
/// activations `[tokens, width]`, `Vector` a weight vector. Every operation
/// writes into a buffer of the step, so the host backend allocates once a
/// step however many layers run.
trait Step {
    type Rows;
    type Vector;

    /// A `[tokens, width]` buffer.
    fn buffer(&self, width: usize) -> Result<Self::Rows>;
    /// The embedding rows `[tokens, hidden]`, looked up on the host.
    fn embedded(&self, rows: Vec<f32>) -> Result<Self::Rows>;
    fn scale(&self, x: &mut Self::Rows, factor: f32) -> Result<()>;
    /// RMSNorm of each row of `x` by `weight` into `out`.
    fn rms_norm(&self, x: &Self::Rows, weight: &Self::Vector, out: &mut Self::Rows) -> Result<()>;
    /// RMSNorm in place, over runs of `weight.len()` values (whole rows, or
    /// each head of a row).
    fn rms_norm_in_place(&self, x: &mut Self::Rows, weight: &Self::Vector) -> Result<()>;
    /// `outs[i] = x W_iᵀ` for layers that read the same input.
    fn linear(
        &self,
        layers: &[&QLinear],
        x: &Self::Rows,
        outs: &mut [&mut Self::Rows],
    ) -> Result<()>;
    fn add_bias(&self, x: &mut Self::Rows, bias: &Self::Vector) -> Result<()>;
    /// Rotates every head of each token's row by the angles of its position.
    fn rope(&self, x: &mut Self::Rows, rope: &Rope<Self::Vector>) -> Result<()>;
    /// Writes the step's keys and values into the cache's `layer` and
    /// attends: `out` = attention of `q` over what each token may see.
    fn attend(
        &mut self,
        layer: usize,
        q: &Self::Rows,
        k: &Self::Rows,
        v: &Self::Rows,
        out: &mut Self::Rows,
    ) -> Result<()>;
    fn add_assign(&self, acc: &mut Self::Rows, x: &Self::Rows) -> Result<()>;
    /// `gate = activation(gate) * up`.
    fn gate(&self, gate: &mut Self::Rows, up: &Self::Rows, activation: Activation) -> Result<()>;
    /// Logits `[rows.len(), vocab]` of the tokens at `rows`, soft-capped if
    /// `softcap` is set.
    fn logits(
        &self,
        x: &Self::Rows,
        rows: &[usize],
        output: &QLinear,
        softcap: Option<f32>,
    ) -> Result<Tensor>;
}

/// Tells decoders apart, so that a cache serves only the decoder that made it.
static NEXT_DECODER_ID: AtomicU64 = AtomicU64::new(0);

pub struct Decoder {
    config: DecoderConfig,
    /// [vocab, hidden] in the checkpoint's own type, borrowed from its file:
    /// rows are dequantized as tokens look them up, so the table is never
    /// expanded to f32 in memory.
    embedding: crate::weights::RawTensor,
    layers: Vec<Layer>,
    output: QLinear,
    vectors: PlacedVectors,
    backend: Backend,
    /// The positions the RoPE tables cover.
    max_context: usize,
    id: u64,
}

impl Decoder {
    /// The exact reference of this model: every linear layer's weights
    /// dequantized to f32 and multiplied in f32 without quantizing the
    /// activations ([`QLinear::to_f32`]). With an f32 KV cache it computes
    /// what the quantized file means, free of any kernel's rounding.
    pub fn into_exact(mut self) -> Result<Self> {
        if !matches!(self.backend, Backend::Native) {
            return Err(Error::InvalidModel(
                "the exact reference runs on the CPU backend only".into(),
            ));
        }
        let exact = |l: &mut QLinear| -> Result<()> {
            *l = l.to_f32()?;
            Ok(())
        };
        for layer in &mut self.layers {
            exact(&mut layer.query)?;
            exact(&mut layer.key)?;
            exact(&mut layer.value)?;
            exact(&mut layer.attention_output)?;
            exact(&mut layer.ffn_gate)?;
            exact(&mut layer.ffn_up)?;
            exact(&mut layer.ffn_down)?;
        }
        exact(&mut self.output)?;
        Ok(self)
    }

    /// Where the decoder computes.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The most positions a sequence may hold (the RoPE tables' length).
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// A KV cache for this decoder: its backend, its layers' geometry and
    /// at most its context.
    pub fn new_cache(&self, options: CacheOptions) -> Result<KvCache> {
        let max_context = match options.max_context {
            None => self.max_context,
            Some(n) if n <= self.max_context => n,
            Some(n) => {
                return Err(Error::InvalidCacheGeometry(format!(
                    "max_context {n} exceeds the {} positions the decoder was loaded for",
                    self.max_context
                )))
            }
        };
        let c = &self.config;
        let geometry: Vec<LayerGeometry> = self
            .layers
            .iter()
            .map(|layer| LayerGeometry {
                kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                window: layer.window,
            })
            .collect();
        KvCache::new(&geometry, options, max_context, &self.backend, self.id)
    }

    /// Runs `batch`, writing its keys and values into `cache`, and returns
    /// the logits `[batch.logits_for.len(), vocab]`.
    pub fn forward(&self, batch: &Batch, cache: &mut KvCache) -> Result<Tensor> {
        self.check_batch(batch, cache)?;
        let logits = match &self.vectors {
            PlacedVectors::Host(vectors) => {
                let mut step = host::HostStep::new(&self.config, batch, cache)?;
                self.run(&mut step, vectors, batch)?
            }
            PlacedVectors::Device(device, vectors) => {
                let mut step = device::DeviceStep::new(&self.config, device, batch, cache)?;
                self.run(&mut step, vectors, batch)?
            }
        };
        cache.record_step(&batch.slots, &batch.positions);
        Ok(logits)
    }

    /// The forward pass of one step on the backend of `step`.
    fn run<S: Step>(
        &self,
        step: &mut S,
        vectors: &Vectors<S::Vector>,
        batch: &Batch,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (q_width, kv_width) = (c.num_heads * hd, c.num_kv_heads * hd);

        let mut residual = step.embedded(self.embed(&batch.tokens)?)?;
        if let Some(scale) = c.embedding_scale {
            step.scale(&mut residual, scale)?;
        }
        // Buffers for the whole step, reused by every layer.
        let (mut x, mut normed, mut projected) =
            (step.buffer(h)?, step.buffer(h)?, step.buffer(h)?);
        let (mut q, mut k, mut v) = (
            step.buffer(q_width)?,
            step.buffer(kv_width)?,
            step.buffer(kv_width)?,
        );
        let mut attended = step.buffer(q_width)?;
        let (mut gate, mut up) = (
            step.buffer(c.intermediate_size)?,
            step.buffer(c.intermediate_size)?,
        );

        step.rms_norm(&residual, &vectors.layers[0].attention_norm, &mut x)?;
        for (index, (layer, lv)) in self.layers.iter().zip(&vectors.layers).enumerate() {
            // Attention: project, normalize heads, rotate, cache, attend.
            step.linear(
                &[&layer.query, &layer.key, &layer.value],
                &x,
                &mut [&mut q, &mut k, &mut v],
            )?;
            if let Some([q_bias, k_bias, v_bias]) = &lv.biases {
                step.add_bias(&mut q, q_bias)?;
                step.add_bias(&mut k, k_bias)?;
                step.add_bias(&mut v, v_bias)?;
            }
            if let Some(norm) = &lv.query_norm {
                step.rms_norm_in_place(&mut q, norm)?;
            }
            if let Some(norm) = &lv.key_norm {
                step.rms_norm_in_place(&mut k, norm)?;
            }
            let rope = match &vectors.local_rope {
                Some(local) if layer.local_rope => local,
                _ => &vectors.global_rope,
            };
            step.rope(&mut q, rope)?;
            step.rope(&mut k, rope)?;
            step.attend(index, &q, &k, &v, &mut attended)?;
            step.linear(&[&layer.attention_output], &attended, &mut [&mut projected])?;
            if let Some(norm) = &lv.post_attention_norm {
                step.rms_norm_in_place(&mut projected, norm)?;
            }
            step.add_assign(&mut residual, &projected)?;
            step.rms_norm(&residual, &lv.ffn_norm, &mut normed)?;

            // Gated feed-forward.
            step.linear(
                &[&layer.ffn_gate, &layer.ffn_up],
                &normed,
                &mut [&mut gate, &mut up],
            )?;
            step.gate(&mut gate, &up, c.activation)?;
            step.linear(&[&layer.ffn_down], &gate, &mut [&mut projected])?;
            if let Some(norm) = &lv.post_ffn_norm {
                step.rms_norm_in_place(&mut projected, norm)?;
            }
            step.add_assign(&mut residual, &projected)?;
            let next_norm = vectors
                .layers
                .get(index + 1)
                .map_or(&vectors.output_norm, |l| &l.attention_norm);
            step.rms_norm(&residual, next_norm, &mut x)?;
        }
        step.logits(&x, &batch.logits_for, &self.output, c.final_logit_softcap)
    }

    /// The embedding rows of `tokens`: [n, hidden].
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let hidden = self.config.hidden_size;
        let row_bytes = self.embedding.ty.row_bytes(hidden)?;
        let table = self.embedding.bytes.as_slice();
        let mut rows = Vec::with_capacity(tokens.len() * hidden);
        for &t in tokens {
            let start = t as usize * row_bytes;
            rows.extend(candle_quant::quant::dequantize(
                self.embedding.ty,
                &table[start..start + row_bytes],
                hidden,
            )?);
        }
        Ok(rows)
    }

    fn check_batch(&self, batch: &Batch, cache: &KvCache) -> Result<()> {
        if cache.owner() != self.id {
            return Err(Error::ForeignCache);
        }
        let n = batch.tokens.len();
        if n == 0 || batch.positions.len() != n || batch.slots.len() != n {
            return Err(Error::InvalidBatch(format!(
                "{n} tokens with {} positions and {} slots",
                batch.positions.len(),
                batch.slots.len()
            )));
        }
        if let Some(&bad) = batch
            .tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(Error::InvalidBatch(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        if let Some(&bad) = batch.logits_for.iter().find(|&&i| i >= n) {
            return Err(Error::InvalidBatch(format!(
                "logits requested for token {bad} of {n}"
            )));
        }
        let mut per_slot = vec![0usize; cache.slots()];
        for (&slot, &position) in batch.slots.iter().zip(&batch.positions) {
            if slot >= cache.slots() {
                return Err(Error::InvalidBatch(format!(
                    "slot {slot} but the cache has {}",
                    cache.slots()
                )));
            }
            if position >= cache.max_context() {
                return Err(Error::ContextExceeded {
                    needed: position + 1,
                    max_context: cache.max_context(),
                });
            }
            // A sliding-window ring holds the window plus one step: a longer
            // step would overwrite keys its own earlier tokens still need.
            per_slot[slot] += 1;
            if per_slot[slot] > cache.max_step_tokens() {
                return Err(Error::InvalidBatch(format!(
                    "more than {} tokens of slot {slot} in one step (the cache's max_step_tokens)",
                    cache.max_step_tokens()
                )));
            }
        }
        Ok(())
    }
}
