//! Models in a single GGUF file: architecture, hyper-parameters, weights,
//! tokenizer and chat template all come from it. Weights stay in the file's
//! mapping (or buffer, in the browser) and are handed to `QLinear` as slices.

use crate::config::{DecoderConfig, Family, RopeLayout};
use crate::tokenizer::{GgufTokenizerSpec, Tokenizer};
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
    /// `<arch>.*` keys.
    pub fn config(&self) -> Result<DecoderConfig> {
        let f = &*self.file;
        let arch = f.get_str("general.architecture")?;
        let family = match arch {
            "llama" => Family::Llama,
            other => {
                return Err(Error::UnsupportedArchitecture {
                    name: other.to_string(),
                    supported: "llama (GGUF general.architecture)",
                })
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = f.get_usize(&key("embedding_length"))?;
        let heads = f.get_usize(&key("attention.head_count"))?;
        let kv_heads =
            optional(f, &key("attention.head_count_kv"), GgufFile::get_usize)?.unwrap_or(heads);
        let head_dim = optional(f, &key("rope.dimension_count"), GgufFile::get_usize)?
            .unwrap_or(hidden / heads.max(1));
        let vocab_size = match optional(f, &key("vocab_size"), GgufFile::get_usize)? {
            Some(n) => n,
            None => f.get_array("tokenizer.ggml.tokens")?.len(),
        };
        let rope_theta =
            optional(f, &key("rope.freq_base"), GgufFile::get_f32)?.map_or(10_000.0, f64::from);
        let config = DecoderConfig {
            family,
            vocab_size,
            hidden_size: hidden,
            intermediate_size: f.get_usize(&key("feed_forward_length"))?,
            num_layers: f.get_usize(&key("block_count"))?,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            rope_theta,
            // llama.cpp's converter permutes the query/key rows of llama
            // models so that adjacent pairs rotate together.
            rope_layout: RopeLayout::Interleaved,
            rms_norm_eps: f.get_f32(&key("attention.layer_norm_rms_epsilon"))? as f64,
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
        let spec = GgufTokenizerSpec {
            model: vocab.model,
            pre: optional(f, "tokenizer.ggml.pre", GgufFile::get_str)?,
            tokens: vocab.tokens,
            token_types: vocab.token_types.unwrap_or_default(),
            merges: vocab.merges.unwrap_or_default(),
            bos: vocab.bos_token_id,
            eos: vocab.eos_token_id,
            add_bos: optional(f, "tokenizer.ggml.add_bos_token", GgufFile::get_bool)?
                .unwrap_or(false),
        };
        Tokenizer::from_gguf(&spec)
    }

    /// `tokenizer.chat_template`, when the file has one.
    pub fn chat_template(&self) -> Result<Option<&str>> {
        let f = &*self.file;
        optional(f, "tokenizer.chat_template", GgufFile::get_str)
    }

    fn name_of(name: &TensorName) -> String {
        match *name {
            TensorName::TokenEmbedding => "token_embd.weight".into(),
            TensorName::OutputNorm => "output_norm.weight".into(),
            TensorName::Output => "output.weight".into(),
            TensorName::AttentionNorm(i) => format!("blk.{i}.attn_norm.weight"),
            TensorName::Query(i) => format!("blk.{i}.attn_q.weight"),
            TensorName::Key(i) => format!("blk.{i}.attn_k.weight"),
            TensorName::Value(i) => format!("blk.{i}.attn_v.weight"),
            TensorName::AttentionOutput(i) => format!("blk.{i}.attn_output.weight"),
            TensorName::FfnNorm(i) => format!("blk.{i}.ffn_norm.weight"),
            TensorName::FfnGate(i) => format!("blk.{i}.ffn_gate.weight"),
            TensorName::FfnUp(i) => format!("blk.{i}.ffn_up.weight"),
            TensorName::FfnDown(i) => format!("blk.{i}.ffn_down.weight"),
        }
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
    fn tensor(&self, name: &TensorName) -> Result<RawTensor> {
        let key = Self::name_of(name);
        let view = self
            .file
            .tensor(&key)
            .map_err(|_| Error::MissingTensor(key.clone()))?;
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
        Ok(RawTensor {
            ty,
            dims: view.info.shape(),
            bytes,
        })
    }

    fn contains(&self, name: &TensorName) -> bool {
        self.file.tensor(&Self::name_of(name)).is_ok()
    }
}
