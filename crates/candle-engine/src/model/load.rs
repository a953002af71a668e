//! Building a [`Decoder`] from a weight source: each layer's linear layers
//! and vectors, the RoPE tables, and the copy to the device for the tensor
//! path.

use super::{Decoder, Layer, LayerVectors, PlacedVectors, Rope, Vectors, NEXT_DECODER_ID};
use crate::backend::Backend;
use crate::config::{DecoderConfig, RopeLayout};
use crate::weights::{GlobalTensor, LayerTensor, TensorName, WeightSource};
use crate::Result;
use candle_core::Tensor;
use candle_quant::QLinear;
use std::sync::atomic::Ordering;

impl Decoder {
    /// Builds the decoder from `source` for our CPU kernels; `max_context`
    /// bounds the RoPE tables and every cache made for it.
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
        let loader = Loader {
            config: &config,
            source,
            backend: &backend,
        };
        let c = &config;
        let embedding = loader.tensor(TensorName::Global(GlobalTensor::TokenEmbedding))?;
        embedding.check_dims(&[c.vocab_size, c.hidden_size])?;
        let (layers, layer_vectors): (Vec<_>, Vec<_>) = (0..c.num_layers)
            .map(|i| loader.layer(i))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let output = loader.output()?;
        let vectors = Vectors {
            layers: layer_vectors,
            output_norm: loader
                .norm(TensorName::Global(GlobalTensor::OutputNorm), c.hidden_size)?,
            global_rope: rope_tables(c, c.rope_theta, c.rope_linear_factor, max_context),
            local_rope: c
                .sliding_rope_theta
                .map(|theta| rope_tables(c, theta, 1.0, max_context)),
        };
        let vectors = match &backend {
            Backend::Native => PlacedVectors::Host(vectors),
            Backend::Tensors(device) => {
                let upload = |v: &Vec<f32>| Ok(Tensor::from_slice(v, v.len(), device)?);
                PlacedVectors::Device(device.clone(), vectors.try_map(&upload)?)
            }
        };
        Ok(Self {
            config,
            embedding,
            layers,
            output,
            vectors,
            backend,
            max_context,
            id: NEXT_DECODER_ID.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// Reads the decoder's tensors from one source for one backend.
struct Loader<'a> {
    config: &'a DecoderConfig,
    source: &'a dyn WeightSource,
    backend: &'a Backend,
}

impl Loader<'_> {
    fn tensor(&self, name: TensorName) -> Result<crate::weights::RawTensor> {
        self.source.tensor(name, self.config.family)
    }

    fn linear(&self, name: TensorName, out_features: usize, in_features: usize) -> Result<QLinear> {
        self.tensor(name)?
            .into_linear(out_features, in_features, self.backend)
    }

    /// A norm weight of `len` values, with the family's offset added
    /// (Gemma stores `w - 1`).
    fn norm(&self, name: TensorName, len: usize) -> Result<Vec<f32>> {
        let offset = self.config.norm_weight_offset;
        let values = self.tensor(name)?.to_f32(&[len])?;
        Ok(values.into_iter().map(|v| v + offset).collect())
    }

    /// A norm of layer `i` that the family has only when `wanted`.
    fn optional_norm(
        &self,
        i: usize,
        part: LayerTensor,
        len: usize,
        wanted: bool,
    ) -> Result<Option<Vec<f32>>> {
        wanted
            .then(|| self.norm(TensorName::Layer(i, part), len))
            .transpose()
    }

    /// The output projection, or the embedding table when tied to it.
    fn output(&self) -> Result<QLinear> {
        let c = self.config;
        let output = TensorName::Global(GlobalTensor::Output);
        let name = match self.source.find(output, c.family)? {
            Some(_) if !c.tie_word_embeddings => output,
            _ => TensorName::Global(GlobalTensor::TokenEmbedding),
        };
        self.linear(name, c.vocab_size, c.hidden_size)
    }

    /// Layer `i`'s linear layers and vectors.
    fn layer(&self, i: usize) -> Result<(Layer, LayerVectors<Vec<f32>>)> {
        let c = self.config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (q_out, kv, ffn) = (c.num_heads * hd, c.num_kv_heads * hd, c.intermediate_size);
        let name = |part| TensorName::Layer(i, part);
        let present =
            |part| Ok::<_, crate::Error>(self.source.find(name(part), c.family)?.is_some());
        // Phi-3 stacks q/k/v and gate/up by rows; split them into views of
        // the same bytes.
        let [query, key, value] =
            if present(LayerTensor::Query)? || !present(LayerTensor::FusedQkv)? {
                [
                    self.linear(name(LayerTensor::Query), q_out, h)?,
                    self.linear(name(LayerTensor::Key), kv, h)?,
                    self.linear(name(LayerTensor::Value), kv, h)?,
                ]
            } else {
                self.tensor(name(LayerTensor::FusedQkv))?.split_rows(
                    [q_out, kv, kv],
                    h,
                    self.backend,
                )?
            };
        let [ffn_gate, ffn_up] = if present(LayerTensor::FfnGate)?
            || !present(LayerTensor::FusedGateUp)?
        {
            [
                self.linear(name(LayerTensor::FfnGate), ffn, h)?,
                self.linear(name(LayerTensor::FfnUp), ffn, h)?,
            ]
        } else {
            self.tensor(name(LayerTensor::FusedGateUp))?
                .split_rows([ffn, ffn], h, self.backend)?
        };
        let bias = |part, len| self.tensor(name(part))?.to_f32(&[len]);
        let biases = if c.qkv_bias {
            Some([
                bias(LayerTensor::QueryBias, q_out)?,
                bias(LayerTensor::KeyBias, kv)?,
                bias(LayerTensor::ValueBias, kv)?,
            ])
        } else {
            None
        };
        let window = c.layer_windows[i];
        let layer = Layer {
            query,
            key,
            value,
            attention_output: self.linear(name(LayerTensor::AttentionOutput), h, q_out)?,
            ffn_gate,
            ffn_up,
            ffn_down: self.linear(name(LayerTensor::FfnDown), h, ffn)?,
            window,
            local_rope: window.is_some() && c.sliding_rope_theta.is_some(),
        };
        let vectors = LayerVectors {
            attention_norm: self.norm(name(LayerTensor::AttentionNorm), h)?,
            biases,
            query_norm: self.optional_norm(i, LayerTensor::QueryNorm, hd, c.qk_norm)?,
            key_norm: self.optional_norm(i, LayerTensor::KeyNorm, hd, c.qk_norm)?,
            post_attention_norm: self.optional_norm(
                i,
                LayerTensor::PostAttentionNorm,
                h,
                c.sandwich_norms,
            )?,
            ffn_norm: self.norm(name(LayerTensor::FfnNorm), h)?,
            post_ffn_norm: self.optional_norm(i, LayerTensor::PostFfnNorm, h, c.sandwich_norms)?,
        };
        Ok((layer, vectors))
    }
}

/// cos/sin tables `[max_context, head_dim]` with inverse frequencies
/// `theta^(-2i/d)` at positions `p / linear_factor`, laid out for
/// `config.rope_layout`.
fn rope_tables(
    c: &DecoderConfig,
    theta: f64,
    linear_factor: f64,
    max_context: usize,
) -> Rope<Vec<f32>> {
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
    Rope { cos, sin }
}
