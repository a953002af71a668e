//! The tokenizer of a `bert` GGUF file, rebuilt as the Hugging Face pipeline
//! the family's own `tokenizer.json` describes. llama.cpp's converter writes
//! one of three vocabularies, and which one is also how the file tells the
//! family: WordPiece (`tokenizer.ggml.model = bert`) for BERT, byte-level
//! BPE (`gpt2`) for RoBERTa, SentencePiece's unigram model (`t5`) for
//! XLM-RoBERTa (BGE-M3, multilingual E5, bge-reranker-v2-m3).

use super::config::EncoderFamily;
use crate::gguf::GgufModel;
use crate::tokenizer::{gguf_added_tokens, gguf_bpe_pipeline, TOKEN_TYPE_CONTROL};
use crate::{Error, Result};
use candle_quant::gguf::{GgufFile, GgufVocab, MetadataValue};
use serde_json::{json, Value};

/// The tokenizer of `model` and the family its vocabulary belongs to.
pub(super) fn gguf_tokenizer(model: &GgufModel) -> Result<(tokenizers::Tokenizer, EncoderFamily)> {
    let file = model.file();
    let vocab = GgufVocab::from_gguf(file)?;
    let (family, document) = match vocab.model {
        "bert" => (EncoderFamily::Bert, wordpiece(file, &vocab)?),
        "gpt2" => (EncoderFamily::Roberta, byte_level_bpe(file, &vocab)?),
        "t5" => (EncoderFamily::XlmRoberta, unigram(file, &vocab)?),
        other => {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.model is `{other}`; a bert GGUF needs `bert` (WordPiece, BERT), \
                 `gpt2` (byte-level BPE, RoBERTa) or `t5` (unigram, XLM-RoBERTa)"
            )))
        }
    };
    let tokenizer = tokenizers::Tokenizer::from_bytes(document.to_string())
        .map_err(|e| Error::Tokenizer(format!("the GGUF vocabulary: {e}")))?;
    Ok((tokenizer, family))
}

/// A special token: the first of `keys` the file sets, else `default`.
fn special(
    file: &GgufFile<'_>,
    vocab: &GgufVocab<'_>,
    keys: &[&str],
    default: u32,
) -> Result<(String, u32)> {
    let mut id = default;
    if let Some(key) = keys.iter().find(|key| file.get(key).is_some()) {
        id = file.get_u32(key)?;
    }
    let token = vocab.tokens.get(id as usize).ok_or_else(|| {
        Error::Tokenizer(format!(
            "{} {id} is outside the vocabulary of {} tokens",
            keys.first().copied().unwrap_or_default(),
            vocab.tokens.len()
        ))
    })?;
    Ok((token.to_string(), id))
}

/// The classification and separator tokens (`cls_token_id`, else
/// `bos_token_id`; `seperator_token_id`, else `eos_token_id`), with the
/// family's ids when the file sets none.
fn cls_and_sep(
    file: &GgufFile<'_>,
    vocab: &GgufVocab<'_>,
    defaults: (u32, u32),
) -> Result<[(String, u32); 2]> {
    let cls = ["tokenizer.ggml.cls_token_id", "tokenizer.ggml.bos_token_id"];
    let sep = [
        "tokenizer.ggml.seperator_token_id",
        "tokenizer.ggml.eos_token_id",
    ];
    Ok([
        special(file, vocab, &cls, defaults.0)?,
        special(file, vocab, &sep, defaults.1)?,
    ])
}

/// RoBERTa's `<s> A </s></s> B </s>` around texts and pairs, every token
/// of segment 0.
fn roberta_template(file: &GgufFile<'_>, vocab: &GgufVocab<'_>) -> Result<Value> {
    let [cls, sep] = cls_and_sep(file, vocab, (0, 2))?;
    Ok(
        json!({"type": "RobertaProcessing", "sep": [sep.0, sep.1], "cls": [cls.0, cls.1],
        "trim_offsets": true, "add_prefix_space": false}),
    )
}

/// llama.cpp's converter stores word-initial WordPiece pieces with a
/// leading `▁` and continuations bare; this undoes that into Hugging Face's
/// `##` form and describes BERT's uncased pipeline.
fn wordpiece(file: &GgufFile<'_>, vocab: &GgufVocab<'_>) -> Result<Value> {
    let types = vocab.token_types.as_deref().unwrap_or_default();
    let mut pieces = serde_json::Map::new();
    for (id, token) in vocab.tokens.iter().enumerate() {
        let control = types.get(id) == Some(&TOKEN_TYPE_CONTROL);
        let piece = match token.strip_prefix('\u{2581}') {
            _ if control => token.to_string(),
            Some(word) => word.to_string(),
            None => format!("##{token}"),
        };
        pieces.insert(piece, id.into());
    }
    let [cls, sep] = cls_and_sep(file, vocab, (101, 102))?;
    let (unk, _) = special(file, vocab, &["tokenizer.ggml.unknown_token_id"], 100)?;
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
            "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": [sep.0, sep.1], "cls": [cls.0, cls.1]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": unk, "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": pieces},
    }))
}

/// RoBERTa's byte-level BPE: the decoders' GGUF BPE pipeline with
/// RoBERTa's template.
fn byte_level_bpe(file: &GgufFile<'_>, vocab: &GgufVocab<'_>) -> Result<Value> {
    let pre = match file.get("tokenizer.ggml.pre") {
        Some(_) => Some(file.get_str("tokenizer.ggml.pre")?),
        None => None,
    };
    let mut document = gguf_bpe_pipeline(
        &vocab.tokens,
        vocab.token_types.as_deref().unwrap_or_default(),
        vocab.merges.as_deref().unwrap_or_default(),
        pre,
    )?;
    document["post_processor"] = roberta_template(file, vocab)?;
    Ok(document)
}

/// XLM-RoBERTa's SentencePiece unigram model as llama.cpp reads the
/// converter's keys: the precompiled normalisation map, then (with
/// `remove_extra_whitespaces`) no space at either end and none doubled,
/// then a `▁` before the text (with `add_space_prefix`) and for every
/// space, then the most probable segmentation under `tokenizer.ggml.scores`.
fn unigram(file: &GgufFile<'_>, vocab: &GgufVocab<'_>) -> Result<Value> {
    let scores = vocab.scores.as_deref().ok_or_else(|| {
        Error::Tokenizer("a t5 (unigram) vocabulary needs tokenizer.ggml.scores".into())
    })?;
    let types = vocab.token_types.as_deref().unwrap_or_default();
    let flag = |key: &str, default: bool| -> Result<bool> {
        Ok(match file.get(key) {
            Some(_) => file.get_bool(key)?,
            None => default,
        })
    };
    let mut normalizers = Vec::new();
    if let Some(charsmap) = precompiled_charsmap(file)? {
        let precompiled = tokenizers::normalizers::Precompiled::from(&charsmap)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.ggml.precompiled_charsmap: {e}")))?;
        normalizers.push(
            serde_json::to_value(&precompiled).map_err(|e| {
                Error::Tokenizer(format!("tokenizer.ggml.precompiled_charsmap: {e}"))
            })?,
        );
    }
    if flag("tokenizer.ggml.remove_extra_whitespaces", true)? {
        normalizers.push(json!({"type": "Strip", "strip_left": true, "strip_right": true}));
        normalizers.push(json!({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}));
    }
    let prepend = if flag("tokenizer.ggml.add_space_prefix", true)? {
        "always"
    } else {
        "never"
    };
    let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": prepend, "split": true});
    let (_, unk_id) = special(file, vocab, &["tokenizer.ggml.unknown_token_id"], 3)?;
    let pieces: Vec<Value> = vocab
        .tokens
        .iter()
        .zip(scores)
        .map(|(token, score)| json!([token, score]))
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": gguf_added_tokens(&vocab.tokens, types),
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": metaspace,
        "post_processor": roberta_template(file, vocab)?,
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": unk_id, "vocab": pieces, "byte_fallback": false},
    }))
}

/// `tokenizer.ggml.precompiled_charsmap`: SentencePiece's normalisation
/// rules as bytes (gguf-py writes them as an array of 8-bit integers).
fn precompiled_charsmap(file: &GgufFile<'_>) -> Result<Option<Vec<u8>>> {
    const KEY: &str = "tokenizer.ggml.precompiled_charsmap";
    if file.get(KEY).is_none() {
        return Ok(None);
    }
    let array = file.get_array(KEY)?;
    let bytes = array
        .iter()
        .map(|v| match v {
            MetadataValue::U8(b) => Some(b),
            MetadataValue::I8(b) => Some(b as u8),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| {
            Error::Tokenizer(format!(
                "{KEY} is an array of {}, not of bytes",
                array.element_type()
            ))
        })?;
    Ok(Some(bytes))
}
