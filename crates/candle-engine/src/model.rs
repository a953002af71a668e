//! The decoder: one forward pass for the LLaMA-style families, over a flat
//! batch of tokens that may come from several sequences at different
//! positions. It reads top to bottom like HIP-19 §Execution Flow:
//! embed -> N x [norm, attention with KV cache, norm, FFN] -> norm -> lm_head.
//! The families differ only through `DecoderConfig` fields, which switch the
//! optional steps below (biases, q/k norms, sandwich norms, softcaps...).

use crate::config::{DecoderConfig, RopeLayout};
use crate::kv_cache::{KvCache, LayerGeometry, ScoreParams};
use crate::weights::{LayerTensor, RawTensor, TensorName, WeightSource};
use crate::{rows, Error, Result};
use candle_core::{Device, Tensor};
use candle_quant::QLinear;

mod tensors;

/// Where and how the decoder computes.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// Our quantized CPU kernels on host buffers: the fastest on a CPU.
    #[default]
    Native,
    /// candle tensor ops (the HIP-19 op surface of `candle-ops`) and
    /// upstream `QMatMul` on a device: CUDA and Metal, or the CPU, where it
    /// is checked against the native path.
    Tensors(Device),
}

impl Backend {
    /// `cpu` for the native path, `cuda:N` or `metal:N` for the tensor path
    /// on that device. Fails with a clear error for anything else, or for a
    /// device this build or machine lacks.
    pub fn from_name(name: &str) -> Result<Self> {
        let ordinal = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|n| n.parse::<usize>().ok())
        };
        let error = |reason: String| Error::Device {
            name: name.to_string(),
            reason,
        };
        let (device, feature) = if name == "cpu" {
            return Ok(Backend::Native);
        } else if let Some(n) = ordinal("cuda:") {
            (Device::new_cuda(n), "cuda")
        } else if let Some(n) = ordinal("metal:") {
            (Device::new_metal(n), "metal")
        } else {
            return Err(error("unknown device; use cpu, cuda:N or metal:N".into()));
        };
        device.map(Backend::Tensors).map_err(|e| {
            error(format!(
                "{e} (GPU support is compiled in with `cargo build --release --features {feature}`)"
            ))
        })
    }

    fn same_as(&self, other: &Backend) -> bool {
        match (self, other) {
            (Backend::Native, Backend::Native) => true,
            (Backend::Tensors(a), Backend::Tensors(b)) => a.same_device(b),
            _ => false,
        }
    }
}

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

/// A projection `x W^T (+ b)`.
struct Projection {
    weight: QLinear,
    /// [out_features]
    bias: Option<Vec<f32>>,
}

struct Layer {
    attention_norm: Vec<f32>,
    query: Projection,
    key: Projection,
    value: Projection,
    /// [head_dim] each, applied to every head before RoPE.
    query_norm: Option<Vec<f32>>,
    key_norm: Option<Vec<f32>>,
    attention_output: QLinear,
    post_attention_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    ffn_gate: QLinear,
    ffn_up: QLinear,
    ffn_down: QLinear,
    post_ffn_norm: Option<Vec<f32>>,
    window: Option<usize>,
    /// Rotates with the sliding-window tables rather than the global ones.
    local_rope: bool,
}

/// cos and sin tables `[max_context, head_dim]`.
struct RopeTables {
    head_dim: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTables {
    fn positions(&self) -> usize {
        self.cos.len() / self.head_dim
    }

    /// (cos, sin): [head_dim] each.
    fn at(&self, position: usize) -> (&[f32], &[f32]) {
        let row = position * self.head_dim..(position + 1) * self.head_dim;
        (&self.cos[row.clone()], &self.sin[row])
    }
}

pub struct Decoder {
    config: DecoderConfig,
    /// [vocab, hidden] in the checkpoint's own type, borrowed from its file:
    /// rows are dequantized as tokens look them up, so the table is never
    /// expanded to f32 in memory.
    embedding: RawTensor,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: QLinear,
    /// In the layout of `config.rope_layout`: `global_rope` for full
    /// attention layers (and every layer when `local_rope` is `None`),
    /// `local_rope` for sliding-window layers with their own base.
    global_rope: RopeTables,
    local_rope: Option<RopeTables>,
    backend: Backend,
    /// The small per-layer vectors and RoPE tables on the device, for
    /// `Backend::Tensors`.
    device_vectors: Option<tensors::DeviceVectors>,
}

impl Decoder {
    /// Builds the decoder from `source` for our CPU kernels; `max_context`
    /// bounds the RoPE tables (and should match the KV cache).
    pub fn load(
        config: DecoderConfig,
        source: &dyn WeightSource,
        max_context: usize,
    ) -> Result<Self> {
        Self::load_on(config, source, max_context, Backend::Native)
    }

    /// [`Decoder::load`] for `backend`: with `Backend::Tensors` the weights
    /// are copied to its device.
    pub fn load_on(
        config: DecoderConfig,
        source: &dyn WeightSource,
        max_context: usize,
        backend: Backend,
    ) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let (h, kv, hd) = (c.hidden_size, c.num_kv_heads * c.head_dim, c.head_dim);
        let (q_out, ffn) = (c.num_heads * hd, c.intermediate_size);
        let linear = |name: TensorName, out: usize, inp: usize| {
            source.tensor(&name)?.into_linear(&name, out, inp, &backend)
        };
        let values = |raw: RawTensor, name: &dyn std::fmt::Debug, len: usize, offset: f32| {
            let values = raw.to_f32(name, &[len])?;
            Ok::<_, Error>(values.into_iter().map(|v| v + offset).collect::<Vec<_>>())
        };
        let norm = |name: TensorName| values(source.tensor(&name)?, &name, h, c.norm_weight_offset);
        let layer_vector = |i: usize, part: LayerTensor, len: usize, offset: f32| {
            values(source.layer_tensor(i, part)?, &part, len, offset)
        };
        let layer_norm = |i: usize, part: LayerTensor, len: usize, wanted: bool| {
            wanted
                .then(|| layer_vector(i, part, len, c.norm_weight_offset))
                .transpose()
        };
        let embedding = source.tensor(&TensorName::TokenEmbedding)?;
        embedding.check_dims(&TensorName::TokenEmbedding, &[c.vocab_size, h])?;
        let layers = (0..c.num_layers)
            .map(|i| {
                let attention_norm = norm(TensorName::AttentionNorm(i))?;
                // Phi-3 stacks q/k/v and gate/up by rows; split them into
                // views of the same bytes.
                let fused_qkv = !source.contains(&TensorName::Query(i))
                    && source.contains_layer_tensor(i, LayerTensor::FusedQkv);
                let fused_gate_up = !source.contains(&TensorName::FfnGate(i))
                    && source.contains_layer_tensor(i, LayerTensor::FusedGateUp);
                let [query, key, value] = if !fused_qkv {
                    [
                        linear(TensorName::Query(i), q_out, h)?,
                        linear(TensorName::Key(i), kv, h)?,
                        linear(TensorName::Value(i), kv, h)?,
                    ]
                } else {
                    let name = format!("{:?} of layer {i}", LayerTensor::FusedQkv);
                    let raw = source.layer_tensor(i, LayerTensor::FusedQkv)?;
                    parts(raw.split_rows(&name, &[q_out, kv, kv], h, &backend)?, &name)?
                };
                let [ffn_gate, ffn_up] = if !fused_gate_up {
                    [
                        linear(TensorName::FfnGate(i), ffn, h)?,
                        linear(TensorName::FfnUp(i), ffn, h)?,
                    ]
                } else {
                    let name = format!("{:?} of layer {i}", LayerTensor::FusedGateUp);
                    let raw = source.layer_tensor(i, LayerTensor::FusedGateUp)?;
                    parts(raw.split_rows(&name, &[ffn, ffn], h, &backend)?, &name)?
                };
                let bias = |part: LayerTensor, len: usize| {
                    c.qkv_bias
                        .then(|| layer_vector(i, part, len, 0.0))
                        .transpose()
                };
                let window = c.layer_windows[i];
                Ok(Layer {
                    attention_norm,
                    query: Projection {
                        weight: query,
                        bias: bias(LayerTensor::QueryBias, q_out)?,
                    },
                    key: Projection {
                        weight: key,
                        bias: bias(LayerTensor::KeyBias, kv)?,
                    },
                    value: Projection {
                        weight: value,
                        bias: bias(LayerTensor::ValueBias, kv)?,
                    },
                    query_norm: layer_norm(i, LayerTensor::QueryNorm, hd, c.qk_norm)?,
                    key_norm: layer_norm(i, LayerTensor::KeyNorm, hd, c.qk_norm)?,
                    attention_output: linear(TensorName::AttentionOutput(i), h, q_out)?,
                    post_attention_norm: layer_norm(
                        i,
                        LayerTensor::PostAttentionNorm,
                        h,
                        c.sandwich_norms,
                    )?,
                    ffn_norm: norm(TensorName::FfnNorm(i))?,
                    ffn_gate,
                    ffn_up,
                    ffn_down: linear(TensorName::FfnDown(i), h, ffn)?,
                    post_ffn_norm: layer_norm(i, LayerTensor::PostFfnNorm, h, c.sandwich_norms)?,
                    window,
                    local_rope: window.is_some() && c.sliding_rope_theta.is_some(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output_name = if c.tie_word_embeddings || !source.contains(&TensorName::Output) {
            TensorName::TokenEmbedding
        } else {
            TensorName::Output
        };
        let output = linear(output_name, c.vocab_size, h)?;
        let global_rope = rope_tables(c, c.rope_theta, c.rope_linear_factor, max_context)?;
        let local_rope = c
            .sliding_rope_theta
            .map(|theta| rope_tables(c, theta, 1.0, max_context))
            .transpose()?;
        let mut decoder = Self {
            output_norm: norm(TensorName::OutputNorm)?,
            output,
            embedding,
            layers,
            global_rope,
            local_rope,
            config,
            backend,
            device_vectors: None,
        };
        if let Backend::Tensors(device) = &decoder.backend {
            decoder.device_vectors = Some(tensors::DeviceVectors::upload(&decoder, device)?);
        }
        Ok(decoder)
    }

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
            exact(&mut layer.query.weight)?;
            exact(&mut layer.key.weight)?;
            exact(&mut layer.value.weight)?;
            exact(&mut layer.attention_output)?;
            exact(&mut layer.ffn_gate)?;
            exact(&mut layer.ffn_up)?;
            exact(&mut layer.ffn_down)?;
        }
        exact(&mut self.output)?;
        Ok(self)
    }

    /// Where the decoder computes; its KV cache must be built for the same
    /// backend ([`KvCache::for_backend`]).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The per-layer cache geometry this model needs.
    pub fn cache_geometry(&self) -> Vec<LayerGeometry> {
        let c = &self.config;
        self.layers
            .iter()
            .map(|layer| LayerGeometry {
                kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                window: layer.window,
            })
            .collect()
    }

    /// Runs `batch`, writing its keys and values into `cache`, and returns
    /// the logits `[batch.logits_for.len(), vocab]`.
    pub fn forward(&self, batch: &Batch, cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.config;
        self.check_batch(batch, cache)?;
        if let Some(vectors) = &self.device_vectors {
            return tensors::forward(self, vectors, batch, cache);
        }
        let n = batch.tokens.len();
        let (h, hd, eps) = (c.hidden_size, c.head_dim, c.rms_norm_eps);
        let (q_width, kv_width) = (c.num_heads * hd, c.num_kv_heads * hd);
        let scores = ScoreParams {
            scale: c.attention_scale,
            softcap: c.attn_logit_softcap,
        };

        let mut residual = self.embed(&batch.tokens)?;
        if let Some(scale) = c.embedding_scale {
            residual.iter_mut().for_each(|v| *v *= scale);
        }
        // Buffers for the whole step, reused by every layer.
        let buffer = |width: usize| vec![0f32; n * width];
        let (mut x, mut normed, mut projected) = (buffer(h), buffer(h), buffer(h));
        let (mut q, mut k, mut v) = (buffer(q_width), buffer(kv_width), buffer(kv_width));
        let mut attended = buffer(q_width);
        let (mut gate, mut up) = (buffer(c.intermediate_size), buffer(c.intermediate_size));

        rows::rms_norm(&residual, &self.layers[0].attention_norm, eps, &mut x);
        for (index, layer) in self.layers.iter().enumerate() {
            // Attention: project, normalize heads, rotate, cache, attend.
            QLinear::forward_group(
                &[&layer.query.weight, &layer.key.weight, &layer.value.weight],
                &x,
                n,
                &mut [&mut q, &mut k, &mut v],
            )?;
            for (projection, out) in [
                (&layer.query, &mut q),
                (&layer.key, &mut k),
                (&layer.value, &mut v),
            ] {
                if let Some(bias) = &projection.bias {
                    rows::add_bias(out, bias);
                }
            }
            if let Some(norm) = &layer.query_norm {
                rows::rms_norm_in_place(&mut q, norm, eps);
            }
            if let Some(norm) = &layer.key_norm {
                rows::rms_norm_in_place(&mut k, norm, eps);
            }
            let rope = match &self.local_rope {
                Some(local) if layer.local_rope => local,
                _ => &self.global_rope,
            };
            for (t, &position) in batch.positions.iter().enumerate() {
                let (cos, sin) = rope.at(position);
                rows::rope(
                    &mut q[t * q_width..(t + 1) * q_width],
                    cos,
                    sin,
                    c.rope_layout,
                );
                let k_row = &mut k[t * kv_width..(t + 1) * kv_width];
                rows::rope(k_row, cos, sin, c.rope_layout);
                let v_row = &v[t * kv_width..(t + 1) * kv_width];
                cache.write(index, batch.slots[t], position, k_row, v_row)?;
            }
            cache.attend_batch(
                index,
                &batch.slots,
                &batch.positions,
                &q,
                scores,
                &mut attended,
            )?;
            layer
                .attention_output
                .forward_slice(&attended, n, &mut projected)?;
            if let Some(norm) = &layer.post_attention_norm {
                rows::rms_norm_in_place(&mut projected, norm, eps);
            }
            rows::add_assign(&mut residual, &projected);
            rows::rms_norm(&residual, &layer.ffn_norm, eps, &mut normed);

            // Gated feed-forward.
            QLinear::forward_group(
                &[&layer.ffn_gate, &layer.ffn_up],
                &normed,
                n,
                &mut [&mut gate, &mut up],
            )?;
            rows::gate(&mut gate, &up, c.activation);
            layer.ffn_down.forward_slice(&gate, n, &mut projected)?;
            if let Some(norm) = &layer.post_ffn_norm {
                rows::rms_norm_in_place(&mut projected, norm, eps);
            }
            rows::add_assign(&mut residual, &projected);
            let next_norm = self
                .layers
                .get(index + 1)
                .map_or(&self.output_norm, |l| &l.attention_norm);
            rows::rms_norm(&residual, next_norm, eps, &mut x);
        }
        record_lengths(batch, cache);
        let wanted: Vec<f32> = batch
            .logits_for
            .iter()
            .flat_map(|&i| x[i * h..(i + 1) * h].iter().copied())
            .collect();
        let rows_out = batch.logits_for.len();
        let mut logits = vec![0f32; rows_out * c.vocab_size];
        self.output.forward_slice(&wanted, rows_out, &mut logits)?;
        if let Some(cap) = c.final_logit_softcap {
            rows::softcap(&mut logits, cap);
        }
        Ok(Tensor::from_vec(
            logits,
            (rows_out, c.vocab_size),
            &Device::Cpu,
        )?)
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
        if !cache.backend().same_as(&self.backend) {
            return Err(Error::InvalidBatch(format!(
                "the KV cache was built for {:?} but the decoder runs on {:?}; build it with KvCache::for_backend(.., decoder.backend())",
                cache.backend(),
                self.backend
            )));
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
        for (&slot, &position) in batch.slots.iter().zip(&batch.positions) {
            if slot >= cache.slots() {
                return Err(Error::InvalidBatch(format!(
                    "slot {slot} but the cache has {}",
                    cache.slots()
                )));
            }
            let rope_positions = self.global_rope.positions();
            if position >= rope_positions || position >= cache.max_context() {
                return Err(Error::ContextExceeded {
                    needed: position + 1,
                    max_context: cache.max_context().min(rope_positions),
                });
            }
        }
        Ok(())
    }
}

/// Records the positions a step wrote as held by their sequences.
fn record_lengths(batch: &Batch, cache: &mut KvCache) {
    for (&slot, &position) in batch.slots.iter().zip(&batch.positions) {
        cache.set_len(slot, cache.len(slot).max(position + 1));
    }
}

/// The `N` parts of a fused projection named `name`.
fn parts<const N: usize>(linears: Vec<QLinear>, name: &str) -> Result<[QLinear; N]> {
    let found = linears.len();
    linears
        .try_into()
        .map_err(|_| Error::InvalidModel(format!("{name} split into {found} parts, expected {N}")))
}

/// cos/sin tables `[max_context, head_dim]` with inverse frequencies
/// `theta^(-2i/d)` at positions `p / linear_factor`, laid out for
/// `config.rope_layout`.
fn rope_tables(
    c: &DecoderConfig,
    theta: f64,
    linear_factor: f64,
    max_context: usize,
) -> Result<RopeTables> {
    let hd = c.head_dim;
    let half = hd / 2;
    let mut cos = Vec::with_capacity(max_context * hd);
    let mut sin = Vec::with_capacity(max_context * hd);
    for p in 0..max_context {
        for j in 0..hd {
            let pair = match c.rope_layout {
                RopeLayout::RotateHalf => j % half,
                RopeLayout::Interleaved => j / 2,
            };
            let angle = p as f64 / linear_factor * theta.powf(-2.0 * pair as f64 / hd as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    Ok(RopeTables {
        head_dim: hd,
        cos,
        sin,
    })
}
