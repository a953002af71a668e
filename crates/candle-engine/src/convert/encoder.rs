//! Hugging Face BERT directory -> GGUF of llama.cpp's `bert` architecture,
//! quantized: the encoder half of `hanzo-candle quantize`. The layout is
//! what llama.cpp's `convert_hf_to_gguf.py` writes (tensor names, `bert.*`
//! keys, the WordPiece vocabulary with `▁` marking word starts), so the file
//! loads in `Embedder::load` and in llama.cpp's embedding mode.

use super::files::{parse_json, read_text, require};
use super::metadata::general_metadata;
use super::to_gguf::QuantizeSummary;
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
const CONTROL: i32 = 3;

/// Quantizes the BERT model directory `dir` (`config.json`, a WordPiece
/// `tokenizer.json`, `*.safetensors`, and sentence-transformers' pooling
/// files when present) to `out`. A sequence-classification head (a
/// cross-encoder) is carried as llama.cpp's `cls` (the pooler, followed by
/// tanh) and `cls.output` (the classifier), with its rank pooling type;
/// other task heads are dropped.
pub fn quantize_encoder_dir(
    dir: &Path,
    preset: Preset,
    out: &Path,
    progress: impl FnMut(Progress<'_>),
) -> Result<QuantizeSummary> {
    let config_path = require(dir, "config.json", "the model's hyper-parameters")?;
    let tokenizer_path = require(dir, "tokenizer.json", "the tokenizer")?;
    let config = EncoderConfig::from_hf_json(&read_text(&config_path)?)?;
    if config.family != EncoderFamily::Bert {
        return Err(ConvertError::UnsupportedArchitecture {
            path: config_path,
            found: format!("{:?}", config.family),
            supported: "bert among the encoders (RoBERTa and XLM-RoBERTa tokenizers have no \
                        GGUF form here yet)",
        });
    }
    let pooling = pooling_of_dir(dir, &config)?;
    let checkpoint = SafetensorsDir::open(dir)?;
    let from = hf_naming(&checkpoint, config.family)?;
    let mut tensors: Vec<(String, RawTensor)> = Vec::new();
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
            tensors.push((format!("{gguf}.{suffix}"), raw));
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
    metadata.extend(wordpiece_vocabulary(&tokenizer_path, config.vocab_size)?);
    let names: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(name, raw)| (name.clone(), raw.dims.clone()))
        .collect();
    let plan = plan_types(preset, &names);
    let output_bytes = write_gguf(
        out,
        metadata,
        &plan,
        |i| {
            let raw = &tensors[i].1;
            raw.to_f32(&raw.dims.clone())
        },
        progress,
    )?;
    let input_bytes = tensors
        .iter()
        .map(|(_, raw)| raw.bytes.as_slice().len() as u64)
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
        ("bert.context_length".into(), u32_of(c.max_positions)),
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
    ]);
    m
}

/// `tokenizer.ggml.*` for a WordPiece `tokenizer.json`, in llama.cpp's
/// form: word-initial pieces get a leading `▁`, `##` continuations lose
/// their prefix, special tokens stay as they are.
fn wordpiece_vocabulary(path: &Path, vocab_size: usize) -> Result<Vec<(String, Value)>> {
    let doc = parse_json(path, &read_text(path)?)?;
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
