//! The BERT-family network on the host, on `Vec<f32>` rows. F32 linear
//! layers are repacked once at load for [`sgemm`] (their bias, activation
//! and residual applied while each output tile is in cache); other weight
//! types run on our quantized kernels ([`QLinear`]).
//!
//! A batch is packed, not padded: the texts' tokens are stacked into one
//! matrix so the linear layers see every token at once, and attention runs
//! per (text, head) over its own rows, as two [`sgemm`] products around a
//! softmax. No padding means no masks, no wasted rows, and each text's
//! result does not depend on what it is batched with.

use super::config::{EncoderActivation, EncoderConfig, EncoderFamily};
use crate::weights::{RawTensor, WeightSource};
use crate::{rows, Error, Result};
use candle_quant::kernels::sgemm::{sgemm, sgemm_threaded, PackedB};
use candle_quant::kernels::{global_pool, Isa};
use candle_quant::{QLinear, QuantType, WeightBytes};
use std::cell::RefCell;
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
    /// The base name of the position embedding table.
    pub(crate) fn positions(&self) -> String {
        self.base(Part::Positions)
    }

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

/// A linear layer's weights.
enum Weight {
    /// F32, repacked for [`sgemm`].
    F32(PackedB),
    /// Any other type, one layer per part stacked by output rows.
    Quantized(Vec<QLinear>),
}

/// What a linear layer does to its output after the bias.
#[derive(Clone, Copy)]
pub(crate) enum Then<'a> {
    Nothing,
    Activate(EncoderActivation),
    /// Adds a `[tokens, out_features]` residual.
    Add(&'a [f32]),
}

/// `y = x Wᵀ + b`; q/k/v are one such layer, their outputs side by side.
pub(crate) struct Linear {
    weight: Weight,
    bias: Vec<f32>,
    in_features: usize,
    isa: Isa,
}

impl Linear {
    /// The layers `bases` (each `[rows, inp]`) stacked by output rows.
    fn load(source: &dyn WeightSource, bases: &[&str], rows: usize, inp: usize) -> Result<Self> {
        let parts = bases
            .iter()
            .map(|base| {
                let weight = required(source, &format!("{base}.weight"))?;
                let bias = required(source, &format!("{base}.bias"))?.to_f32(&[rows])?;
                Ok((weight, rows, bias))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::stack(parts, inp)
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
        let bias = required(source, &format!("{base}.bias"))?.to_f32(&[out])?;
        Self::stack(vec![(raw, out, bias)], inp).map(Some)
    }

    fn stack(parts: Vec<(RawTensor, usize, Vec<f32>)>, inp: usize) -> Result<Self> {
        let out: usize = parts.iter().map(|(_, rows, _)| rows).sum();
        let bias = parts
            .iter()
            .flat_map(|(_, _, b)| b.iter().copied())
            .collect();
        let weight = if parts.iter().all(|(raw, ..)| raw.ty == QuantType::F32) {
            let mut values = Vec::with_capacity(out * inp);
            for (raw, rows, _) in &parts {
                values.extend(raw.to_f32(&[*rows, inp])?);
            }
            Weight::F32(PackedB::from_rows(&values, out, inp)?)
        } else {
            Weight::Quantized(
                parts
                    .into_iter()
                    .map(|(raw, rows, _)| raw.into_linear(rows, inp, &crate::Backend::Native))
                    .collect::<Result<_>>()?,
            )
        };
        Ok(Self {
            weight,
            bias,
            in_features: inp,
            isa: Isa::selected(),
        })
    }

    pub(crate) fn out_features(&self) -> usize {
        self.bias.len()
    }

    /// `out = then(x Wᵀ + b)` for x: [tokens, in_features]; `out` is resized
    /// to [tokens, out_features] (reusing its allocation).
    pub(crate) fn forward(
        &self,
        x: &[f32],
        tokens: usize,
        then: Then<'_>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let width = self.out_features();
        out.resize(tokens * width, 0.0);
        let finish = |row: usize, col: usize, values: &mut [f32]| {
            rows::add_assign(values, &self.bias[col..col + values.len()]);
            match then {
                Then::Nothing => {}
                Then::Activate(activation) => activate(values, activation),
                Then::Add(residual) => {
                    let at = row * width + col;
                    rows::add_assign(values, &residual[at..at + values.len()]);
                }
            }
        };
        match &self.weight {
            Weight::F32(packed) => {
                sgemm_threaded(self.isa, x, self.in_features, tokens, packed, out, &finish)?
            }
            Weight::Quantized(parts) => {
                if let [only] = &parts[..] {
                    only.forward_slice(x, tokens, out)?;
                } else {
                    let mut outs: Vec<Vec<f32>> = parts
                        .iter()
                        .map(|p| vec![0f32; tokens * p.out_features()])
                        .collect();
                    let layers: Vec<&QLinear> = parts.iter().collect();
                    let mut slices: Vec<&mut [f32]> =
                        outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                    QLinear::forward_group(&layers, x, tokens, &mut slices)?;
                    for (t, row) in out.chunks_exact_mut(width).enumerate() {
                        let mut col = 0;
                        for part in &outs {
                            let w = part.len() / tokens;
                            row[col..col + w].copy_from_slice(&part[t * w..(t + 1) * w]);
                            col += w;
                        }
                    }
                }
                for (row, values) in out.chunks_exact_mut(width).enumerate() {
                    finish(row, 0, values);
                }
            }
        }
        Ok(())
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

    /// Normalises every row of `x` in place (biased variance, as PyTorch),
    /// rows spread over the pool when there are many.
    fn apply(&self, x: &mut [f32]) -> Result<()> {
        const ROWS_PER_TASK: usize = 32;
        let width = self.weight.len();
        let rows = x.len() / width;
        if rows <= ROWS_PER_TASK {
            x.chunks_exact_mut(width).for_each(|row| self.row(row));
            return Ok(());
        }
        let chunks: Vec<Mutex<&mut [f32]>> = x
            .chunks_mut(ROWS_PER_TASK * width)
            .map(Mutex::new)
            .collect();
        global_pool()?.run(chunks.len(), &|i| {
            // Each task locks its own chunk: the lock is never contended.
            let mut chunk = chunks[i].lock().unwrap_or_else(|e| e.into_inner());
            chunk.chunks_exact_mut(width).for_each(|row| self.row(row));
        });
        Ok(())
    }

    fn row(&self, row: &mut [f32]) {
        let width = row.len() as f32;
        let mean = sum(row.iter().copied()) / width;
        let var = sum(row.iter().map(|v| (v - mean) * (v - mean))) / width;
        let inv = 1.0 / (var + self.eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

/// A sum in sixteen independent lanes, so that it vectorises.
fn sum(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0f32; 16];
    for (i, v) in values.enumerate() {
        lanes[i % 16] += v;
    }
    lanes.iter().sum()
}

struct Layer {
    /// Query, key and value side by side: `[tokens, 3 · hidden]`.
    qkv: Linear,
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
    /// The instruction set of the attention products.
    isa: Isa,
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
                let (q, k, v) = (
                    base(Part::Query(i)),
                    base(Part::Key(i)),
                    base(Part::Value(i)),
                );
                Ok(Layer {
                    qkv: Linear::load(source, &[&q, &k, &v], h, h)?,
                    attention_output: Linear::load(
                        source,
                        &[&base(Part::AttentionOutput(i))],
                        h,
                        h,
                    )?,
                    attention_norm: LayerNorm::load(source, &base(Part::AttentionNorm(i)), h, eps)?,
                    up: Linear::load(source, &[&base(Part::Up(i))], ff, h)?,
                    down: Linear::load(source, &[&base(Part::Down(i))], h, ff)?,
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
            isa: Isa::selected(),
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
        // One set of buffers for every layer: no page faults after the first.
        let (mut qkv, mut context, mut attended, mut inner) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for layer in &self.layers {
            layer.qkv.forward(&x, tokens, Then::Nothing, &mut qkv)?;
            self.attention(&qkv, &spans, &mut context)?;
            let attention_output = &layer.attention_output;
            attention_output.forward(&context, tokens, Then::Add(&x), &mut attended)?;
            layer.attention_norm.apply(&mut attended)?;
            let activation = Then::Activate(self.config.activation);
            layer
                .up
                .forward(&attended, tokens, activation, &mut inner)?;
            layer
                .down
                .forward(&inner, tokens, Then::Add(&attended), &mut x)?;
            layer.output_norm.apply(&mut x)?;
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
        self.embedding_norm.apply(&mut x)?;
        Ok(x)
    }

    /// Softmax attention of every text over its own tokens into `context`
    /// (`[tokens, hidden]`), from `qkv` (`[tokens, 3 · hidden]`): one task
    /// per (text, head), each the products `Q Kᵀ` and `P V` around a
    /// softmax. Each task's arithmetic is its own, so the thread count does
    /// not change a bit.
    fn attention(
        &self,
        qkv: &[f32],
        spans: &[(usize, usize)],
        context: &mut Vec<f32>,
    ) -> Result<()> {
        let (h, heads) = (self.config.hidden_size, self.config.num_heads);
        let d = self.config.head_dim();
        let ld = 3 * h;
        let scale = 1.0 / (d as f32).sqrt();
        let isa = self.isa;
        let results: Vec<Mutex<Result<Vec<f32>>>> = (0..spans.len() * heads)
            .map(|_| Mutex::new(Ok(Vec::new())))
            .collect();
        let task = |i: usize| {
            let ((start, len), head) = (spans[i / heads], i % heads);
            let at = start * ld + head * d;
            let out = SCRATCH.with_borrow_mut(|s| -> Result<Vec<f32>> {
                s.keys.pack_rows(&qkv[at + h..], ld, len, d)?;
                s.values.pack_columns(&qkv[at + 2 * h..], ld, len, d)?;
                s.scores.resize(len * len, 0.0);
                sgemm(isa, &qkv[at..], ld, len, &s.keys, &mut s.scores, len)?;
                let sums: Vec<f32> = s
                    .scores
                    .chunks_exact_mut(len)
                    .map(|row| softmax_numerators(row, scale))
                    .collect();
                let mut out = vec![0f32; len * d];
                sgemm(isa, &s.scores, len, len, &s.values, &mut out, d)?;
                for (row, total) in out.chunks_exact_mut(d).zip(sums) {
                    let inv = 1.0 / total;
                    row.iter_mut().for_each(|v| *v *= inv);
                }
                Ok(out)
            });
            // Each task owns its own slot: the lock is never contended.
            *results[i].lock().unwrap_or_else(|e| e.into_inner()) = out;
        };
        global_pool()?.run(results.len(), &task);
        let tokens = qkv.len() / ld;
        context.resize(tokens * h, 0.0);
        for (i, slot) in results.into_iter().enumerate() {
            let ((start, _), head) = (spans[i / heads], i % heads);
            let part = slot.into_inner().unwrap_or_else(|e| e.into_inner())?;
            for (t, values) in part.chunks_exact(d).enumerate() {
                let at = (start + t) * h + head * d;
                context[at..at + d].copy_from_slice(values);
            }
        }
        Ok(())
    }
}

/// A thread's buffers for attention, kept from call to call.
#[derive(Default)]
struct AttentionScratch {
    keys: PackedB,
    values: PackedB,
    scores: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<AttentionScratch> = RefCell::default();
}

/// Turns one row of raw scores into `exp(scale · (s - max))` and returns
/// their sum, by which the weighted values are divided.
fn softmax_numerators(row: &mut [f32], scale: f32) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    for s in row.iter_mut() {
        *s = rows::exp((*s - max) * scale);
    }
    sum(row.iter().copied())
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
    fn lane_sums_handle_tails() {
        assert_eq!(sum((0..13).map(|i| i as f32)), 78.0);
        assert_eq!(sum(std::iter::empty()), 0.0);
    }
}
