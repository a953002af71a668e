//! Opening an encoder from disk: a Hugging Face directory or a GGUF file.

use super::config::{EncoderActivation, EncoderFamily, Pooling, SUPPORTED_ENCODERS};
use super::config::{EncoderConfig, PoolingConfig};
use super::model::{hf_naming, Encoder, Linear, Naming};
use super::{vocab, ClassifierHead};
use crate::gguf::GgufModel;
use crate::weights::{SafetensorsDir, WeightSource};
use crate::{Error, Result};
use std::path::Path;

/// What a model file or directory holds.
pub(super) struct Parts {
    pub encoder: Encoder,
    pub tokenizer: tokenizers::Tokenizer,
    pub pooling: PoolingConfig,
    pub head: Option<ClassifierHead>,
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
    })
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    if path.exists() {
        read(path, "sentence-transformers configuration").map(Some)
    } else {
        Ok(None)
    }
}

/// Whether `path` holds an encoder this module runs (a directory whose
/// `config.json` names one, or a `bert` GGUF file). Unreadable paths are
/// errors.
pub fn is_encoder(path: &Path) -> Result<bool> {
    if path.is_dir() {
        let json = read(&path.join("config.json"), "the model's config.json")?;
        let raw: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| Error::InvalidModel(format!("config.json: {e}")))?;
        let model_type = raw["model_type"].as_str().unwrap_or_default();
        return Ok(super::EncoderFamily::from_model_type(model_type).is_some());
    }
    let file = candle_quant::gguf::GgufFile::open(path)?;
    Ok(file.get_str("general.architecture")? == "bert")
}

pub(super) fn load(path: &Path) -> Result<Parts> {
    if path.is_dir() {
        return load_hf_dir(path);
    }
    if !path.exists() {
        return Err(Error::no_model_at(path));
    }
    load_gguf(GgufModel::new(candle_quant::gguf::GgufFile::open(path)?))
}

fn load_hf_dir(dir: &Path) -> Result<Parts> {
    let config =
        EncoderConfig::from_hf_json(&read(&dir.join("config.json"), "the model's config.json")?)?;
    let tokenizer_path = dir.join("tokenizer.json");
    if !tokenizer_path.exists() {
        return Err(Error::Io {
            path: tokenizer_path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the model directory has no tokenizer.json (save it with a fast tokenizer)",
            ),
        });
    }
    let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
    let pooling = pooling_of_dir(dir, &config)?;
    let source = SafetensorsDir::open(dir)?;
    let naming = hf_naming(&source, config.family)?;
    let head = hf_head(&source, &config)?;
    let encoder = Encoder::load(config, &source, &naming)?;
    Ok(Parts {
        encoder,
        tokenizer,
        pooling,
        head,
    })
}

/// The sentence-transformers pipeline of a model directory, or the
/// documented default when it has none.
pub(crate) fn pooling_of_dir(dir: &Path, config: &EncoderConfig) -> Result<PoolingConfig> {
    Ok(match read_optional(&dir.join("modules.json"))? {
        Some(modules) => {
            let pooling_dir = pooling_path(&modules);
            let pooling_json = match pooling_dir {
                Some(sub) => read_optional(&dir.join(sub).join("config.json"))?,
                None => None,
            };
            PoolingConfig::from_sentence_transformers(
                config,
                &modules,
                pooling_json.as_deref(),
                read_optional(&dir.join("sentence_bert_config.json"))?.as_deref(),
            )?
        }
        None => PoolingConfig::default_for(config),
    })
}

/// The folder `modules.json` gives its Pooling module.
fn pooling_path(modules: &str) -> Option<String> {
    let list: Vec<serde_json::Value> = serde_json::from_str(modules).ok()?;
    list.iter()
        .find(|m| m["type"].as_str().is_some_and(|t| t.ends_with(".Pooling")))
        .and_then(|m| m["path"].as_str().map(str::to_string))
}

/// The Hugging Face names of a sequence-classification head's two layers:
/// (the dense layer followed by tanh, the output layer). BERT's dense layer
/// is its pooler.
pub(crate) fn hf_head_names(family: EncoderFamily) -> (&'static str, &'static str) {
    if family.roberta_head() {
        ("classifier.dense", "classifier.out_proj")
    } else {
        ("bert.pooler.dense", "classifier")
    }
}

/// A sequence-classification head, when the checkpoint has one.
fn hf_head(source: &dyn WeightSource, config: &EncoderConfig) -> Result<Option<ClassifierHead>> {
    let h = config.hidden_size;
    let (dense, output) = hf_head_names(config.family);
    let Some(output) = Linear::load_optional(source, output, h)? else {
        return Ok(None);
    };
    let dense = Linear::load_optional(source, dense, h)?
        .ok_or_else(|| Error::MissingTensor(format!("{dense}.weight")))?;
    Ok(Some(ClassifierHead { dense, output }))
}

/// A GGUF file of llama.cpp's `bert` architecture, as its
/// `convert_hf_to_gguf.py` (or `hanzo-candle quantize`) writes BERT,
/// RoBERTa and XLM-RoBERTa. The file does not say whether vectors are
/// normalised; like llama.cpp, they are (turn it off with
/// [`super::Embedder::set_normalize`]). Texts are cut at the file's context
/// length.
fn load_gguf(model: GgufModel) -> Result<Parts> {
    let f = model.file();
    let arch = f.get_str("general.architecture")?;
    if arch != "bert" {
        return Err(Error::UnsupportedArchitecture {
            name: format!("{arch} (not an encoder this engine runs)"),
            supported: SUPPORTED_ENCODERS,
        });
    }
    let count = |key: &str| -> Result<usize> { Ok(f.get_usize(&format!("bert.{key}"))?) };
    let rows = |name: &str| f.tensor(name).ok().map(|t| t.info.shape()[0]);
    let tokens = f.get_array("tokenizer.ggml.tokens")?.len();
    let (tokenizer, family) = vocab::gguf_tokenizer(&model)?;
    let config = EncoderConfig {
        family,
        vocab_size: tokens,
        hidden_size: count("embedding_length")?,
        intermediate_size: count("feed_forward_length")?,
        num_layers: count("block_count")?,
        num_heads: count("attention.head_count")?,
        max_positions: count("context_length")?,
        type_vocab_size: rows("token_types.weight").unwrap_or(1),
        layer_norm_eps: f.get_f32("bert.attention.layer_norm_epsilon")? as f64,
        activation: EncoderActivation::Gelu,
        // The converter drops the position rows RoBERTa's numbering skips
        // (`pad_token_id + 1` of them), and lowers the context length by as
        // many.
        position_offset: 0,
    };
    config.validate()?;
    // llama.cpp's LLAMA_POOLING_TYPE_*: 1 mean, 2 CLS, 3 last, 4 rank (a
    // classifier on the first token).
    let has_head = f.tensor("cls.output.weight").is_ok();
    let pooling = match f.get("bert.pooling_type") {
        None => Pooling::Mean,
        Some(_) => match f.get_usize("bert.pooling_type")? {
            1 => Pooling::Mean,
            2 => Pooling::Cls,
            3 => Pooling::LastToken,
            4 if has_head => Pooling::Cls,
            other => {
                return Err(Error::InvalidModel(format!(
                    "bert.pooling_type {other} is not supported; supported: 1 (mean), 2 (cls), \
                     3 (last), 4 (rank, with cls.output.* tensors)"
                )))
            }
        },
    };
    let pooling = PoolingConfig {
        pooling,
        normalize: true,
        max_seq_length: config.max_tokens(),
    };
    let head = match Linear::load_optional(&model, "cls.output", config.hidden_size)? {
        Some(output) => {
            let dense = Linear::load_optional(&model, "cls", config.hidden_size)?
                .ok_or_else(|| Error::MissingTensor("cls.weight".into()))?;
            Some(ClassifierHead { dense, output })
        }
        None => None,
    };
    let encoder = Encoder::load(config, &model, &Naming::Gguf)?;
    Ok(Parts {
        encoder,
        tokenizer,
        pooling,
        head,
    })
}
