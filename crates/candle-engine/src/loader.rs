//! Opening a model: one `.gguf` file (from disk, or from bytes in the
//! browser), or a Hugging Face directory (`config.json`, `tokenizer.json`,
//! `*.safetensors`). Only the file-path parts are native-only.

use crate::backend::Backend;
use crate::chat::ChatTemplate;
use crate::config::DecoderConfig;
use crate::gguf::GgufModel;
use crate::model::Decoder;
use crate::tokenizer::Tokenizer;
#[cfg(not(target_arch = "wasm32"))]
use crate::weights::SafetensorsDir;
use crate::weights::WeightSource;
use crate::{Error, Result};
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

/// Tokens that end an assistant turn in common chat formats; any the
/// vocabulary has also end a generation.
const END_OF_TURN_TOKENS: [&str; 4] = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"];

/// Everything needed to generate text with one model.
pub struct Model {
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
    pub chat: ChatTemplate,
    /// The context the model is loaded for (RoPE tables, KV cache size).
    pub max_context: usize,
}

#[cfg(not(target_arch = "wasm32"))]
impl Model {
    /// Loads `path` (a `.gguf` file or a Hugging Face model directory) for
    /// contexts of up to `max_context` tokens (default: the model's own,
    /// capped at 4096 to keep the KV cache small).
    pub fn load(path: &Path, max_context: Option<usize>) -> Result<Self> {
        Self::load_on(path, max_context, Backend::Native)
    }

    /// [`Model::load`] for `backend` (`Backend::Tensors` for CUDA or Metal).
    pub fn load_on(path: &Path, max_context: Option<usize>, backend: Backend) -> Result<Self> {
        if path.is_dir() {
            return Self::load_hf_dir(path, max_context, backend);
        }
        if !path.exists() {
            return Err(Error::no_model_at(path));
        }
        let model = GgufModel::new(candle_quant::gguf::GgufFile::open(path)?);
        Self::from_gguf_on(model, max_context, backend)
    }

    fn load_hf_dir(dir: &Path, max_context: Option<usize>, backend: Backend) -> Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| Error::io(&dir.join(name), e))
        };
        let config_json = read("config.json")?;
        let config = DecoderConfig::from_hf_json(&config_json)?;
        let raw: serde_json::Value = serde_json::from_str(&config_json)
            .map_err(|e| Error::InvalidModel(format!("config.json: {e}")))?;
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            match v {
                serde_json::Value::Number(n) => {
                    n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
                }
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|n| n.as_u64())
                    .map(|n| n as u32)
                    .collect(),
                _ => vec![],
            }
        };
        let bos = ids(&raw["bos_token_id"]).first().copied();
        let tokenizer_json = std::fs::read(dir.join("tokenizer.json"))
            .map_err(|e| Error::io(&dir.join("tokenizer.json"), e))?;
        let tokenizer = Tokenizer::from_json(&tokenizer_json, bos, ids(&raw["eos_token_id"]))?;
        let template_source = read("tokenizer_config.json")
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["chat_template"].as_str().map(str::to_string));
        let source = SafetensorsDir::open(dir)?;
        Self::assemble(
            config,
            &source,
            tokenizer,
            template_source.as_deref(),
            max_context,
            backend,
        )
    }
}

impl Model {
    /// Builds a model from a validated GGUF file (on the web: from bytes).
    pub fn from_gguf(model: GgufModel, max_context: Option<usize>) -> Result<Self> {
        Self::from_gguf_on(model, max_context, Backend::Native)
    }

    /// [`Model::from_gguf`] for `backend`.
    pub fn from_gguf_on(
        model: GgufModel,
        max_context: Option<usize>,
        backend: Backend,
    ) -> Result<Self> {
        let config = model.config()?;
        let tokenizer = model.tokenizer()?;
        Self::assemble(
            config,
            &model,
            tokenizer,
            model.chat_template()?,
            max_context,
            backend,
        )
    }

    /// What both formats share once their parts are read: the context, the
    /// end-of-turn tokens, the chat template and the decoder.
    fn assemble(
        config: DecoderConfig,
        source: &dyn WeightSource,
        mut tokenizer: Tokenizer,
        template: Option<&str>,
        max_context: Option<usize>,
        backend: Backend,
    ) -> Result<Self> {
        let max_context = context_for(&config, max_context)?;
        add_end_of_turn_tokens(&mut tokenizer);
        let chat = ChatTemplate::for_tokenizer(template, &tokenizer)?;
        let decoder = Decoder::load_on(config, source, max_context, backend)?;
        Ok(Self {
            decoder,
            tokenizer,
            chat,
            max_context,
        })
    }
}

fn context_for(config: &DecoderConfig, requested: Option<usize>) -> Result<usize> {
    let trained = config.max_position_embeddings;
    match requested {
        Some(0) => Err(Error::InvalidModel(
            "the context size must be at least 1".into(),
        )),
        Some(n) if n > trained => Err(Error::InvalidModel(format!(
            "requested context {n} exceeds the {trained} positions the model was trained for"
        ))),
        Some(n) => Ok(n),
        None => Ok(trained.min(4096)),
    }
}

fn add_end_of_turn_tokens(tokenizer: &mut Tokenizer) {
    for token in END_OF_TURN_TOKENS {
        if let Some(id) = tokenizer.token_to_id(token) {
            tokenizer.add_eos(id);
        }
    }
}
