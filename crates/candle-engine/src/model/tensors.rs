//! The decoder as candle tensor ops, for `Backend::Tensors`: the steps of
//! `Decoder::forward` composed from the HIP-19 op surface (`candle-ops`) and
//! upstream `QMatMul`, so that they run on any device candle supports (CUDA,
//! Metal). On the CPU our own kernels are faster; this path runs there to be
//! checked against them and against transformers.
//!
//! Only the embedding lookup stays on the host: the table stays in the
//! file's mapping, and a step uploads just its tokens' rows.

use super::{record_lengths, Batch, Decoder, RopeTables};
use crate::config::{Activation, RopeLayout};
use crate::kv_cache::{KvCache, KvPrecision};
use crate::Result;
use candle_core::{DType, Device, Tensor};

/// A layer's norm weights and biases on the device.
struct LayerVectors {
    attention_norm: Tensor,
    biases: [Option<Tensor>; 3],
    query_norm: Option<Tensor>,
    key_norm: Option<Tensor>,
    post_attention_norm: Option<Tensor>,
    ffn_norm: Tensor,
    post_ffn_norm: Option<Tensor>,
}

/// cos and sin `[max_context, head_dim]` on the device.
struct DeviceRope {
    cos: Tensor,
    sin: Tensor,
}

/// What the tensor path needs on the device besides the linear layers
/// (which `QLinear` already holds there).
pub(super) struct DeviceVectors {
    device: Device,
    layers: Vec<LayerVectors>,
    output_norm: Tensor,
    global_rope: DeviceRope,
    local_rope: Option<DeviceRope>,
}

impl DeviceVectors {
    pub(super) fn upload(decoder: &Decoder, device: &Device) -> Result<Self> {
        let vector = |v: &[f32]| Tensor::from_slice(v, v.len(), device);
        let optional = |v: &Option<Vec<f32>>| v.as_deref().map(vector).transpose();
        let rope = |t: &RopeTables| -> Result<DeviceRope> {
            let shape = (t.positions(), t.head_dim);
            Ok(DeviceRope {
                cos: Tensor::from_slice(&t.cos, shape, device)?,
                sin: Tensor::from_slice(&t.sin, shape, device)?,
            })
        };
        let layers = decoder
            .layers
            .iter()
            .map(|l| {
                Ok(LayerVectors {
                    attention_norm: vector(&l.attention_norm)?,
                    biases: [
                        optional(&l.query.bias)?,
                        optional(&l.key.bias)?,
                        optional(&l.value.bias)?,
                    ],
                    query_norm: optional(&l.query_norm)?,
                    key_norm: optional(&l.key_norm)?,
                    post_attention_norm: optional(&l.post_attention_norm)?,
                    ffn_norm: vector(&l.ffn_norm)?,
                    post_ffn_norm: optional(&l.post_ffn_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            device: device.clone(),
            layers,
            output_norm: vector(&decoder.output_norm)?,
            global_rope: rope(&decoder.global_rope)?,
            local_rope: decoder.local_rope.as_ref().map(rope).transpose()?,
        })
    }
}

/// The batch's tokens grouped by sequence: each slot with the indices of its
/// tokens, in batch order.
fn sequences(batch: &Batch) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (t, &slot) in batch.slots.iter().enumerate() {
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, tokens)) => tokens.push(t),
            None => groups.push((slot, vec![t])),
        }
    }
    groups
}

fn indices(values: impl Iterator<Item = usize>, device: &Device) -> Result<Tensor> {
    let values: Vec<u32> = values.map(|v| v as u32).collect();
    let n = values.len();
    Ok(Tensor::from_vec(values, n, device)?)
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_ops::rms_norm(x, weight, eps)?)
}

fn norm_if(x: Tensor, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    match weight {
        Some(w) => rms_norm(&x, w, eps),
        None => Ok(x),
    }
}

/// Rotates `x` `[heads, tokens, head_dim]` by the angles of each token's
/// position.
fn rotate(x: &Tensor, rope: &DeviceRope, positions: &Tensor, layout: RopeLayout) -> Result<Tensor> {
    let (cos, sin) = (
        rope.cos.index_select(positions, 0)?,
        rope.sin.index_select(positions, 0)?,
    );
    let x = x.unsqueeze(0)?;
    let rotated = match layout {
        RopeLayout::RotateHalf => candle_ops::apply_rotary_emb(&x, &cos, &sin)?,
        RopeLayout::Interleaved => candle_ops::apply_rotary_emb_interleaved(&x, &cos, &sin)?,
    };
    Ok(rotated.squeeze(0)?)
}

/// `[tokens, heads * head_dim]` as `[heads, tokens, head_dim]`.
fn heads_first(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let tokens = x.dim(0)?;
    Ok(x.reshape((tokens, heads, head_dim))?
        .transpose(0, 1)?
        .contiguous()?)
}

/// Rounds to f16 and back: where the f16 cache's queries and attention
/// weights meet its f16 keys and values, as on the native path.
fn round_like(x: Tensor, precision: KvPrecision) -> Result<Tensor> {
    Ok(match precision {
        KvPrecision::F32 => x,
        KvPrecision::F16 => x.to_dtype(DType::F16)?.to_dtype(DType::F32)?,
    })
}

pub(super) fn forward(
    decoder: &Decoder,
    vectors: &DeviceVectors,
    batch: &Batch,
    cache: &mut KvCache,
) -> Result<Tensor> {
    let c = &decoder.config;
    let device = &vectors.device;
    let n = batch.tokens.len();
    let (h, hd, eps) = (c.hidden_size, c.head_dim, c.rms_norm_eps);
    let (heads, kv_heads) = (c.num_heads, c.num_kv_heads);
    let group = heads / kv_heads;
    let precision = cache.precision();

    let mut residual = Tensor::from_vec(decoder.embed(&batch.tokens)?, (n, h), device)?;
    if let Some(scale) = c.embedding_scale {
        residual = residual.affine(scale as f64, 0.0)?;
    }
    let positions = indices(batch.positions.iter().copied(), device)?;
    let sequences = sequences(batch);
    // Attention runs sequence by sequence; `restore` puts its outputs back
    // in batch order.
    let grouped_order: Vec<usize> = sequences.iter().flat_map(|(_, t)| t.clone()).collect();
    let mut restore = vec![0; n];
    for (at, &t) in grouped_order.iter().enumerate() {
        restore[t] = at;
    }
    let restore = indices(restore.into_iter(), device)?;

    // Masks of this step by (slot, window), built after the first such
    // layer has written the step's positions.
    let mut masks: Vec<((usize, Option<usize>), Tensor)> = Vec::new();
    let mut x = rms_norm(&residual, &vectors.layers[0].attention_norm, eps)?;
    for (index, (layer, lv)) in decoder.layers.iter().zip(&vectors.layers).enumerate() {
        let project = |weight: &candle_quant::QLinear, bias: &Option<Tensor>| -> Result<Tensor> {
            let y = weight.forward(&x)?;
            Ok(match bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            })
        };
        let q = project(&layer.query.weight, &lv.biases[0])?;
        let k = project(&layer.key.weight, &lv.biases[1])?;
        let v = project(&layer.value.weight, &lv.biases[2])?;
        let q = norm_if(heads_first(&q, heads, hd)?, lv.query_norm.as_ref(), eps)?;
        let k = norm_if(heads_first(&k, kv_heads, hd)?, lv.key_norm.as_ref(), eps)?;
        let rope = match &vectors.local_rope {
            Some(local) if layer.local_rope => local,
            _ => &vectors.global_rope,
        };
        let q = rotate(&q, rope, &positions, c.rope_layout)?;
        let k = rotate(&k, rope, &positions, c.rope_layout)?
            .transpose(0, 1)?
            .reshape((n, kv_heads * hd))?;

        let mut attended = Vec::with_capacity(sequences.len());
        for (slot, tokens) in &sequences {
            let rows = indices(tokens.iter().copied(), device)?;
            let (seq_k, seq_v) = (k.index_select(&rows, 0)?, v.index_select(&rows, 0)?);
            // One copy per run of consecutive positions (a whole prompt
            // chunk is one run).
            let mut start = 0;
            while start < tokens.len() {
                let first = batch.positions[tokens[start]];
                let run = tokens[start..]
                    .iter()
                    .enumerate()
                    .take_while(|&(i, &t)| batch.positions[t] == first + i)
                    .count();
                cache.write_rows(
                    index,
                    *slot,
                    first,
                    &seq_k.narrow(0, start, run)?,
                    &seq_v.narrow(0, start, run)?,
                )?;
                start += run;
            }
            let seq_positions: Vec<usize> = tokens.iter().map(|&t| batch.positions[t]).collect();
            let last = seq_positions.iter().copied().max().unwrap_or(0);
            let (keys, values) = cache.visible_rows(index, *slot, last)?;
            let mask = match masks.iter().find(|(key, _)| *key == (*slot, layer.window)) {
                Some((_, mask)) => mask.clone(),
                None => {
                    let mask = cache.mask(index, *slot, &seq_positions, device)?;
                    masks.push(((*slot, layer.window), mask.clone()));
                    mask
                }
            };
            let entries = keys.dim(0)?;
            let t = tokens.len();
            // Grouped-query attention without repeating keys: the `group`
            // query heads of one KV head are stacked as rows of one matrix.
            let q = round_like(q.index_select(&rows, 1)?, precision)?.reshape((
                kv_heads,
                group * t,
                hd,
            ))?;
            let keys = heads_first(&keys, kv_heads, hd)?;
            let values = heads_first(&values, kv_heads, hd)?;
            let mut scores = q
                .matmul(&keys.t()?)?
                .affine(c.attention_scale as f64, 0.0)?;
            if let Some(cap) = c.attn_logit_softcap {
                scores = scores
                    .affine(1.0 / cap as f64, 0.0)?
                    .tanh()?
                    .affine(cap as f64, 0.0)?;
            }
            let scores = scores
                .reshape((kv_heads, group, t, entries))?
                .broadcast_add(&mask)?;
            let weights =
                candle_ops::softmax(&scores, 3)?.reshape((kv_heads, group * t, entries))?;
            let out = round_like(weights, precision)?.matmul(&values)?;
            attended.push(out.reshape((heads, t, hd))?);
        }
        let attended = Tensor::cat(&attended, 1)?
            .index_select(&restore, 1)?
            .transpose(0, 1)?
            .reshape((n, heads * hd))?;

        let projected = layer.attention_output.forward(&attended)?;
        let projected = norm_if(projected, lv.post_attention_norm.as_ref(), eps)?;
        residual = (residual + projected)?;
        let normed = rms_norm(&residual, &lv.ffn_norm, eps)?;
        let gate = layer.ffn_gate.forward(&normed)?;
        let up = layer.ffn_up.forward(&normed)?;
        let gate = match c.activation {
            Activation::Silu => gate.silu()?,
            Activation::GeluTanh => gate.gelu()?,
        };
        let projected = layer.ffn_down.forward(&(gate * up)?)?;
        let projected = norm_if(projected, lv.post_ffn_norm.as_ref(), eps)?;
        residual = (residual + projected)?;
        let next_norm = vectors
            .layers
            .get(index + 1)
            .map_or(&vectors.output_norm, |l| &l.attention_norm);
        x = rms_norm(&residual, next_norm, eps)?;
    }
    record_lengths(batch, cache);
    let wanted = x.index_select(&indices(batch.logits_for.iter().copied(), device)?, 0)?;
    let mut logits = decoder.output.forward(&wanted)?;
    if let Some(cap) = c.final_logit_softcap {
        logits = logits
            .affine(1.0 / cap as f64, 0.0)?
            .tanh()?
            .affine(cap as f64, 0.0)?;
    }
    Ok(logits)
}
