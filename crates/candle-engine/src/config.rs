//! Hyper-parameters of the LLaMA-style decoder, read from a Hugging Face
//! `config.json` (and, through the GGUF loader, from GGUF metadata).

use crate::{Error, Result};

/// Model families the decoder runs. Family differences are expressed as
/// fields of [`DecoderConfig`], not as separate forward passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// LLaMA 2/3, SmolLM, Mistral.
    Llama,
}

impl Family {
    pub const SUPPORTED: &'static str = "llama (LlamaForCausalLM, MistralForCausalLM)";
}

/// How the rotation pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Halves `(x[i], x[i + d/2])`: Hugging Face checkpoints.
    RotateHalf,
    /// Adjacent pairs `(x[2i], x[2i+1])`: GGUF llama files, whose converter
    /// permutes the query/key rows accordingly.
    Interleaved,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rope_layout: RopeLayout,
    pub rms_norm_eps: f64,
    /// Positions the model was trained for; the default context.
    pub max_position_embeddings: usize,
    /// The output projection reuses the token embedding matrix.
    pub tie_word_embeddings: bool,
}

#[derive(serde::Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    /// transformers >= 5 nests `rope_theta` and the scaling type here.
    rope_parameters: Option<RopeParameters>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    rope_scaling: Option<serde_json::Value>,
    hidden_act: Option<String>,
}

#[derive(serde::Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    2048
}

impl DecoderConfig {
    /// Parses a Hugging Face `config.json`.
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let hf: HfConfig = serde_json::from_str(json)
            .map_err(|e| Error::InvalidModel(format!("config.json: {e}")))?;
        let model_type = hf.model_type.clone().unwrap_or_default();
        let family = match model_type.as_str() {
            "llama" | "mistral" => Family::Llama,
            other => {
                let name = if other.is_empty() {
                    hf.architectures.join(", ")
                } else {
                    other.to_string()
                };
                return Err(Error::UnsupportedArchitecture {
                    name,
                    supported: Family::SUPPORTED,
                });
            }
        };
        let rope_type = hf
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_type.clone());
        if let Some(kind) = rope_type.filter(|t| t != "default") {
            return Err(Error::InvalidModel(format!(
                "config.json: rope_type `{kind}` is not supported yet"
            )));
        }
        let rope_theta = hf
            .rope_theta
            .or_else(|| hf.rope_parameters.as_ref().and_then(|r| r.rope_theta))
            .unwrap_or(10_000.0);
        if let Some(scaling) = hf.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            return Err(Error::InvalidModel(format!(
                "config.json: rope_scaling {scaling} is not supported yet"
            )));
        }
        if let Some(act) = hf.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(Error::InvalidModel(format!(
                "config.json: hidden_act `{act}` is not supported for {model_type}; expected silu"
            )));
        }
        let num_kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
        let config = DecoderConfig {
            family,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads,
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            rope_theta,
            rope_layout: RopeLayout::RotateHalf,
            rms_norm_eps: hf.rms_norm_eps,
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings,
        };
        config.validate()?;
        Ok(config)
    }

    /// Rejects geometries the forward pass cannot run.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::InvalidModel(msg));
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return fail(format!(
                "num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return fail(format!(
                "head_dim ({}) must be positive and even for RoPE",
                self.head_dim
            ));
        }
        if self.vocab_size == 0
            || self.hidden_size == 0
            || self.num_layers == 0
            || self.intermediate_size == 0
        {
            return fail(
                "vocab_size, hidden_size, intermediate_size and num_hidden_layers must be positive"
                    .into(),
            );
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return fail(format!(
                "rms_norm_eps ({}) and rope_theta ({}) must be positive",
                self.rms_norm_eps, self.rope_theta
            ));
        }
        Ok(())
    }
}
