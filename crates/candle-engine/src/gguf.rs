//! Models in a single GGUF file: architecture, hyper-parameters, weights,
//! tokenizer and chat template all come from it. Weights stay in the file's
//! mapping (or buffer, in the browser) and are handed to `QLinear` as slices.

use crate::config::{
    head_width_from_hidden, layer_windows, DecoderConfig, Family, FamilyTraits, RopeLayout, Setting,
};
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
    /// leaves implicit. Every count is checked against the tensors the file
    /// holds before anything is sized from it, and every error names the
    /// key at fault.
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
        let (head_dim, head_dim_key) = match (usize_key("attention.key_length")?, rope_dims) {
            (Some(width), _) => (width, key("attention.key_length")),
            (None, Some(width)) => (width, key("rope.dimension_count")),
            (None, None) => (
                head_width_from_hidden(
                    hidden,
                    heads,
                    &key("embedding_length"),
                    &key("attention.head_count"),
                )?,
                format!(
                    "{} / {}",
                    key("embedding_length"),
                    key("attention.head_count")
                ),
            ),
        };
        if let Some(dims) = rope_dims.filter(|&d| d != head_dim) {
            return Err(Error::InvalidModel(format!(
                "{arch}.rope.dimension_count is {dims} but heads are {head_dim} wide; \
                 partial rotary embeddings are not supported"
            )));
        }
        if let Some(width) = usize_key("attention.value_length")?.filter(|&w| w != head_dim) {
            return Err(Error::InvalidModel(format!(
                "{arch}.attention.value_length is {width} but keys are {head_dim} wide \
                 ({head_dim_key}); the decoder needs them equal"
            )));
        }
        let vocab_size = match usize_key("vocab_size")? {
            Some(n) => n,
            None => f.get_array("tokenizer.ggml.tokens")?.len(),
        };
        let num_layers = f.get_usize(&key("block_count"))?;
        let intermediate_size = f.get_usize(&key("feed_forward_length"))?;
        Geometry {
            arch,
            vocab_size,
            hidden,
            heads,
            kv_heads,
            head_dim,
            head_dim_key: &head_dim_key,
            num_layers,
            intermediate_size,
        }
        .check_against(f)?;

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
        let sliding_rope_theta = match family {
            Family::Gemma3 => Some(f32_key("rope.freq_base_swa")?.map_or(10_000.0, f64::from)),
            _ => f32_key("rope.freq_base_swa")?.map(f64::from),
        };
        let traits = FamilyTraits::of(family, hidden);
        let config = DecoderConfig {
            family,
            vocab_size,
            hidden_size: hidden,
            intermediate_size,
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
            // Sized by block_count, which the file's layers have confirmed.
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
        config.validate_named(&|setting| gguf_key(arch, setting, &head_dim_key))?;
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

/// The key a GGUF file sets `setting` with; `head_dim_key` says where the
/// head width came from (it may be derived).
fn gguf_key(arch: &str, setting: Setting, head_dim_key: &str) -> String {
    let key = match setting {
        Setting::VocabSize => "vocab_size",
        Setting::HiddenSize => "embedding_length",
        Setting::IntermediateSize => "feed_forward_length",
        Setting::NumLayers => "block_count",
        Setting::NumHeads => "attention.head_count",
        Setting::NumKvHeads => "attention.head_count_kv",
        Setting::HeadDim => return format!("the head width ({head_dim_key})"),
        Setting::MaxPositions => "context_length",
        Setting::SlidingWindow => "attention.sliding_window",
        Setting::RmsNormEps => "attention.layer_norm_rms_epsilon",
        Setting::RopeTheta => "rope.freq_base",
        Setting::SlidingRopeTheta => "rope.freq_base_swa",
        Setting::RopeLinearFactor => "rope.scaling.factor",
        Setting::AttentionScale => {
            return format!("the attention scale (1/sqrt of {head_dim_key})")
        }
        Setting::EmbeddingScale => {
            return format!("the embedding scale (sqrt of {arch}.embedding_length)")
        }
        Setting::AttnLogitSoftcap => "attn_logit_softcapping",
        Setting::FinalLogitSoftcap => "final_logit_softcapping",
    };
    format!("{arch}.{key}")
}

/// The counts of a GGUF decoder, before anything is sized from them.
struct Geometry<'a> {
    arch: &'a str,
    vocab_size: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Where the head width came from, for errors.
    head_dim_key: &'a str,
    num_layers: usize,
    intermediate_size: usize,
}

impl Geometry<'_> {
    /// Checks the counts against the tensors the file holds, so that a
    /// count is never trusted beyond what the file backs with bytes, and a
    /// mismatch is reported as the setting that disagrees rather than as a
    /// tensor whose shape no longer fits. Tensors that are absent are left
    /// for the decoder to report.
    fn check_against(&self, file: &GgufFile<'_>) -> Result<()> {
        let arch = self.arch;
        let fail = |msg: String| Err(Error::InvalidModel(msg));
        let layers_in_file = file
            .tensors()
            .filter_map(|t| layer_index(&t.info.name))
            .max()
            .map_or(0, |last| last + 1);
        if self.num_layers != layers_in_file {
            return fail(format!(
                "{arch}.block_count is {} but the file holds tensors for {layers_in_file} layers",
                self.num_layers
            ));
        }
        let shape = |name: &str| file.tensor(name).ok().map(|t| t.info.shape());
        if let Some(&[rows, width]) = shape("token_embd.weight").as_deref() {
            if width != self.hidden {
                return fail(format!(
                    "{arch}.embedding_length is {} but token_embd.weight rows are {width} wide",
                    self.hidden
                ));
            }
            // A vocabulary of the wrong type is the tokenizer's to report.
            if let Ok(tokens) = file.get_array("tokenizer.ggml.tokens") {
                if tokens.len() != rows {
                    return fail(format!(
                        "tokenizer.ggml.tokens lists {} tokens but token_embd.weight has {rows} rows",
                        tokens.len()
                    ));
                }
            }
            if self.vocab_size != rows {
                return fail(format!(
                    "{arch}.vocab_size is {} but token_embd.weight has {rows} rows",
                    self.vocab_size
                ));
            }
        }
        for (tensor, count_key, count) in [
            ("blk.0.attn_q.weight", "attention.head_count", self.heads),
            (
                "blk.0.attn_k.weight",
                "attention.head_count_kv",
                self.kv_heads,
            ),
        ] {
            let Some(&[rows, _]) = shape(tensor).as_deref() else {
                continue;
            };
            if count.checked_mul(self.head_dim) != Some(rows) {
                return fail(format!(
                    "{tensor} has {rows} rows, which {arch}.{count_key} ({count}) heads of width {} \
                     ({}) do not fill",
                    self.head_dim, self.head_dim_key
                ));
            }
        }
        if let Some(&[_, width]) = shape("blk.0.ffn_down.weight").as_deref() {
            if width != self.intermediate_size {
                return fail(format!(
                    "{arch}.feed_forward_length is {} but blk.0.ffn_down.weight rows are {width} wide",
                    self.intermediate_size
                ));
            }
        }
        Ok(())
    }
}

/// `N` of a tensor named `blk.N.*`.
fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
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
