//! The GGUF metadata of a llama model that is not its vocabulary: the
//! `general.*` and `llama.*` hyper-parameters from `config.json`, and the
//! chat template from `tokenizer_config.json`.

use super::files::field_error;
use super::Result;
use crate::config::DecoderConfig;
use candle_quant::gguf::Value;
use candle_quant::preset::Preset;
use serde_json::Value as Json;
use std::path::Path;

/// The `general.*` keys of a file for `architecture`, quantized with
/// `preset`, named after the model directory `dir`.
pub(super) fn general_metadata(
    architecture: &str,
    preset: Preset,
    dir: &Path,
) -> Vec<(String, Value)> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    vec![
        ("general.architecture".into(), architecture.into()),
        ("general.name".into(), name.into()),
        ("general.file_type".into(), preset.file_type().into()),
        ("general.quantization_version".into(), 2u32.into()),
    ]
}

pub(super) fn llama_metadata(
    c: &DecoderConfig,
    preset: Preset,
    dir: &Path,
) -> Vec<(String, Value)> {
    let u32_of = |n: usize| Value::U32(u32::try_from(n).unwrap_or(u32::MAX));
    let mut m = general_metadata("llama", preset, dir);
    m.extend([
        ("llama.vocab_size".into(), u32_of(c.vocab_size)),
        (
            "llama.context_length".into(),
            u32_of(c.max_position_embeddings),
        ),
        ("llama.embedding_length".into(), u32_of(c.hidden_size)),
        ("llama.block_count".into(), u32_of(c.num_layers)),
        (
            "llama.feed_forward_length".into(),
            u32_of(c.intermediate_size),
        ),
        ("llama.attention.head_count".into(), u32_of(c.num_heads)),
        (
            "llama.attention.head_count_kv".into(),
            u32_of(c.num_kv_heads),
        ),
        ("llama.rope.freq_base".into(), (c.rope_theta as f32).into()),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            (c.rms_norm_eps as f32).into(),
        ),
        ("llama.rope.dimension_count".into(), u32_of(c.head_dim)),
    ]);
    if c.head_dim * c.num_heads != c.hidden_size {
        m.push(("llama.attention.key_length".into(), u32_of(c.head_dim)));
        m.push(("llama.attention.value_length".into(), u32_of(c.head_dim)));
    }
    m
}

pub(super) fn chat_template(
    path: &Path,
    tokenizer_config: Option<&Json>,
) -> Result<Option<String>> {
    let Some(value) = tokenizer_config.map(|c| &c["chat_template"]) else {
        return Ok(None);
    };
    match value {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s.clone())),
        // Several named templates: the one used for plain chat.
        Json::Array(named) => Ok(named
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string)),
        other => Err(field_error(path, "chat_template", "a string", other)),
    }
}
