//! Hugging Face BERT, RoBERTa or XLM-RoBERTa directory -> GGUF of
//! llama.cpp's `bert` architecture, quantized: the encoder half of
//! `hanzo-candle quantize`. The layout is what llama.cpp's
//! `convert_hf_to_gguf.py` writes (tensor names, `bert.*` keys, RoBERTa's
//! position table without the rows its numbering skips, and the family's
//! vocabulary: WordPiece with `▁` marking word starts, byte-level BPE, or
//! SentencePiece's unigram model), so the file loads in `Embedder::load` and
//! in llama.cpp's embedding mode.

use super::files::{field_error, parse_json, read_text, require};
use super::metadata::general_metadata;
use super::to_gguf::QuantizeSummary;
use super::vocab::vocabulary_metadata;
use super::{ConvertError, Result};
use crate::encoder::Pooling;
use crate::encoder::{
    hf_head_names, hf_naming, pooling_of_dir, renames, EncoderConfig, EncoderFamily, Naming,
};
use crate::weights::{RawTensor, SafetensorsDir, WeightSource};
use candle_quant::gguf::{write_gguf, Progress, Value, ValueType};
use candle_quant::preset::{plan_types, Preset};
use serde_json::Value as Json;
use std::path::Path;

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const UNUSED: i32 = 5;

/// Quantizes the encoder directory `dir` (`config.json`, `tokenizer.json`,
/// `*.safetensors`, and sentence-transformers' pooling files when present)
/// to `out`. A sequence-classification head (a cross-encoder) is carried as
/// llama.cpp's `cls` (BERT's pooler or RoBERTa's `classifier.dense`,
/// followed by tanh) and `cls.output` (the classifier), with its rank
/// pooling type; other task heads are dropped.
pub fn quantize_encoder_dir(
    dir: &Path,
    preset: Preset,
    out: &Path,
    progress: impl FnMut(Progress<'_>),
) -> Result<QuantizeSummary> {
    let config_path = require(dir, "config.json", "the model's hyper-parameters")?;
    let tokenizer_path = require(dir, "tokenizer.json", "the tokenizer")?;
    let config = EncoderConfig::from_hf_json(&read_text(&config_path)?)?;
    let pooling = pooling_of_dir(dir, &config)?;
    let checkpoint = SafetensorsDir::open(dir)?;
    let from = hf_naming(&checkpoint, config.family)?;
    // (GGUF name, tensor, leading rows left out): RoBERTa numbers positions
    // from `pad_token_id + 1`, and llama.cpp's file starts its table there.
    let mut tensors: Vec<(String, RawTensor, usize)> = Vec::new();
    let positions = format!("{}.weight", Naming::Gguf.positions());
    let mut carry = |hf: &str, gguf: &str, bias: bool| -> Result<()> {
        let suffixes: &[&str] = if bias {
            &["weight", "bias"]
        } else {
            &["weight"]
        };
        for suffix in suffixes {
            let key = format!("{hf}.{suffix}");
            let raw = checkpoint
                .get(&key)?
                .ok_or(ConvertError::MissingTensor { tensor: key })?;
            let name = format!("{gguf}.{suffix}");
            let skip = if name == positions {
                config.position_offset
            } else {
                0
            };
            if skip >= raw.dims.first().copied().unwrap_or(0) && skip > 0 {
                return Err(ConvertError::Field {
                    path: config_path.clone(),
                    field: "pad_token_id".into(),
                    expected: format!("fewer than the {} position rows", raw.dims[0]),
                    found: skip.saturating_sub(1).to_string(),
                });
            }
            tensors.push((name, raw, skip));
        }
        Ok(())
    };
    for (hf, gguf, bias) in renames(&config, &from, &Naming::Gguf) {
        carry(&hf, &gguf, bias)?;
    }
    let (dense, output) = hf_head_names(config.family);
    let has_head = checkpoint.get(&format!("{output}.weight"))?.is_some();
    if has_head {
        carry(dense, "cls", true)?;
        carry(output, "cls.output", true)?;
    }

    // llama.cpp's LLAMA_POOLING_TYPE_RANK for a cross-encoder.
    let pooling_type = if has_head {
        RANK
    } else {
        pooling_type(pooling.pooling)
    };
    let mut metadata = bert_metadata(&config, pooling_type, preset, dir);
    let (path, size) = (&tokenizer_path, config.vocab_size);
    let tokenizer = parse_json(path, &read_text(path)?)?;
    metadata.extend(match config.family {
        EncoderFamily::Bert => wordpiece_vocabulary(path, &tokenizer, size)?,
        // No config.json ids: the template's own tokens are the specials.
        EncoderFamily::Roberta => vocabulary_metadata(path, &tokenizer, size, &Json::Null, None)?,
        EncoderFamily::XlmRoberta => unigram_vocabulary(path, &tokenizer, size)?,
    });
    if config.family != EncoderFamily::Bert {
        metadata.extend(roberta_specials(path, &tokenizer, size)?);
    }
    let names: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(name, raw, skip)| {
            let mut dims = raw.dims.clone();
            dims[0] -= skip;
            (name.clone(), dims)
        })
        .collect();
    let plan = plan_types(preset, &names);
    let output_bytes = write_gguf(
        out,
        metadata,
        &plan,
        |i| {
            let (_, raw, skip) = &tensors[i];
            let values = raw.to_f32(&raw.dims.clone())?;
            let row: usize = raw.dims[1..].iter().product();
            Ok::<_, crate::Error>(values[skip * row..].to_vec())
        },
        progress,
    )?;
    let input_bytes = tensors
        .iter()
        .map(|(_, raw, _)| raw.bytes.as_slice().len() as u64)
        .sum();
    Ok(QuantizeSummary::of(
        "bert",
        &plan,
        input_bytes,
        output_bytes,
    ))
}

/// llama.cpp's LLAMA_POOLING_TYPE_RANK: a classifier on the first token.
const RANK: u32 = 4;

/// llama.cpp's LLAMA_POOLING_TYPE_* of an embedding model's pooling.
fn pooling_type(pooling: Pooling) -> u32 {
    match pooling {
        Pooling::Mean => 1,
        Pooling::Cls => 2,
        Pooling::LastToken => 3,
    }
}

fn bert_metadata(
    c: &EncoderConfig,
    pooling_type: u32,
    preset: Preset,
    dir: &Path,
) -> Vec<(String, Value)> {
    let u32_of = |n: usize| Value::U32(u32::try_from(n).unwrap_or(u32::MAX));
    let mut m = general_metadata("bert", preset, dir);
    m.extend([
        ("bert.context_length".into(), u32_of(c.max_tokens())),
        ("bert.embedding_length".into(), u32_of(c.hidden_size)),
        (
            "bert.feed_forward_length".into(),
            u32_of(c.intermediate_size),
        ),
        ("bert.block_count".into(), u32_of(c.num_layers)),
        ("bert.attention.head_count".into(), u32_of(c.num_heads)),
        (
            "bert.attention.layer_norm_epsilon".into(),
            (c.layer_norm_eps as f32).into(),
        ),
        ("bert.attention.causal".into(), false.into()),
        ("bert.pooling_type".into(), pooling_type.into()),
        (
            "tokenizer.ggml.token_type_count".into(),
            u32_of(c.type_vocab_size),
        ),
    ]);
    m
}

/// `tokenizer.ggml.*` for a WordPiece `tokenizer.json`, in llama.cpp's
/// form: word-initial pieces get a leading `▁`, `##` continuations lose
/// their prefix, special tokens stay as they are.
fn wordpiece_vocabulary(
    path: &Path,
    doc: &Json,
    vocab_size: usize,
) -> Result<Vec<(String, Value)>> {
    let model = &doc["model"];
    if model["type"] != "WordPiece" {
        return Err(super::files::field_error(
            path,
            "model.type",
            "WordPiece (a BERT tokenizer)",
            &model["type"],
        ));
    }
    let vocab = model["vocab"].as_object().ok_or_else(|| {
        super::files::field_error(path, "model.vocab", "an object", &model["vocab"])
    })?;
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    for (piece, id) in vocab {
        let id = id.as_u64().map(|i| i as usize).filter(|&i| i < vocab_size);
        let Some(id) = id else {
            return Err(super::files::field_error(
                path,
                &format!("model.vocab[{piece}]"),
                &format!("an id below the model's vocab_size {vocab_size}"),
                &vocab[piece],
            ));
        };
        tokens[id] = Some(piece.clone());
    }
    let special: Vec<&str> = doc["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["special"] == Json::Bool(true))
        .filter_map(|t| t["content"].as_str())
        .collect();
    let mut pieces = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (id, token) in tokens.into_iter().enumerate() {
        // Ids the vocabulary leaves unused (a padded embedding table).
        let token = token.unwrap_or_else(|| format!("[unused_{id}]"));
        let control = special.contains(&token.as_str());
        types.push(if control { CONTROL } else { NORMAL });
        pieces.push(match token.strip_prefix("##") {
            _ if control => token.clone(),
            Some(rest) => rest.to_string(),
            None => format!("\u{2581}{token}"),
        });
    }
    let id_of = |piece: &str| -> Result<u32> {
        vocab
            .get(piece)
            .and_then(Json::as_u64)
            .map(|i| i as u32)
            .ok_or_else(|| ConvertError::Field {
                path: path.to_path_buf(),
                field: format!("model.vocab[{piece}]"),
                expected: "the token, which BERT's template needs".into(),
                found: "nothing".into(),
            })
    };
    let mut m: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), "bert".into()),
        ("tokenizer.ggml.pre".into(), "default".into()),
        ("tokenizer.ggml.tokens".into(), Value::string_array(pieces)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::array(ValueType::I32, types),
        ),
        ("tokenizer.ggml.bos_token_id".into(), id_of("[CLS]")?.into()),
        ("tokenizer.ggml.eos_token_id".into(), id_of("[SEP]")?.into()),
        (
            "tokenizer.ggml.seperator_token_id".into(),
            id_of("[SEP]")?.into(),
        ),
        (
            "tokenizer.ggml.unknown_token_id".into(),
            id_of("[UNK]")?.into(),
        ),
        ("tokenizer.ggml.add_bos_token".into(), true.into()),
        ("tokenizer.ggml.add_eos_token".into(), true.into()),
    ];
    if let Ok(pad) = id_of("[PAD]") {
        m.push(("tokenizer.ggml.padding_token_id".into(), pad.into()));
    }
    Ok(m)
}

/// The ids of RoBERTa's special tokens (`<s>` opens a text and classifies
/// it, `</s>` separates) in llama.cpp's keys, from `tokenizer.json`.
fn roberta_specials(path: &Path, doc: &Json, vocab_size: usize) -> Result<Vec<(String, Value)>> {
    let id_of = |token: &str| -> Option<u32> {
        let added = doc["added_tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["content"] == token)
            .and_then(|t| t["id"].as_u64());
        let in_vocab = match &doc["model"]["vocab"] {
            Json::Object(map) => map.get(token).and_then(Json::as_u64),
            Json::Array(pieces) => pieces.iter().position(|p| p[0] == token).map(|i| i as u64),
            _ => None,
        };
        added
            .or(in_vocab)
            .and_then(|id| u32::try_from(id).ok())
            .filter(|&id| (id as usize) < vocab_size)
    };
    let require = |token: &str| {
        id_of(token).ok_or_else(|| ConvertError::Field {
            path: path.to_path_buf(),
            field: format!("added_tokens[{token}]"),
            expected: "the token, which RoBERTa's template needs".into(),
            found: "nothing".into(),
        })
    };
    let (cls, sep) = (require("<s>")?, require("</s>")?);
    let mut m: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.bos_token_id".into(), cls.into()),
        ("tokenizer.ggml.eos_token_id".into(), sep.into()),
        ("tokenizer.ggml.cls_token_id".into(), cls.into()),
        ("tokenizer.ggml.seperator_token_id".into(), sep.into()),
        ("tokenizer.ggml.add_bos_token".into(), true.into()),
        ("tokenizer.ggml.add_eos_token".into(), true.into()),
    ];
    for (key, token) in [
        ("tokenizer.ggml.unknown_token_id", "<unk>"),
        ("tokenizer.ggml.padding_token_id", "<pad>"),
        ("tokenizer.ggml.mask_token_id", "<mask>"),
    ] {
        if let Some(id) = id_of(token) {
            m.push((key.into(), id.into()));
        }
    }
    Ok(m)
}

/// `tokenizer.ggml.*` (model `t5`) for a SentencePiece unigram
/// `tokenizer.json` such as XLM-RoBERTa's: pieces with their scores, the
/// precompiled normalisation map, and the whitespace handling its
/// pre-tokenizer describes.
fn unigram_vocabulary(path: &Path, doc: &Json, vocab_size: usize) -> Result<Vec<(String, Value)>> {
    use base64::Engine;
    let model = &doc["model"];
    if model["type"] != "Unigram" {
        return Err(field_error(
            path,
            "model.type",
            "Unigram (a SentencePiece tokenizer)",
            &model["type"],
        ));
    }
    let pieces = model["vocab"].as_array().ok_or_else(|| {
        field_error(
            path,
            "model.vocab",
            "an array of [piece, score]",
            &model["vocab"],
        )
    })?;
    if pieces.len() > vocab_size {
        return Err(ConvertError::Field {
            path: path.to_path_buf(),
            field: "model.vocab".into(),
            expected: format!("at most config.json vocab_size {vocab_size} pieces"),
            found: pieces.len().to_string(),
        });
    }
    let special: Vec<u64> = doc["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["special"] == Json::Bool(true))
        .filter_map(|t| t["id"].as_u64())
        .collect();
    let unk = model["unk_id"].as_u64();
    // Ids the tokenizer never produces (a padded embedding table) get
    // llama.cpp's placeholders.
    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000f32; vocab_size];
    let mut types = vec![UNUSED; vocab_size];
    for (id, piece) in pieces.iter().enumerate() {
        let (Some(text), Some(score)) = (piece[0].as_str(), piece[1].as_f64()) else {
            return Err(field_error(
                path,
                &format!("model.vocab[{id}]"),
                "[piece, score]",
                piece,
            ));
        };
        tokens[id] = text.to_string();
        scores[id] = score as f32;
        types[id] = if Some(id as u64) == unk {
            UNKNOWN
        } else if special.contains(&(id as u64)) {
            CONTROL
        } else {
            NORMAL
        };
    }
    // The parts of a tokenizer.json pipeline, Sequence or not.
    let parts = |stage: &Json, list: &str| -> Vec<Json> {
        match stage["type"].as_str() {
            Some("Sequence") => stage[list].as_array().cloned().unwrap_or_default(),
            Some(_) => vec![stage.clone()],
            None => Vec::new(),
        }
    };
    let normalizers = parts(&doc["normalizer"], "normalizers");
    let pre_tokenizers = parts(&doc["pre_tokenizer"], "pretokenizers");
    let metaspace = pre_tokenizers.iter().find(|p| p["type"] == "Metaspace");
    let add_space_prefix = metaspace.is_some_and(|m| {
        m["prepend_scheme"].as_str().map_or_else(
            || m["add_prefix_space"].as_bool().unwrap_or(true),
            |scheme| scheme != "never",
        )
    });
    let remove_extra_whitespaces = pre_tokenizers
        .iter()
        .any(|p| p["type"] == "WhitespaceSplit")
        || normalizers
            .iter()
            .any(|n| n["type"] == "Replace" && n["pattern"]["Regex"] == " {2,}");
    let mut m: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), "t5".into()),
        ("tokenizer.ggml.pre".into(), "default".into()),
        ("tokenizer.ggml.tokens".into(), Value::string_array(tokens)),
        (
            "tokenizer.ggml.scores".into(),
            Value::array(ValueType::F32, scores),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::array(ValueType::I32, types),
        ),
        (
            "tokenizer.ggml.add_space_prefix".into(),
            add_space_prefix.into(),
        ),
        (
            "tokenizer.ggml.remove_extra_whitespaces".into(),
            remove_extra_whitespaces.into(),
        ),
    ];
    if let Some(precompiled) = normalizers.iter().find(|n| n["type"] == "Precompiled") {
        let encoded = precompiled["precompiled_charsmap"]
            .as_str()
            .unwrap_or_default();
        let charsmap = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| {
                field_error(
                    path,
                    "normalizer.precompiled_charsmap",
                    &format!("base64 ({e})"),
                    &precompiled["precompiled_charsmap"],
                )
            })?;
        m.push((
            "tokenizer.ggml.precompiled_charsmap".into(),
            Value::array(ValueType::U8, charsmap),
        ));
    }
    Ok(m)
}
