//! The decoder: one forward pass for the LLaMA-style families, over a flat
//! batch of tokens that may come from several sequences at different
//! positions. It reads top to bottom like HIP-19 §Execution Flow:
//! embed -> N x [norm, attention with KV cache, norm, FFN] -> norm -> lm_head.

use crate::config::{DecoderConfig, RopeLayout};
use crate::kv_cache::{CachePosition, KvCache, LayerGeometry, ScoreParams};
use crate::weights::{RawTensor, TensorName, WeightSource};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use candle_quant::QLinear;

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

struct Layer {
    attention_norm: Tensor,
    query: QLinear,
    key: QLinear,
    value: QLinear,
    attention_output: QLinear,
    ffn_norm: Tensor,
    ffn_gate: QLinear,
    ffn_up: QLinear,
    ffn_down: QLinear,
}

pub struct Decoder {
    config: DecoderConfig,
    /// [vocab, hidden] in the checkpoint's own type, borrowed from its file:
    /// rows are dequantized as tokens look them up, so the table is never
    /// expanded to f32 in memory.
    embedding: RawTensor,
    layers: Vec<Layer>,
    output_norm: Tensor,
    output: QLinear,
    /// [max_context, head_dim] each, in the layout of `config.rope_layout`.
    rope_cos: Tensor,
    rope_sin: Tensor,
}

impl Decoder {
    /// Builds the decoder from `source`; `max_context` bounds the RoPE tables
    /// (and should match the KV cache).
    pub fn load(
        config: DecoderConfig,
        source: &dyn WeightSource,
        max_context: usize,
    ) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let (h, kv, hd) = (c.hidden_size, c.num_kv_heads * c.head_dim, c.head_dim);
        let q_out = c.num_heads * hd;
        let linear = |name: TensorName, out: usize, inp: usize| {
            source.tensor(&name)?.into_linear(&name, out, inp)
        };
        let vector = |name: TensorName, len: usize| -> Result<Tensor> {
            let values = source.tensor(&name)?.to_f32(&name, &[len])?;
            Ok(Tensor::from_vec(values, len, &Device::Cpu)?)
        };
        let embedding = source.tensor(&TensorName::TokenEmbedding)?;
        embedding.check_dims(&TensorName::TokenEmbedding, &[c.vocab_size, h])?;
        let layers = (0..c.num_layers)
            .map(|i| {
                Ok(Layer {
                    attention_norm: vector(TensorName::AttentionNorm(i), h)?,
                    query: linear(TensorName::Query(i), q_out, h)?,
                    key: linear(TensorName::Key(i), kv, h)?,
                    value: linear(TensorName::Value(i), kv, h)?,
                    attention_output: linear(TensorName::AttentionOutput(i), h, q_out)?,
                    ffn_norm: vector(TensorName::FfnNorm(i), h)?,
                    ffn_gate: linear(TensorName::FfnGate(i), c.intermediate_size, h)?,
                    ffn_up: linear(TensorName::FfnUp(i), c.intermediate_size, h)?,
                    ffn_down: linear(TensorName::FfnDown(i), h, c.intermediate_size)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output_name = if c.tie_word_embeddings || !source.contains(&TensorName::Output) {
            TensorName::TokenEmbedding
        } else {
            TensorName::Output
        };
        let output = linear(output_name, c.vocab_size, h)?;
        let (rope_cos, rope_sin) = rope_tables(c, max_context)?;
        Ok(Self {
            output_norm: vector(TensorName::OutputNorm, h)?,
            output,
            embedding,
            layers,
            rope_cos,
            rope_sin,
            config,
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The per-layer cache geometry this model needs.
    pub fn cache_geometry(&self) -> Vec<LayerGeometry> {
        let c = &self.config;
        vec![
            LayerGeometry {
                kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                window: None,
            };
            c.num_layers
        ]
    }

    /// Runs `batch`, writing its keys and values into `cache`, and returns
    /// the logits `[batch.logits_for.len(), vocab]`.
    pub fn forward(&self, batch: &Batch, cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.config;
        self.check_batch(batch, cache)?;
        let n = batch.tokens.len();
        let (heads, kv_heads, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let eps = c.rms_norm_eps;

        let mut residual = self.embed(&batch.tokens)?;
        let positions = Tensor::new(
            batch
                .positions
                .iter()
                .map(|&p| p as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            &Device::Cpu,
        )?;
        let cos = self.rope_cos.index_select(&positions, 0)?;
        let sin = self.rope_sin.index_select(&positions, 0)?;
        let scores = ScoreParams {
            scale: (hd as f32).powf(-0.5),
            softcap: None,
        };

        let mut x = candle_ops::rms_norm(&residual, &self.layers[0].attention_norm, eps)?;
        for (index, layer) in self.layers.iter().enumerate() {
            // Attention: project, rotate, cache, attend.
            let q = self.rotate(&layer.query.forward(&x)?, heads, &cos, &sin)?;
            let k = self.rotate(&layer.key.forward(&x)?, kv_heads, &cos, &sin)?;
            let v = layer.value.forward(&x)?;
            let (q, k, v) = (
                q.to_vec2::<f32>()?,
                k.to_vec2::<f32>()?,
                v.to_vec2::<f32>()?,
            );
            for t in 0..n {
                cache.write(index, batch.slots[t], batch.positions[t], &k[t], &v[t]);
            }
            let mut attended = vec![0f32; n * heads * hd];
            for (t, out) in attended.chunks_mut(heads * hd).enumerate() {
                let at = CachePosition {
                    layer: index,
                    slot: batch.slots[t],
                    position: batch.positions[t],
                };
                cache.attend(at, &q[t], scores, out);
            }
            let attended = Tensor::from_vec(attended, (n, heads * hd), &Device::Cpu)?;
            let attention = layer.attention_output.forward(&attended)?;
            let (h, sum) =
                candle_ops::rms_norm_residual(&attention, &residual, &layer.ffn_norm, eps)?;
            residual = sum;

            // Feed-forward (SwiGLU).
            let gate = layer.ffn_gate.forward(&h)?.silu()?;
            let ffn = layer
                .ffn_down
                .forward(&(gate * layer.ffn_up.forward(&h)?)?)?;
            let next_norm = self
                .layers
                .get(index + 1)
                .map_or(&self.output_norm, |l| &l.attention_norm);
            (x, residual) = candle_ops::rms_norm_residual(&ffn, &residual, next_norm, eps)?;
        }
        for t in 0..n {
            let slot = batch.slots[t];
            cache.set_len(slot, cache.len(slot).max(batch.positions[t] + 1));
        }
        let rows = Tensor::new(
            batch
                .logits_for
                .iter()
                .map(|&i| i as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            &Device::Cpu,
        )?;
        Ok(self.output.forward(&x.index_select(&rows, 0)?)?)
    }

    /// The embedding rows of `tokens`: [n, hidden] f32.
    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
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
        Ok(Tensor::from_vec(
            rows,
            (tokens.len(), hidden),
            &Device::Cpu,
        )?)
    }

    /// Applies RoPE to `[n, heads * head_dim]` projections at the batch's
    /// positions (`cos`, `sin`: [n, head_dim]).
    fn rotate(&self, x: &Tensor, heads: usize, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let hd = self.config.head_dim;
        let x = x.reshape((n, heads, hd))?.transpose(0, 1)?.unsqueeze(0)?;
        let rotated = match self.config.rope_layout {
            RopeLayout::RotateHalf => candle_ops::apply_rotary_emb(&x.contiguous()?, cos, sin)?,
            RopeLayout::Interleaved => {
                candle_ops::apply_rotary_emb_interleaved(&x.contiguous()?, cos, sin)?
            }
        };
        Ok(rotated
            .squeeze(0)?
            .transpose(0, 1)?
            .reshape((n, heads * hd))?)
    }

    fn check_batch(&self, batch: &Batch, cache: &KvCache) -> Result<()> {
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
            if position >= self.rope_cos.dim(0)? || position >= cache.max_context() {
                return Err(Error::ContextExceeded {
                    needed: position + 1,
                    max_context: cache.max_context().min(self.rope_cos.dim(0)?),
                });
            }
        }
        Ok(())
    }
}

/// cos/sin tables `[max_context, head_dim]` with inverse frequencies
/// `theta^(-2i/d)`, laid out for `config.rope_layout`.
fn rope_tables(c: &DecoderConfig, max_context: usize) -> Result<(Tensor, Tensor)> {
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
            let angle = p as f64 * c.rope_theta.powf(-2.0 * pair as f64 / hd as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (max_context, hd), &Device::Cpu)?,
        Tensor::from_vec(sin, (max_context, hd), &Device::Cpu)?,
    ))
}
