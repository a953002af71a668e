//! What an encoder is: the hyper-parameters of the BERT family (from
//! `config.json` or GGUF metadata) and how token states become one vector
//! (sentence-transformers' `modules.json`, `1_Pooling/config.json` and
//! `sentence_bert_config.json`).

use crate::{Error, Result};
use serde::Deserialize;

/// The encoder architectures. RoBERTa and XLM-RoBERTa compute exactly like
/// BERT; they differ in where positions start and in the classifier head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderFamily {
    Bert,
    Roberta,
    XlmRoberta,
}

/// The `model_type`s an encoder may have, for errors.
pub const SUPPORTED_ENCODERS: &str = "bert, roberta, xlm-roberta (config.json model_type), \
     bert (GGUF general.architecture)";

impl EncoderFamily {
    /// The family of a Hugging Face `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "bert" => Some(Self::Bert),
            "roberta" => Some(Self::Roberta),
            "xlm-roberta" => Some(Self::XlmRoberta),
            _ => None,
        }
    }

    /// The prefix task-head checkpoints (`*ForSequenceClassification`) put
    /// before the encoder's own tensor names.
    pub(crate) fn task_prefix(self) -> &'static str {
        match self {
            Self::Bert => "bert.",
            Self::Roberta | Self::XlmRoberta => "roberta.",
        }
    }

    /// RoBERTa's classifier is `dense → tanh → out_proj` on the first
    /// token; BERT's is the pooler (`dense → tanh`) then `classifier`.
    pub(crate) fn roberta_head(self) -> bool {
        self != Self::Bert
    }
}

/// The feed-forward activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderActivation {
    /// The exact GELU, `x Φ(x)` (`gelu`).
    Gelu,
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl EncoderActivation {
    fn from_hf(name: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Self::GeluTanh),
            "relu" => Ok(Self::Relu),
            other => Err(Error::InvalidModel(format!(
                "config.json hidden_act `{other}` is not supported; supported: gelu, gelu_new, \
                 gelu_pytorch_tanh, relu"
            ))),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub family: EncoderFamily,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Rows of the position table.
    pub max_positions: usize,
    /// Rows of the token-type (segment) table.
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub activation: EncoderActivation,
    /// The position of the first token: RoBERTa numbers positions from
    /// `pad_token_id + 1` (2), BERT from 0.
    pub position_offset: usize,
}

impl EncoderConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// The longest sequence the position table holds.
    pub fn max_tokens(&self) -> usize {
        self.max_positions.saturating_sub(self.position_offset)
    }

    /// Parses a Hugging Face `config.json`; a model that is not an encoder
    /// of a supported family is an `UnsupportedArchitecture` error.
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let raw: HfConfig = serde_json::from_str(json)
            .map_err(|e| Error::InvalidModel(format!("config.json: {e}")))?;
        let model_type = raw.model_type.unwrap_or_default();
        let family = EncoderFamily::from_model_type(&model_type).ok_or_else(|| {
            Error::UnsupportedArchitecture {
                name: format!("{model_type} (not an encoder this engine runs)"),
                supported: SUPPORTED_ENCODERS,
            }
        })?;
        if let Some(kind) = raw.position_embedding_type.as_deref() {
            if kind != "absolute" {
                return Err(Error::InvalidModel(format!(
                    "config.json position_embedding_type `{kind}` is not supported; supported: absolute"
                )));
            }
        }
        let need = |name: &str, value: Option<usize>| {
            value.ok_or_else(|| Error::InvalidModel(format!("config.json lacks {name}")))
        };
        let position_offset = match family {
            EncoderFamily::Bert => 0,
            EncoderFamily::Roberta | EncoderFamily::XlmRoberta => raw.pad_token_id.unwrap_or(1) + 1,
        };
        let config = Self {
            family,
            vocab_size: need("vocab_size", raw.vocab_size)?,
            hidden_size: need("hidden_size", raw.hidden_size)?,
            intermediate_size: need("intermediate_size", raw.intermediate_size)?,
            num_layers: need("num_hidden_layers", raw.num_hidden_layers)?,
            num_heads: need("num_attention_heads", raw.num_attention_heads)?,
            max_positions: need("max_position_embeddings", raw.max_position_embeddings)?,
            type_vocab_size: raw.type_vocab_size.unwrap_or(2),
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-12),
            activation: EncoderActivation::from_hf(raw.hidden_act.as_deref().unwrap_or("gelu"))?,
            position_offset,
        };
        config.validate()?;
        Ok(config)
    }

    /// Every count is positive and the heads fill the hidden width.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return Err(Error::InvalidModel(format!("{name} is 0")));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(Error::InvalidModel(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_heads
            )));
        }
        if self.max_tokens() < 2 {
            return Err(Error::InvalidModel(format!(
                "max_position_embeddings {} leaves no room for a sequence",
                self.max_positions
            )));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    pad_token_id: Option<usize>,
    position_embedding_type: Option<String>,
}

/// How the token states of one text become its vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The average over the text's tokens (special tokens included, as
    /// sentence-transformers does).
    Mean,
    /// The first token's state (`[CLS]` / `<s>`).
    Cls,
    /// The last token's state.
    LastToken,
}

impl Pooling {
    /// Parses a pooling name: `mean`, `cls` or `lasttoken`/`last`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "mean" => Ok(Self::Mean),
            "cls" => Ok(Self::Cls),
            "lasttoken" | "last" | "last_token" => Ok(Self::LastToken),
            other => Err(Error::InvalidModel(format!(
                "pooling `{other}` is not supported; supported: mean, cls, lasttoken"
            ))),
        }
    }
}

/// The sentence-transformers pipeline after the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolingConfig {
    pub pooling: Pooling,
    /// L2-normalise the pooled vector (a `Normalize` module).
    pub normalize: bool,
    /// Texts are cut to this many tokens, special tokens included.
    pub max_seq_length: usize,
}

impl PoolingConfig {
    /// The default for a directory without sentence-transformers files:
    /// mean pooling (what sentence-transformers builds for a plain
    /// transformers model), no normalisation, the position table's length.
    pub fn default_for(config: &EncoderConfig) -> Self {
        Self {
            pooling: Pooling::Mean,
            normalize: false,
            max_seq_length: config.max_tokens(),
        }
    }

    /// The pipeline described by `modules.json` (a list of modules) with
    /// `pooling_json` the Pooling module's `config.json` and
    /// `sentence_bert_json` the `sentence_bert_config.json`, each when
    /// present. Modules other than Transformer, Pooling and Normalize (a
    /// Dense projection, say) are errors naming them.
    pub fn from_sentence_transformers(
        config: &EncoderConfig,
        modules_json: &str,
        pooling_json: Option<&str>,
        sentence_bert_json: Option<&str>,
    ) -> Result<Self> {
        let modules: Vec<StModule> = serde_json::from_str(modules_json)
            .map_err(|e| Error::InvalidModel(format!("modules.json: {e}")))?;
        let mut result = Self::default_for(config);
        for module in &modules {
            let kind = module.kind.rsplit('.').next().unwrap_or_default();
            match kind {
                "Transformer" => {}
                "Pooling" => {
                    let json = pooling_json.ok_or_else(|| {
                        Error::InvalidModel(format!(
                            "modules.json names a Pooling module in `{}` but its config.json is missing",
                            module.path
                        ))
                    })?;
                    result.pooling = parse_pooling(json)?;
                }
                "Normalize" => result.normalize = true,
                other => {
                    return Err(Error::InvalidModel(format!(
                    "modules.json: the sentence-transformers module `{other}` is not supported; \
                         supported: Transformer, Pooling, Normalize"
                )))
                }
            }
        }
        if let Some(json) = sentence_bert_json {
            let st: StConfig = serde_json::from_str(json)
                .map_err(|e| Error::InvalidModel(format!("sentence_bert_config.json: {e}")))?;
            if let Some(max) = st.max_seq_length {
                result.max_seq_length = max.min(config.max_tokens());
            }
        }
        Ok(result)
    }
}

fn parse_pooling(json: &str) -> Result<Pooling> {
    let raw: StPooling = serde_json::from_str(json)
        .map_err(|e| Error::InvalidModel(format!("1_Pooling/config.json: {e}")))?;
    if let Some(mode) = raw.pooling_mode {
        return Pooling::from_name(&mode);
    }
    let modes = [
        (raw.pooling_mode_mean_tokens, Some(Pooling::Mean), "mean"),
        (raw.pooling_mode_cls_token, Some(Pooling::Cls), "cls"),
        (
            raw.pooling_mode_lasttoken,
            Some(Pooling::LastToken),
            "lasttoken",
        ),
        (raw.pooling_mode_max_tokens, None, "max"),
        (raw.pooling_mode_mean_sqrt_len_tokens, None, "mean_sqrt_len"),
        (raw.pooling_mode_weightedmean_tokens, None, "weightedmean"),
    ];
    let on: Vec<_> = modes.iter().filter(|(set, _, _)| *set).collect();
    match on.as_slice() {
        [(_, Some(pooling), _)] => Ok(*pooling),
        [(_, None, name)] => Err(Error::InvalidModel(format!(
            "1_Pooling/config.json: pooling mode `{name}` is not supported; supported: mean, cls, lasttoken"
        ))),
        [] => Err(Error::InvalidModel(
            "1_Pooling/config.json sets no pooling mode".into(),
        )),
        _ => Err(Error::InvalidModel(format!(
            "1_Pooling/config.json combines pooling modes ({}); one is supported",
            on.iter().map(|(_, _, n)| *n).collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[derive(Deserialize)]
struct StModule {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct StConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StPooling {
    pooling_mode: Option<String>,
    pooling_mode_cls_token: bool,
    pooling_mode_mean_tokens: bool,
    pooling_mode_max_tokens: bool,
    pooling_mode_mean_sqrt_len_tokens: bool,
    pooling_mode_weightedmean_tokens: bool,
    pooling_mode_lasttoken: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"{"model_type":"bert","vocab_size":10,"hidden_size":8,
        "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,
        "max_position_embeddings":32}"#;

    #[test]
    fn decoders_are_not_encoders() {
        let err = EncoderConfig::from_hf_json(r#"{"model_type":"llama"}"#).unwrap_err();
        assert!(err.to_string().contains("llama"), "{err}");
        assert!(err.to_string().contains("bert"), "{err}");
    }

    #[test]
    fn pooling_comes_from_the_sentence_transformers_files() {
        let config = EncoderConfig::from_hf_json(MINI).unwrap();
        let modules = r#"[{"type":"sentence_transformers.models.Transformer","path":""},
            {"type":"sentence_transformers.models.Pooling","path":"1_Pooling"},
            {"type":"sentence_transformers.models.Normalize","path":"2_Normalize"}]"#;
        let pooling = r#"{"pooling_mode_cls_token":true}"#;
        let st = PoolingConfig::from_sentence_transformers(
            &config,
            modules,
            Some(pooling),
            Some(r#"{"max_seq_length":16}"#),
        )
        .unwrap();
        assert_eq!(
            st,
            PoolingConfig {
                pooling: Pooling::Cls,
                normalize: true,
                max_seq_length: 16
            }
        );
        let dense = r#"[{"type":"sentence_transformers.models.Dense","path":"2_Dense"}]"#;
        let err =
            PoolingConfig::from_sentence_transformers(&config, dense, None, None).unwrap_err();
        assert!(err.to_string().contains("Dense"), "{err}");
        let max = r#"{"pooling_mode_max_tokens":true}"#;
        let err = PoolingConfig::from_sentence_transformers(&config, modules, Some(max), None)
            .unwrap_err();
        assert!(err.to_string().contains("`max`"), "{err}");
    }

    #[test]
    fn roberta_positions_start_after_the_padding_index() {
        let json = MINI.replace("\"bert\"", "\"xlm-roberta\"");
        let config = EncoderConfig::from_hf_json(&json).unwrap();
        assert_eq!(config.position_offset, 2);
        assert_eq!(config.max_tokens(), 30);
        assert_eq!(PoolingConfig::default_for(&config).max_seq_length, 30);
    }
}
