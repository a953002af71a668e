//! Hyper-parameters of the LLaMA-style decoder, read from a Hugging Face
//! `config.json` (and, through the GGUF loader, from GGUF metadata). Every
//! difference between the supported families is a field here; the decoder
//! has one forward pass.

use crate::{Error, Result};

/// Model families the decoder runs. Family differences are expressed as
/// fields of [`DecoderConfig`], not as separate forward passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// LLaMA 2/3, SmolLM, Mistral.
    Llama,
    /// Qwen2 / Qwen2.5: biases on the query, key and value projections.
    Qwen2,
    /// Qwen3: per-head RMSNorm of queries and keys.
    Qwen3,
    /// Gemma 2: GELU, sandwich norms, scaled embeddings, logit softcapping,
    /// alternating sliding-window layers.
    Gemma2,
    /// Gemma 3 (text): Gemma 2 with q/k norms instead of softcapping and a
    /// separate RoPE base for its sliding-window layers.
    Gemma3,
    /// Phi-3: fused qkv and gate/up projections.
    Phi3,
}

impl Family {
    pub const SUPPORTED: &'static str = "llama (LlamaForCausalLM, MistralForCausalLM), \
        qwen2 (Qwen2ForCausalLM), qwen3 (Qwen3ForCausalLM), gemma2 (Gemma2ForCausalLM), \
        gemma3 (Gemma3ForCausalLM, text only), phi3 (Phi3ForCausalLM)";

    /// The family of a GGUF `general.architecture`.
    pub fn from_gguf_architecture(arch: &str) -> Result<Self> {
        Ok(match arch {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma2" => Self::Gemma2,
            "gemma3" => Self::Gemma3,
            "phi3" => Self::Phi3,
            other => {
                return Err(Error::UnsupportedArchitecture {
                    name: other.to_string(),
                    supported: Self::SUPPORTED,
                })
            }
        })
    }

    /// The family of a `config.json` `model_type`.
    fn from_hf_model_type(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "llama" | "mistral" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma2" => Self::Gemma2,
            "gemma3_text" => Self::Gemma3,
            "phi3" => Self::Phi3,
            _ => return None,
        })
    }

    fn is_gemma(self) -> bool {
        matches!(self, Self::Gemma2 | Self::Gemma3)
    }

    /// Every `n`-th layer is global, the others slide (Gemma 2: 2, Gemma 3:
    /// 6), when a file does not list the layer types.
    fn default_sliding_pattern(self) -> Option<usize> {
        match self {
            Self::Gemma2 => Some(2),
            Self::Gemma3 => Some(6),
            _ => None,
        }
    }
}

/// How the rotation pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Halves `(x[i], x[i + d/2])`: Hugging Face checkpoints, and GGUF files
    /// of every family but llama (llama.cpp's NEOX mode).
    RotateHalf,
    /// Adjacent pairs `(x[2i], x[2i+1])`: GGUF llama files, whose converter
    /// permutes the query/key rows accordingly.
    Interleaved,
}

/// The gate activation of the gated feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU (LLaMA, Qwen, Phi-3).
    Silu,
    /// GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
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
    /// RoPE base of global (full-attention) layers.
    pub rope_theta: f64,
    /// Linear RoPE scaling of global layers: positions are divided by this
    /// factor (1 when the model has none).
    pub rope_linear_factor: f64,
    /// RoPE base of sliding-window layers when it differs from `rope_theta`
    /// (Gemma 3: 10000); they never use the linear scaling.
    pub sliding_rope_theta: Option<f64>,
    pub rope_layout: RopeLayout,
    pub rms_norm_eps: f64,
    /// Added to every RMSNorm weight at load: Gemma's Hugging Face weights
    /// hold `w` of `x * (1 + w)` (llama.cpp's converter already added the 1).
    pub norm_weight_offset: f32,
    /// Per layer: `Some(w)` when a query sees only the last `w` positions.
    pub layer_windows: Vec<Option<usize>>,
    /// Biases on the query/key/value projections (Qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm of queries and keys before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Extra RMSNorms on the attention and feed-forward outputs before they
    /// join the residual stream (Gemma 2/3).
    pub sandwich_norms: bool,
    /// The token embeddings are multiplied by this (Gemma: sqrt(hidden)).
    pub embedding_scale: Option<f32>,
    pub activation: Activation,
    /// Factor on q·k (1/sqrt(head_dim), or Gemma's
    /// 1/sqrt(query_pre_attn_scalar)).
    pub attention_scale: f32,
    /// `cap * tanh(score / cap)` on attention scores (Gemma 2).
    pub attn_logit_softcap: Option<f32>,
    /// `cap * tanh(logit / cap)` on the output logits (Gemma 2).
    pub final_logit_softcap: Option<f32>,
    /// Positions the model was trained for; the default context.
    pub max_position_embeddings: usize,
    /// The output projection reuses the token embedding matrix.
    pub tie_word_embeddings: bool,
}

/// The most positions a context may hold: llama.cpp's position ids are
/// 32-bit signed (`llama_pos`), and a larger trained context only invites
/// tables sized from it.
pub const MAX_POSITIONS: usize = i32::MAX as usize;

/// A hyper-parameter of [`DecoderConfig`], for errors that name it the way
/// the file it came from does ([`Setting::hf_name`] for `config.json`; the
/// GGUF loader names its own keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    VocabSize,
    HiddenSize,
    IntermediateSize,
    NumLayers,
    NumHeads,
    NumKvHeads,
    HeadDim,
    MaxPositions,
    SlidingWindow,
    RmsNormEps,
    RopeTheta,
    SlidingRopeTheta,
    RopeLinearFactor,
    /// Derived: 1/sqrt of the head width or of Gemma's
    /// `query_pre_attn_scalar`.
    AttentionScale,
    /// Derived: sqrt of the hidden size (Gemma).
    EmbeddingScale,
    AttnLogitSoftcap,
    FinalLogitSoftcap,
}

impl Setting {
    /// The `config.json` field the setting comes from.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::VocabSize => "vocab_size",
            Self::HiddenSize => "hidden_size",
            Self::IntermediateSize => "intermediate_size",
            Self::NumLayers => "num_hidden_layers",
            Self::NumHeads => "num_attention_heads",
            Self::NumKvHeads => "num_key_value_heads",
            Self::HeadDim => "head_dim",
            Self::MaxPositions => "max_position_embeddings",
            Self::SlidingWindow => "sliding_window",
            Self::RmsNormEps => "rms_norm_eps",
            Self::RopeTheta => "rope_theta",
            Self::SlidingRopeTheta => "the sliding-layer rope_theta",
            Self::RopeLinearFactor => "the linear rope scaling factor",
            Self::AttentionScale => "the attention scale (from query_pre_attn_scalar or head_dim)",
            Self::EmbeddingScale => "the embedding scale (sqrt of hidden_size)",
            Self::AttnLogitSoftcap => "attn_logit_softcapping",
            Self::FinalLogitSoftcap => "final_logit_softcapping",
        }
    }
}

/// The values a float setting may take; all of them exclude NaN and the
/// infinities.
#[derive(Clone, Copy)]
enum FloatRange {
    Positive,
    /// RoPE bases: wavelengths `2π·base^(2i/d)` grow along the head only
    /// when the base exceeds 1.
    AboveOne,
    /// Norm epsilons guard a division by the mean square of activations of
    /// order 1; one of 1 or more would swamp it.
    Epsilon,
}

impl FloatRange {
    fn contains(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Self::Positive => v > 0.0,
                Self::AboveOne => v > 1.0,
                Self::Epsilon => v > 0.0 && v < 1.0,
            }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Positive => "positive and finite",
            Self::AboveOne => "finite and above 1",
            Self::Epsilon => "positive and below 1",
        }
    }
}

/// The head width when a file gives only the hidden size and the head
/// count: `hidden / heads`, which the count must divide. `hidden` and
/// `heads` name the two settings.
pub(crate) fn head_width_from_hidden(
    hidden_size: usize,
    num_heads: usize,
    hidden: &str,
    heads: &str,
) -> Result<usize> {
    if num_heads == 0 || !hidden_size.is_multiple_of(num_heads) {
        return Err(Error::InvalidModel(format!(
            "{heads} ({num_heads}) does not divide {hidden} ({hidden_size}) into heads of equal width"
        )));
    }
    Ok(hidden_size / num_heads)
}

/// What a family fixes regardless of the file it comes from.
pub(crate) struct FamilyTraits {
    pub qkv_bias: bool,
    pub qk_norm: bool,
    pub sandwich_norms: bool,
    pub embedding_scale: Option<f32>,
    pub activation: Activation,
}

impl FamilyTraits {
    pub(crate) fn of(family: Family, hidden_size: usize) -> Self {
        let gemma = family.is_gemma();
        Self {
            qkv_bias: family == Family::Qwen2,
            qk_norm: matches!(family, Family::Qwen3 | Family::Gemma3),
            sandwich_norms: gemma,
            embedding_scale: gemma.then(|| (hidden_size as f32).sqrt()),
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
        }
    }
}

/// Which layers slide: an explicit list of layer kinds wins, then a
/// family's alternation pattern, else every layer shares `window` (Mistral,
/// Phi-3) or none slides.
pub(crate) fn layer_windows(
    family: Family,
    num_layers: usize,
    window: Option<usize>,
    pattern: Option<usize>,
) -> Result<Vec<Option<usize>>> {
    let Some(window) = window.filter(|&w| w > 0) else {
        return Ok(vec![None; num_layers]);
    };
    match pattern.or(family.default_sliding_pattern()) {
        Some(0) => Err(Error::InvalidModel(
            "sliding_window_pattern must be positive".into(),
        )),
        Some(every) => Ok((0..num_layers)
            .map(|i| ((i + 1) % every != 0).then_some(window))
            .collect()),
        None => Ok(vec![Some(window); num_layers]),
    }
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
    /// transformers >= 5 nests `rope_theta` and the scaling here, for Gemma 3
    /// once per layer kind (`full_attention`, `sliding_attention`).
    rope_parameters: Option<serde_json::Value>,
    /// transformers < 5 spelling of the scaling.
    rope_scaling: Option<serde_json::Value>,
    /// transformers < 5 spelling of Gemma 3's sliding-layer RoPE base.
    rope_local_base_freq: Option<f64>,
    partial_rotary_factor: Option<f64>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    hidden_act: Option<String>,
    hidden_activation: Option<String>,
    #[serde(default)]
    attention_bias: bool,
    sliding_window: Option<usize>,
    #[serde(default)]
    use_sliding_window: bool,
    layer_types: Option<Vec<String>>,
    #[serde(alias = "_sliding_window_pattern")]
    sliding_window_pattern: Option<usize>,
    query_pre_attn_scalar: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    2048
}

/// A RoPE base and linear factor read from one `rope_parameters` /
/// `rope_scaling` object.
#[derive(Default)]
struct Rope {
    theta: Option<f64>,
    linear_factor: Option<f64>,
}

fn parse_rope(value: &serde_json::Value, field: &str) -> Result<Rope> {
    let kind = value
        .get("rope_type")
        .or_else(|| value.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let theta = value.get("rope_theta").and_then(|t| t.as_f64());
    match kind {
        "default" => Ok(Rope {
            theta,
            linear_factor: None,
        }),
        "linear" => {
            // Its range is checked with the other floats by `validate`.
            let Some(factor) = value.get("factor").and_then(|f| f.as_f64()) else {
                return Err(Error::InvalidModel(format!(
                    "config.json: {field} is linear RoPE scaling without a numeric `factor`"
                )));
            };
            Ok(Rope {
                theta,
                linear_factor: Some(factor),
            })
        }
        other => Err(Error::InvalidModel(format!(
            "config.json: {field} has rope_type `{other}`; supported: default, linear"
        ))),
    }
}

impl HfConfig {
    /// (global rope, sliding rope) from whichever spelling the file uses.
    fn ropes(&self) -> Result<(Rope, Rope)> {
        let mut global = Rope::default();
        let mut sliding = Rope::default();
        if let Some(params) = self.rope_parameters.as_ref().filter(|v| !v.is_null()) {
            match (
                params.get("full_attention"),
                params.get("sliding_attention"),
            ) {
                (None, None) => global = parse_rope(params, "rope_parameters")?,
                (full, local) => {
                    if let Some(full) = full {
                        global = parse_rope(full, "rope_parameters.full_attention")?;
                    }
                    if let Some(local) = local {
                        sliding = parse_rope(local, "rope_parameters.sliding_attention")?;
                    }
                }
            }
        }
        if let Some(scaling) = self.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            global.linear_factor = parse_rope(scaling, "rope_scaling")?.linear_factor;
        }
        global.theta = global.theta.or(self.rope_theta);
        sliding.theta = sliding.theta.or(self.rope_local_base_freq);
        if sliding.linear_factor.is_some() {
            return Err(Error::InvalidModel(
                "config.json: linear RoPE scaling of sliding-window layers is not supported".into(),
            ));
        }
        Ok((global, sliding))
    }

    fn activation(&self, model_type: &str) -> Result<Activation> {
        let name = self
            .hidden_activation
            .as_deref()
            .or(self.hidden_act.as_deref())
            .unwrap_or("silu");
        match name {
            "silu" => Ok(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_tanh" => Ok(Activation::GeluTanh),
            other => Err(Error::InvalidModel(format!(
                "config.json: hidden activation `{other}` is not supported for {model_type}; \
                 expected silu or gelu_pytorch_tanh"
            ))),
        }
    }

    fn layer_windows(&self, family: Family) -> Result<Vec<Option<usize>>> {
        let Some(kinds) = &self.layer_types else {
            let window = match family {
                // Qwen configs carry a window they do not use unless asked.
                Family::Qwen2 | Family::Qwen3 if !self.use_sliding_window => None,
                Family::Qwen2 | Family::Qwen3 => {
                    return Err(Error::InvalidModel(
                        "config.json: use_sliding_window without layer_types is not supported"
                            .into(),
                    ))
                }
                _ => self.sliding_window,
            };
            return layer_windows(
                family,
                self.num_hidden_layers,
                window,
                self.sliding_window_pattern,
            );
        };
        if kinds.len() != self.num_hidden_layers {
            return Err(Error::InvalidModel(format!(
                "config.json: layer_types lists {} layers, expected num_hidden_layers = {}",
                kinds.len(),
                self.num_hidden_layers
            )));
        }
        kinds
            .iter()
            .map(|kind| match kind.as_str() {
                "full_attention" => Ok(None),
                "sliding_attention" => match self.sliding_window {
                    Some(w) if w > 0 => Ok(Some(w)),
                    _ => Err(Error::InvalidModel(
                        "config.json: sliding_attention layers need a positive sliding_window"
                            .into(),
                    )),
                },
                other => Err(Error::InvalidModel(format!(
                    "config.json: layer type `{other}`; supported: full_attention, sliding_attention"
                ))),
            })
            .collect()
    }
}

impl DecoderConfig {
    /// Parses a Hugging Face `config.json`; the family's differences become
    /// fields.
    ///
    /// ```
    /// use candle_engine::config::{Activation, DecoderConfig, Family};
    /// let config = DecoderConfig::from_hf_json(r#"{
    ///     "model_type": "gemma2", "vocab_size": 256, "hidden_size": 64,
    ///     "intermediate_size": 128, "num_hidden_layers": 2,
    ///     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    ///     "sliding_window": 8, "query_pre_attn_scalar": 16,
    ///     "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
    ///     "hidden_activation": "gelu_pytorch_tanh"
    /// }"#)?;
    /// assert_eq!(config.family, Family::Gemma2);
    /// assert_eq!(config.activation, Activation::GeluTanh);
    /// assert_eq!(config.layer_windows, vec![Some(8), None]);
    /// assert_eq!(config.embedding_scale, Some(8.0));
    /// assert_eq!(config.final_logit_softcap, Some(30.0));
    /// # Ok::<(), candle_engine::Error>(())
    /// ```
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let hf: HfConfig = serde_json::from_str(json)
            .map_err(|e| Error::InvalidModel(format!("config.json: {e}")))?;
        let model_type = hf.model_type.clone().unwrap_or_default();
        let Some(family) = Family::from_hf_model_type(&model_type) else {
            let name = if model_type.is_empty() {
                hf.architectures.join(", ")
            } else {
                model_type
            };
            return Err(Error::UnsupportedArchitecture {
                name,
                supported: Family::SUPPORTED,
            });
        };
        if let Some(factor) = hf.partial_rotary_factor.filter(|f| *f != 1.0) {
            return Err(Error::InvalidModel(format!(
                "config.json: partial_rotary_factor {factor} is not supported; expected 1.0"
            )));
        }
        if hf.attention_bias && family != Family::Qwen2 {
            // LLaMA-style attention_bias also biases the output projection,
            // which the decoder does not have.
            return Err(Error::InvalidModel(format!(
                "config.json: attention_bias is not supported for {model_type}"
            )));
        }
        let (global, sliding) = hf.ropes()?;
        let traits = FamilyTraits::of(family, hf.hidden_size);
        let head_dim = match hf.head_dim {
            Some(width) => width,
            None => head_width_from_hidden(
                hf.hidden_size,
                hf.num_attention_heads,
                Setting::HiddenSize.hf_name(),
                Setting::NumHeads.hf_name(),
            )?,
        };
        let gemma = family.is_gemma();
        let attention_scale = match hf.query_pre_attn_scalar.filter(|_| gemma) {
            Some(s) if s > 0.0 && s.is_finite() => s.powf(-0.5) as f32,
            Some(s) => {
                return Err(Error::InvalidModel(format!(
                    "config.json: query_pre_attn_scalar must be positive and finite, found {s}"
                )))
            }
            None => (head_dim as f32).powf(-0.5),
        };
        let config = DecoderConfig {
            family,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim,
            rope_theta: global.theta.unwrap_or(10_000.0),
            rope_linear_factor: global.linear_factor.unwrap_or(1.0),
            sliding_rope_theta: sliding.theta,
            rope_layout: RopeLayout::RotateHalf,
            rms_norm_eps: hf.rms_norm_eps,
            norm_weight_offset: if gemma { 1.0 } else { 0.0 },
            layer_windows: hf.layer_windows(family)?,
            qkv_bias: traits.qkv_bias,
            qk_norm: traits.qk_norm,
            sandwich_norms: traits.sandwich_norms,
            embedding_scale: traits.embedding_scale,
            activation: hf.activation(&model_type)?,
            attention_scale,
            attn_logit_softcap: hf
                .attn_logit_softcapping
                .filter(|_| gemma)
                .map(|cap| cap as f32),
            final_logit_softcap: hf
                .final_logit_softcapping
                .filter(|_| gemma)
                .map(|cap| cap as f32),
            max_position_embeddings: hf.max_position_embeddings,
            // Gemma always ties its output to the embedding.
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(gemma),
        };
        config.validate()?;
        Ok(config)
    }

    /// Rejects settings the forward pass cannot run, naming them as
    /// `config.json` does.
    pub fn validate(&self) -> Result<()> {
        self.validate_named(&|setting| setting.hf_name().to_string())
    }

    /// Rejects settings the forward pass cannot run: every count positive
    /// and every width product representable, every float finite and in its
    /// range. Errors name a setting by `name(setting)`, the key of the file
    /// it came from.
    pub fn validate_named(&self, name: &dyn Fn(Setting) -> String) -> Result<()> {
        let fail = |setting: Setting, problem: String| {
            Err(Error::InvalidModel(format!("{} {problem}", name(setting))))
        };
        for (setting, value) in [
            (Setting::VocabSize, self.vocab_size),
            (Setting::HiddenSize, self.hidden_size),
            (Setting::IntermediateSize, self.intermediate_size),
            (Setting::NumLayers, self.num_layers),
            (Setting::NumHeads, self.num_heads),
            (Setting::NumKvHeads, self.num_kv_heads),
            (Setting::HeadDim, self.head_dim),
            (Setting::MaxPositions, self.max_position_embeddings),
        ] {
            if value == 0 {
                return fail(setting, "must be positive, found 0".into());
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return fail(
                Setting::NumKvHeads,
                format!(
                    "({}) must divide {} ({})",
                    self.num_kv_heads,
                    name(Setting::NumHeads),
                    self.num_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return fail(
                Setting::HeadDim,
                format!("({}) must be even: RoPE rotates pairs", self.head_dim),
            );
        }
        if self.num_heads.checked_mul(self.head_dim).is_none() {
            return fail(
                Setting::NumHeads,
                format!(
                    "({}) times the head width ({}) overflows",
                    self.num_heads, self.head_dim
                ),
            );
        }
        if self.max_position_embeddings > MAX_POSITIONS {
            return fail(
                Setting::MaxPositions,
                format!(
                    "({}) exceeds {MAX_POSITIONS}, the most positions a 32-bit position id reaches",
                    self.max_position_embeddings
                ),
            );
        }
        if self.layer_windows.len() != self.num_layers {
            return fail(
                Setting::NumLayers,
                format!(
                    "({}) differs from the {} layer windows",
                    self.num_layers,
                    self.layer_windows.len()
                ),
            );
        }
        if self.layer_windows.contains(&Some(0)) {
            return fail(
                Setting::SlidingWindow,
                "must span at least one position".into(),
            );
        }
        let sliding_theta = self.sliding_rope_theta.unwrap_or(self.rope_theta);
        let floats = [
            (
                Setting::RmsNormEps,
                Some(self.rms_norm_eps),
                FloatRange::Epsilon,
            ),
            (
                Setting::RopeTheta,
                Some(self.rope_theta),
                FloatRange::AboveOne,
            ),
            (
                Setting::SlidingRopeTheta,
                Some(sliding_theta),
                FloatRange::AboveOne,
            ),
            (
                Setting::RopeLinearFactor,
                Some(self.rope_linear_factor),
                FloatRange::Positive,
            ),
            (
                Setting::AttentionScale,
                Some(self.attention_scale.into()),
                FloatRange::Positive,
            ),
            (
                Setting::EmbeddingScale,
                self.embedding_scale.map(f64::from),
                FloatRange::Positive,
            ),
            (
                Setting::AttnLogitSoftcap,
                self.attn_logit_softcap.map(f64::from),
                FloatRange::Positive,
            ),
            (
                Setting::FinalLogitSoftcap,
                self.final_logit_softcap.map(f64::from),
                FloatRange::Positive,
            ),
        ];
        for (setting, value, range) in floats {
            if let Some(value) = value.filter(|&v| !range.contains(v)) {
                return fail(
                    setting,
                    format!("must be {}, found {value}", range.describe()),
                );
            }
        }
        Ok(())
    }
}
