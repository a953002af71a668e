//! The BERT-family network on the host: every linear layer is a
//! [`QLinear`] (our kernels for quantized/F16 weights, candle's matmul for
//! F32), everything else works on `Vec<f32>` rows.
//!
//! A batch is packed, not padded: the texts' tokens are stacked into one
//! matrix so the linear layers see every token at once, and attention runs
//! per text over its own rows. No padding means no masks, no wasted rows,
//! and each text's result does not depend on what it is batched with.

use super::config::{EncoderActivation, EncoderConfig, EncoderFamily};
use crate::weights::{RawTensor, WeightSource};
use crate::{rows, Error, Result};
use candle_quant::{QLinear, QuantType, WeightBytes};
use std::sync::Mutex;

/// One text's tokens: ids and segment (token type) ids, special tokens
/// included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSeq {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

/// How a checkpoint names the encoder's tensors.
#[derive(Clone, Debug)]
pub(crate) enum Naming {
    /// Hugging Face names after `prefix` (`""`, `"bert."`, `"roberta."`).
    Hf { prefix: String },
    /// llama.cpp's names for its `bert` architecture.
    Gguf,
}

/// The encoder's tensors, by role.
#[derive(Clone, Copy, Debug)]
enum Part {
    Words,
    Positions,
    TokenTypes,
    EmbeddingNorm,
    Query(usize),
    Key(usize),
    Value(usize),
    AttentionOutput(usize),
    AttentionNorm(usize),
    Up(usize),
    Down(usize),
    OutputNorm(usize),
}

impl Naming {
    /// The base name of `part` (`.weight`/`.bias` follow).
    fn base(&self, part: Part) -> String {
        match self {
            Naming::Hf { prefix } => {
                let layer = |i: usize, rest: &str| format!("{prefix}encoder.layer.{i}.{rest}");
                match part {
                    Part::Words => format!("{prefix}embeddings.word_embeddings"),
                    Part::Positions => format!("{prefix}embeddings.position_embeddings"),
                    Part::TokenTypes => format!("{prefix}embeddings.token_type_embeddings"),
                    Part::EmbeddingNorm => format!("{prefix}embeddings.LayerNorm"),
                    Part::Query(i) => layer(i, "attention.self.query"),
                    Part::Key(i) => layer(i, "attention.self.key"),
                    Part::Value(i) => layer(i, "attention.self.value"),
                    Part::AttentionOutput(i) => layer(i, "attention.output.dense"),
                    Part::AttentionNorm(i) => layer(i, "attention.output.LayerNorm"),
                    Part::Up(i) => layer(i, "intermediate.dense"),
                    Part::Down(i) => layer(i, "output.dense"),
                    Part::OutputNorm(i) => layer(i, "output.LayerNorm"),
                }
            }
            Naming::Gguf => match part {
                Part::Words => "token_embd".into(),
                Part::Positions => "position_embd".into(),
                Part::TokenTypes => "token_types".into(),
                Part::EmbeddingNorm => "token_embd_norm".into(),
                Part::Query(i) => format!("blk.{i}.attn_q"),
                Part::Key(i) => format!("blk.{i}.attn_k"),
                Part::Value(i) => format!("blk.{i}.attn_v"),
                Part::AttentionOutput(i) => format!("blk.{i}.attn_output"),
                Part::AttentionNorm(i) => format!("blk.{i}.attn_output_norm"),
                Part::Up(i) => format!("blk.{i}.ffn_up"),
                Part::Down(i) => format!("blk.{i}.ffn_down"),
                Part::OutputNorm(i) => format!("blk.{i}.layer_output_norm"),
            },
        }
    }
}

/// The encoder's tensors as (base name in `from`, base name in `to`,
/// whether it has a bias), embeddings first: what a converter renames.
pub(crate) fn renames(
    config: &EncoderConfig,
    from: &Naming,
    to: &Naming,
) -> Vec<(String, String, bool)> {
    let mut parts = vec![
        (Part::Words, false),
        (Part::Positions, false),
        (Part::TokenTypes, false),
        (Part::EmbeddingNorm, true),
    ];
    for i in 0..config.num_layers {
        parts.extend([
            (Part::Query(i), true),
            (Part::Key(i), true),
            (Part::Value(i), true),
            (Part::AttentionOutput(i), true),
            (Part::AttentionNorm(i), true),
            (Part::Up(i), true),
            (Part::Down(i), true),
            (Part::OutputNorm(i), true),
        ]);
    }
    parts
        .into_iter()
        .map(|(part, bias)| (from.base(part), to.base(part), bias))
        .collect()
}

/// Fetches `key`, whose absence is an error naming it.
pub(crate) fn required(source: &dyn WeightSource, key: &str) -> Result<RawTensor> {
    source
        .get(key)?
        .ok_or_else(|| Error::MissingTensor(key.to_string()))
}

/// An embedding table kept in the checkpoint's bytes and type: rows are
/// converted to f32 when looked up, so a large vocabulary costs no copy.
struct Table {
    key: String,
    ty: QuantType,
    rows: usize,
    width: usize,
    bytes: WeightBytes,
}

impl Table {
    fn load(source: &dyn WeightSource, key: String, width: usize) -> Result<Self> {
        let raw = required(source, &key)?;
        let [rows, w] = raw.dims[..] else {
            return Err(Error::TensorShape {
                name: key,
                expected: vec![0, width],
                got: raw.dims,
            });
        };
        if w != width {
            return Err(Error::TensorShape {
                name: key,
                expected: vec![rows, width],
                got: raw.dims,
            });
        }
        // Row-wise lookups need whole blocks per row.
        raw.ty.row_bytes(width)?;
        Ok(Self {
            key,
            ty: raw.ty,
            rows,
            width,
            bytes: raw.bytes,
        })
    }

    /// Adds row `index` to `out`.
    fn add_row(&self, index: usize, out: &mut [f32]) -> Result<()> {
        if index >= self.rows {
            return Err(Error::InvalidBatch(format!(
                "index {index} is outside {} ({} rows)",
                self.key, self.rows
            )));
        }
        let row_bytes = self.ty.row_bytes(self.width)?;
        let bytes = &self.bytes.as_slice()[index * row_bytes..(index + 1) * row_bytes];
        let values = candle_quant::quant::dequantize(self.ty, bytes, self.width)?;
        rows::add_assign(out, &values);
        Ok(())
    }
}

/// `y = x Wᵀ + b`.
pub(crate) struct Linear {
    weight: QLinear,
    bias: Vec<f32>,
}

impl Linear {
    fn load(source: &dyn WeightSource, base: &str, out: usize, inp: usize) -> Result<Self> {
        let weight = required(source, &format!("{base}.weight"))?.into_linear(
            out,
            inp,
            &crate::Backend::Native,
        )?;
        let bias = required(source, &format!("{base}.bias"))?.to_f32(&[out])?;
        Ok(Self { weight, bias })
    }

    /// Loads `base` when the checkpoint has its weight.
    pub(crate) fn load_optional(
        source: &dyn WeightSource,
        base: &str,
        inp: usize,
    ) -> Result<Option<Self>> {
        let key = format!("{base}.weight");
        let Some(raw) = source.get(&key)? else {
            return Ok(None);
        };
        let out = raw.dims.first().copied().unwrap_or(0);
        let weight = raw.into_linear(out, inp, &crate::Backend::Native)?;
        let bias = required(source, &format!("{base}.bias"))?.to_f32(&[out])?;
        Ok(Some(Self { weight, bias }))
    }

    pub(crate) fn out_features(&self) -> usize {
        self.weight.out_features()
    }

    pub(crate) fn forward(&self, x: &[f32], tokens: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; tokens * self.out_features()];
        self.weight.forward_slice(x, tokens, &mut out)?;
        rows::add_bias(&mut out, &self.bias);
        Ok(out)
    }

    /// Several layers over one input (the input is prepared once).
    fn forward_group(layers: &[&Linear], x: &[f32], tokens: usize) -> Result<Vec<Vec<f32>>> {
        let mut outs: Vec<Vec<f32>> = layers
            .iter()
            .map(|l| vec![0f32; tokens * l.out_features()])
            .collect();
        let weights: Vec<&QLinear> = layers.iter().map(|l| &l.weight).collect();
        let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        QLinear::forward_group(&weights, x, tokens, &mut slices)?;
        for (out, layer) in outs.iter_mut().zip(layers) {
            rows::add_bias(out, &layer.bias);
        }
        Ok(outs)
    }
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(source: &dyn WeightSource, base: &str, width: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: required(source, &format!("{base}.weight"))?.to_f32(&[width])?,
            bias: required(source, &format!("{base}.bias"))?.to_f32(&[width])?,
            eps: eps as f32,
        })
    }

    /// Normalises every row of `x` in place (biased variance, as PyTorch).
    fn apply(&self, x: &mut [f32]) {
        let width = self.weight.len();
        for row in x.chunks_mut(width) {
            let mean = row.iter().sum::<f32>() / width as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    up: Linear,
    down: Linear,
    output_norm: LayerNorm,
}

/// The encoder: embeddings, then `num_layers` post-norm transformer layers
/// with bidirectional attention.
pub(crate) struct Encoder {
    config: EncoderConfig,
    words: Table,
    positions: Table,
    token_types: Option<Table>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl Encoder {
    pub(crate) fn load(
        config: EncoderConfig,
        source: &dyn WeightSource,
        naming: &Naming,
    ) -> Result<Self> {
        let (h, ff, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
        );
        let base = |part| naming.base(part);
        let words = Table::load(source, format!("{}.weight", base(Part::Words)), h)?;
        if words.rows != config.vocab_size {
            return Err(Error::InvalidModel(format!(
                "the vocabulary has {} tokens but {} has {} rows",
                config.vocab_size, words.key, words.rows
            )));
        }
        let positions = Table::load(source, format!("{}.weight", base(Part::Positions)), h)?;
        if positions.rows < config.max_positions {
            return Err(Error::InvalidModel(format!(
                "{} has {} rows; the model declares {} positions",
                positions.key, positions.rows, config.max_positions
            )));
        }
        // llama.cpp drops the token-type table of models with one type.
        let types_key = format!("{}.weight", base(Part::TokenTypes));
        let token_types = match source.get(&types_key)? {
            Some(_) => Some(Table::load(source, types_key, h)?),
            None => None,
        };
        let embedding_norm = LayerNorm::load(source, &base(Part::EmbeddingNorm), h, eps)?;
        let layers = (0..config.num_layers)
            .map(|i| {
                Ok(Layer {
                    query: Linear::load(source, &base(Part::Query(i)), h, h)?,
                    key: Linear::load(source, &base(Part::Key(i)), h, h)?,
                    value: Linear::load(source, &base(Part::Value(i)), h, h)?,
                    attention_output: Linear::load(source, &base(Part::AttentionOutput(i)), h, h)?,
                    attention_norm: LayerNorm::load(source, &base(Part::AttentionNorm(i)), h, eps)?,
                    up: Linear::load(source, &base(Part::Up(i)), ff, h)?,
                    down: Linear::load(source, &base(Part::Down(i)), h, ff)?,
                    output_norm: LayerNorm::load(source, &base(Part::OutputNorm(i)), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            words,
            positions,
            token_types,
            embedding_norm,
            layers,
        })
    }

    pub(crate) fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The last hidden states of `seqs`, stacked: `[Σ len, hidden]`.
    pub(crate) fn forward(&self, seqs: &[TokenSeq]) -> Result<Vec<f32>> {
        let h = self.config.hidden_size;
        let tokens: usize = seqs.iter().map(|s| s.ids.len()).sum();
        let mut x = self.embed(seqs)?;
        let spans = spans(seqs);
        for layer in &self.layers {
            let [q, k, v]: [Vec<f32>; 3] =
                Linear::forward_group(&[&layer.query, &layer.key, &layer.value], &x, tokens)?
                    .try_into()
                    .map_err(|_| Error::Internal("q/k/v projections".into()))?;
            let context = self.attention(&q, &k, &v, &spans)?;
            let mut attended = layer.attention_output.forward(&context, tokens)?;
            rows::add_assign(&mut attended, &x);
            layer.attention_norm.apply(&mut attended);
            let mut inner = layer.up.forward(&attended, tokens)?;
            activate(&mut inner, self.config.activation);
            x = layer.down.forward(&inner, tokens)?;
            rows::add_assign(&mut x, &attended);
            layer.output_norm.apply(&mut x);
        }
        debug_assert_eq!(x.len(), tokens * h);
        Ok(x)
    }

    fn embed(&self, seqs: &[TokenSeq]) -> Result<Vec<f32>> {
        let h = self.config.hidden_size;
        let tokens: usize = seqs.iter().map(|s| s.ids.len()).sum();
        let mut x = vec![0f32; tokens * h];
        let mut rows_out = x.chunks_mut(h);
        for seq in seqs {
            if seq.ids.len() > self.config.max_tokens() {
                return Err(Error::InvalidBatch(format!(
                    "a sequence of {} tokens is longer than the model's {} positions",
                    seq.ids.len(),
                    self.config.max_tokens()
                )));
            }
            if seq.type_ids.len() != seq.ids.len() {
                return Err(Error::InvalidBatch(format!(
                    "{} token ids but {} token type ids",
                    seq.ids.len(),
                    seq.type_ids.len()
                )));
            }
            for (i, (&id, &ty)) in seq.ids.iter().zip(&seq.type_ids).enumerate() {
                let row = rows_out
                    .next()
                    .ok_or_else(|| Error::Internal("embedding rows".into()))?;
                self.words.add_row(id as usize, row)?;
                self.positions
                    .add_row(self.config.position_offset + i, row)?;
                match &self.token_types {
                    Some(types) => types.add_row(ty as usize, row)?,
                    None if ty != 0 => {
                        return Err(Error::InvalidBatch(format!(
                            "token type {ty} given to a model with one token type"
                        )))
                    }
                    None => {}
                }
            }
        }
        self.embedding_norm.apply(&mut x);
        Ok(x)
    }

    /// Softmax attention of every text over its own tokens, one task per
    /// (text, head); each task's arithmetic is its own, so the thread count
    /// does not change a bit.
    fn attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        spans: &[(usize, usize)],
    ) -> Result<Vec<f32>> {
        let (h, heads) = (self.config.hidden_size, self.config.num_heads);
        let d = self.config.head_dim();
        let scale = 1.0 / (d as f32).sqrt();
        let results: Vec<Mutex<Vec<f32>>> = (0..spans.len() * heads)
            .map(|_| Mutex::new(Vec::new()))
            .collect();
        let task = |i: usize| {
            let ((start, len), head) = (spans[i / heads], i % heads);
            let col = head * d;
            let row = |m: &'_ [f32], t: usize| -> Vec<f32> {
                m[(start + t) * h + col..(start + t) * h + col + d].to_vec()
            };
            let keys: Vec<Vec<f32>> = (0..len).map(|t| row(k, t)).collect();
            let values: Vec<Vec<f32>> = (0..len).map(|t| row(v, t)).collect();
            let mut out = vec![0f32; len * d];
            let mut scores = vec![0f32; len];
            for (t, out_row) in out.chunks_mut(d).enumerate() {
                let query = &q[(start + t) * h + col..(start + t) * h + col + d];
                for (s, key) in scores.iter_mut().zip(&keys) {
                    *s = dot(query, key) * scale;
                }
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                let mut sum = 0.0;
                for s in scores.iter_mut() {
                    *s = rows::exp(*s - max);
                    sum += *s;
                }
                for (&p, value) in scores.iter().zip(&values) {
                    for (o, &x) in out_row.iter_mut().zip(value) {
                        *o += p * x;
                    }
                }
                out_row.iter_mut().for_each(|o| *o /= sum);
            }
            // Each task owns its own slot: the lock is never contended.
            *results[i].lock().unwrap_or_else(|e| e.into_inner()) = out;
        };
        candle_quant::kernels::global_pool()?.run(results.len(), &task);
        let tokens = q.len() / h;
        let mut context = vec![0f32; tokens * h];
        for (i, slot) in results.into_iter().enumerate() {
            let ((start, _), head) = (spans[i / heads], i % heads);
            let part = slot.into_inner().unwrap_or_else(|e| e.into_inner());
            for (t, values) in part.chunks(d).enumerate() {
                let at = (start + t) * h + head * d;
                context[at..at + d].copy_from_slice(values);
            }
        }
        Ok(context)
    }
}

/// Where each text's rows start in the packed matrix, and how many.
fn spans(seqs: &[TokenSeq]) -> Vec<(usize, usize)> {
    let mut start = 0;
    seqs.iter()
        .map(|s| {
            let span = (start, s.ids.len());
            start += s.ids.len();
            span
        })
        .collect()
}

/// A dot product in eight independent lanes, so that it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

pub(crate) fn activate(x: &mut [f32], activation: EncoderActivation) {
    match activation {
        EncoderActivation::Gelu => {
            for v in x {
                *v = 0.5 * *v * (1.0 + rows::erf(*v * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
        EncoderActivation::GeluTanh => {
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            for v in x {
                let u = SQRT_2_OVER_PI * (*v + 0.044_715 * *v * *v * *v);
                *v = 0.5 * *v * (1.0 + u.tanh());
            }
        }
        EncoderActivation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

/// The Hugging Face prefix under which `source` keeps the encoder:
/// none (a bare `BertModel`), or the task head's `bert.`/`roberta.`.
pub(crate) fn hf_naming(source: &dyn WeightSource, family: EncoderFamily) -> Result<Naming> {
    for prefix in ["", family.task_prefix()] {
        let naming = Naming::Hf {
            prefix: prefix.to_string(),
        };
        if source
            .get(&format!("{}.weight", naming.base(Part::Words)))?
            .is_some()
        {
            return Ok(naming);
        }
    }
    Err(Error::MissingTensor(format!(
        "embeddings.word_embeddings.weight (also looked for {}embeddings.word_embeddings.weight)",
        family.task_prefix()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_gelu_matches_known_values() {
        // Φ(1) = 0.841344746..., Φ(-2) = 0.022750132...
        let mut x = [1.0f32, -2.0, 0.0];
        activate(&mut x, EncoderActivation::Gelu);
        assert!((x[0] - 0.841_344_7).abs() < 1e-6, "{}", x[0]);
        assert!((x[1] + 2.0 * 0.022_750_13).abs() < 1e-6, "{}", x[1]);
        assert_eq!(x[2], 0.0);
    }

    #[test]
    fn dot_handles_tails() {
        let a: Vec<f32> = (0..13).map(|i| i as f32).collect();
        let b = vec![1f32; 13];
        assert_eq!(dot(&a, &b), 78.0);
    }
}
