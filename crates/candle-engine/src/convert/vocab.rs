//! Vocabularies between `tokenizer.json` (byte-level BPE) and GGUF's
//! `tokenizer.ggml.*` keys, both ways.

use super::files::field_error;
use super::{ConvertError, Result};
use crate::tokenizer::{
    gguf_bpe_document, LLAMA3_REGEX, QWEN2_REGEX, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED,
};
use candle_quant::gguf::{GgufVocab, Value, ValueType};
use serde_json::Value as Json;
use std::path::Path;

/// llama.cpp's token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_UNUSED: i32 = 5;

const SUPPORTED_PRE: &str =
    "ByteLevel (gpt2), Digits + ByteLevel (smollm), the llama3 or qwen2 Split regex + ByteLevel";

/// `tokenizer.ggml.*` from a byte-level BPE `tokenizer.json`; special
/// token ids from `config.json`, else `generation_config.json`.
pub(super) fn vocabulary_metadata(
    path: &Path,
    doc: &Json,
    vocab_size: usize,
    config: &Json,
    generation: Option<&Json>,
) -> Result<Vec<(String, Value)>> {
    let model = &doc["model"];
    if model["type"] != "BPE" {
        return Err(field_error(
            path,
            "model.type",
            "BPE (byte-level)",
            &model["type"],
        ));
    }
    let pre = pre_tokenizer_name(&doc["pre_tokenizer"])
        .ok_or_else(|| field_error(path, "pre_tokenizer", SUPPORTED_PRE, &doc["pre_tokenizer"]))?;
    let vocab = model["vocab"].as_object().ok_or_else(|| {
        field_error(
            path,
            "model.vocab",
            "an object of token -> id",
            &model["vocab"],
        )
    })?;
    let mut entries: Vec<(usize, String, i32)> = Vec::with_capacity(vocab.len());
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            field_error(path, &format!("model.vocab[{token:?}]"), "a token id", id)
        })?;
        entries.push((id as usize, token.clone(), TOKEN_NORMAL));
    }
    for added in doc["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            return Err(field_error(path, "added_tokens[]", "{id, content}", added));
        };
        let ty = if added["special"].as_bool().unwrap_or(false) {
            TOKEN_TYPE_CONTROL
        } else {
            TOKEN_TYPE_USER_DEFINED
        };
        entries.push((id as usize, content.to_string(), ty));
    }
    let max_id = entries.iter().map(|e| e.0).max().unwrap_or(0);
    if max_id >= vocab_size {
        return Err(ConvertError::Field {
            path: path.to_path_buf(),
            field: "model.vocab".into(),
            expected: format!("ids below config.json vocab_size {vocab_size}"),
            found: format!("id {max_id}"),
        });
    }
    // Ids the tokenizer never produces (embedding rows padded to a round
    // size) get placeholder tokens, as llama.cpp's converter writes them.
    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut types = vec![TOKEN_UNUSED; vocab_size];
    for (id, token, ty) in entries {
        tokens[id] = token;
        types[id] = ty;
    }
    let merges: Vec<String> = match &model["merges"] {
        Json::Array(items) => items
            .iter()
            .map(|m| match m {
                Json::String(s) => Ok(s.clone()),
                Json::Array(pair) if pair.len() == 2 && pair.iter().all(Json::is_string) => {
                    Ok(format!(
                        "{} {}",
                        pair[0].as_str().unwrap_or_default(),
                        pair[1].as_str().unwrap_or_default()
                    ))
                }
                other => Err(field_error(
                    path,
                    "model.merges[]",
                    "\"a b\" or [\"a\", \"b\"]",
                    other,
                )),
            })
            .collect::<Result<_>>()?,
        other => return Err(field_error(path, "model.merges", "an array", other)),
    };
    let mut m: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), "gpt2".into()),
        ("tokenizer.ggml.pre".into(), pre.into()),
        ("tokenizer.ggml.tokens".into(), Value::string_array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::array(ValueType::I32, types),
        ),
        ("tokenizer.ggml.merges".into(), Value::string_array(merges)),
    ];
    for (key, field) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ] {
        let id = first_id(&config[field]).or_else(|| generation.and_then(|g| first_id(&g[field])));
        if let Some(id) = id.filter(|&id| (id as usize) < vocab_size) {
            m.push((key.into(), id.into()));
        }
    }
    Ok(m)
}

fn first_id(v: &Json) -> Option<u32> {
    match v {
        Json::Array(items) => items.first().and_then(first_id),
        other => other.as_u64().and_then(|n| u32::try_from(n).ok()),
    }
}

/// The `tokenizer.ggml.pre` name of a byte-level pre-tokenizer.
fn pre_tokenizer_name(pre: &Json) -> Option<&'static str> {
    let is_byte_level = |p: &Json| p["type"] == "ByteLevel";
    match pre["type"].as_str()? {
        "ByteLevel" if pre["use_regex"].as_bool().unwrap_or(true) => Some("gpt2"),
        "Sequence" => match pre["pretokenizers"].as_array()?.as_slice() {
            [digits, byte_level]
                if digits["type"] == "Digits"
                    && digits["individual_digits"] == true
                    && is_byte_level(byte_level) =>
            {
                Some("smollm")
            }
            [split, byte_level] if split["type"] == "Split" && is_byte_level(byte_level) => {
                match split["pattern"]["Regex"].as_str()? {
                    LLAMA3_REGEX => Some("llama-bpe"),
                    QWEN2_REGEX => Some("qwen2"),
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    }
}

/// A `tokenizer.json` for the byte-level BPE vocabulary of a GGUF file;
/// `Err` carries an unknown pre-tokenizer name.
pub(super) fn tokenizer_json(
    vocab: &GgufVocab<'_>,
    pre: &str,
) -> std::result::Result<Json, String> {
    gguf_bpe_document(
        &vocab.tokens,
        vocab.token_types.as_deref().unwrap_or_default(),
        vocab.merges.as_deref().unwrap_or_default(),
        pre,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pre_tokenizers_are_recognised_by_structure() {
        let smollm = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]});
        assert_eq!(pre_tokenizer_name(&smollm), Some("smollm"));
        assert_eq!(
            pre_tokenizer_name(&json!({"type": "ByteLevel"})),
            Some("gpt2")
        );
        let llama3 = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}}, {"type": "ByteLevel", "use_regex": false}]});
        assert_eq!(pre_tokenizer_name(&llama3), Some("llama-bpe"));
        assert_eq!(pre_tokenizer_name(&json!({"type": "Metaspace"})), None);
    }
}
