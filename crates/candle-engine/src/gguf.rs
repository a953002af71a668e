//! Models in a single GGUF file: architecture, hyper-parameters, weights,
//! tokenizer and chat template all come from it. Weights stay in the file's
//! mapping (or buffer, in the browser) and are handed to `QLinear` as slices.

use crate::config::{layer_windows, DecoderConfig, Family, FamilyTraits, RopeLayout};
use crate::tokenizer::{GgufTokenizerOptions, GgufTokenizerSpec, Tokenizer};
use crate::weights::{RawTensor, TensorName, WeightSource};
use crate::{Error, Result};
use candle_quant::gguf::{GgufFile, GgufVocab};
use candle_quant::{QuantType, WeightBytes};
use std::sync::Arc;

/// A validated GGUF file shared by every layer that borrows from it.
pub struct GgufModel {
    file: Arc<GgufFile<'static>>,
}

impl GgufModel {
    pub fn new(file: GgufFile<'static>) -> Self {
        Self {
            file: Arc::new(file),
        }
    }

    pub fn file(&self) -> &GgufFile<'static> {
        &self.file
    }

    /// The decoder hyper-parameters from `general.architecture` and its
    /// `<arch>.*` keys, with llama.cpp's conventions for what the file
    /// leaves implicit.
    pub fn config(&self) -> Result<DecoderConfig> {
        let f = &*self.file;
        let arch = f.get_str("general.architecture")?;
        let family = Family::from_gguf_architecture(arch)?;
        let key = |k: &str| format!("{arch}.{k}");
        let usize_key = |k: &str| optional(f, &key(k), GgufFile::get_usize);
        let f32_key = |k: &str| optional(f, &key(k), GgufFile::get_f32);
        let hidden = f.get_usize(&key("embedding_length"))?;
        let heads = f.get_usize(&key("attention.head_count"))?;
        let kv_heads = usize_key("attention.head_count_kv")?.unwrap_or(heads);
        let rope_dims = usize_key("rope.dimension_count")?;
        // Gemma's heads are wider than hidden / heads; only key_length says so.
        let head_dim = usize_key("attention.key_length")?
            .or(rope_dims)
            .unwrap_or(hidden / heads.max(1));
        if let Some(dims) = rope_dims.filter(|&d| d != head_dim) {
            return Err(Error::InvalidModel(format!(
                "{arch}.rope.dimension_count is {dims} but heads are {head_dim} wide; \
                 partial rotary embeddings are not supported"
            )));
        }
        let vocab_size = match usize_key("vocab_size")? {
            Some(n) => n,
            None => f.get_array("tokenizer.ggml.tokens")?.len(),
        };
        let rope_theta = f32_key("rope.freq_base")?.map_or(10_000.0, f64::from);
        let rope_linear_factor = match optional(f, &key("rope.scaling.type"), GgufFile::get_str)? {
            None | Some("none") => 1.0,
            Some("linear") => f64::from(f.get_f32(&key("rope.scaling.factor"))?),
            Some(other) => {
                return Err(Error::InvalidModel(format!(
                    "{arch}.rope.scaling.type is `{other}`; supported: none, linear"
                )))
            }
        };
        // llama.cpp runs sliding windows for these architectures only, and
        // fixes Gemma 3's sliding-layer RoPE base at 10000 when the file
        // does not give one.
        let window = match family {
            Family::Gemma2 | Family::Gemma3 | Family::Phi3 => {
                usize_key("attention.sliding_window")?
            }
            _ => None,
        };
        let num_layers = f.get_usize(&key("block_count"))?;
        let sliding_rope_theta = match family {
            Family::Gemma3 => Some(f32_key("rope.freq_base_swa")?.map_or(10_000.0, f64::from)),
            _ => f32_key("rope.freq_base_swa")?.map(f64::from),
        };
        let traits = FamilyTraits::of(family, hidden);
        let config = DecoderConfig {
            family,
            vocab_size,
            hidden_size: hidden,
            intermediate_size: f.get_usize(&key("feed_forward_length"))?,
            num_layers,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            rope_theta,
            rope_linear_factor,
            sliding_rope_theta,
            // llama.cpp's converter permutes the query/key rows of llama
            // models so that adjacent pairs rotate together; the other
            // families keep Hugging Face's order and rotate halves (NEOX).
            rope_layout: match family {
                Family::Llama => RopeLayout::Interleaved,
                _ => RopeLayout::RotateHalf,
            },
            rms_norm_eps: f.get_f32(&key("attention.layer_norm_rms_epsilon"))? as f64,
            // The converter already added Gemma's 1 to its norm weights.
            norm_weight_offset: 0.0,
            layer_windows: layer_windows(
                family,
                num_layers,
                window,
                usize_key("attention.sliding_window_pattern")?,
            )?,
            qkv_bias: traits.qkv_bias,
            qk_norm: traits.qk_norm,
            sandwich_norms: traits.sandwich_norms,
            embedding_scale: traits.embedding_scale,
            activation: traits.activation,
            // llama.cpp scales Gemma queries by 1/sqrt(head_dim) too (except
            // for the 27B models, whose query_pre_attn_scalar GGUF omits).
            attention_scale: (head_dim as f32).powf(-0.5),
            attn_logit_softcap: f32_key("attn_logit_softcapping")?,
            final_logit_softcap: f32_key("final_logit_softcapping")?,
            max_position_embeddings: f.get_usize(&key("context_length"))?,
            tie_word_embeddings: f.tensor("output.weight").is_err(),
        };
        config.validate()?;
        Ok(config)
    }

    /// The tokenizer described by `tokenizer.ggml.*` (read and checked by
    /// `GgufVocab`).
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let f = &*self.file;
        let vocab = GgufVocab::from_gguf(f)?;
        let flag = |key: &str| optional(f, key, GgufFile::get_bool);
        // llama.cpp adds a BOS for SentencePiece vocabularies unless told not to.
        let add_bos_default = vocab.model == "llama";
        let spec = GgufTokenizerSpec {
            model: vocab.model,
            pre: optional(f, "tokenizer.ggml.pre", GgufFile::get_str)?,
            tokens: vocab.tokens,
            token_types: vocab.token_types.unwrap_or_default(),
            merges: vocab.merges.unwrap_or_default(),
            bos: vocab.bos_token_id,
            eos: vocab.eos_token_id,
            add_bos: flag("tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default),
        };
        let options = GgufTokenizerOptions {
            scores: vocab.scores.unwrap_or_default(),
            add_eos: flag("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix")?,
        };
        Tokenizer::from_gguf_with(&spec, &options)
    }

    /// `tokenizer.chat_template`, when the file has one.
    pub fn chat_template(&self) -> Result<Option<&str>> {
        let f = &*self.file;
        optional(f, "tokenizer.chat_template", GgufFile::get_str)
    }
}

/// A metadata value that may be absent; present with the wrong type is
/// still an error naming the key.
fn optional<'f, T>(
    file: &'f GgufFile<'static>,
    key: &str,
    get: impl FnOnce(&'f GgufFile<'static>, &str) -> candle_quant::gguf::Result<T>,
) -> Result<Option<T>> {
    match file.get(key) {
        Some(_) => Ok(Some(get(file, key)?)),
        None => Ok(None),
    }
}

impl WeightSource for GgufModel {
    fn key(&self, name: TensorName, _family: Family) -> String {
        name.gguf()
    }

    fn get(&self, key: &str) -> Result<Option<RawTensor>> {
        let Ok(view) = self.file.tensor(key) else {
            return Ok(None);
        };
        let ggml = view.info.ggml_type;
        let ty = QuantType::from_ggml_id(ggml.id()).ok_or_else(|| {
            Error::InvalidModel(format!(
                "tensor {key} has type {}; supported: {}",
                ggml.name(),
                QuantType::ALL
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let start = self.file.data_offset() + view.info.offset as usize;
        let bytes = WeightBytes::new(self.file.clone(), start..start + view.data.len())?;
        Ok(Some(RawTensor {
            key: key.to_string(),
            ty,
            dims: view.info.shape(),
            bytes,
        }))
    }
}
