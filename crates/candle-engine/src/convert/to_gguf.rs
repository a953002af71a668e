//! Hugging Face directory -> GGUF: validates the directory, maps it onto
//! llama.cpp's llama layout and streams the quantized file.

use super::files::{field_error, optional_json, parse_json, read_text, require};
use super::layout::{expected_tensors, interleave_rope_rows};
use super::metadata::{chat_template, llama_metadata};
use super::vocab::vocabulary_metadata;
use super::{ConvertError, Result};
use crate::config::{DecoderConfig, Family};
use crate::weights::{
    safetensors_files, GlobalTensor, LayerTensor, RawTensor, SafetensorsDir, TensorName,
    WeightSource,
};
use candle_quant::gguf::{write_gguf, Progress, TensorPlan};
use candle_quant::preset::{plan_types, Preset};
use candle_quant::QuantType;
use serde_json::Value as Json;
use std::collections::HashSet;
use std::path::Path;

/// `model_type`s whose checkpoints use the llama tensor layout.
const HF_LLAMA_TYPES: [&str; 2] = ["llama", "mistral"];

/// What [`quantize_hf_dir`] wrote.
#[derive(Clone, Debug)]
pub struct QuantizeSummary {
    pub architecture: &'static str,
    pub tensors: usize,
    /// How many tensors got each type, most frequent first.
    pub types: Vec<(QuantType, usize)>,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

impl QuantizeSummary {
    /// The summary of writing `plan` (each tensor's type) from sources of
    /// `input_bytes` into `output_bytes`.
    pub(super) fn of(
        architecture: &'static str,
        plan: &[TensorPlan],
        input_bytes: u64,
        output_bytes: u64,
    ) -> Self {
        let mut types: Vec<(QuantType, usize)> = Vec::new();
        for t in plan {
            match types.iter_mut().find(|(ty, _)| *ty == t.ty) {
                Some((_, n)) => *n += 1,
                None => types.push((t.ty, 1)),
            }
        }
        types.sort_by_key(|t| std::cmp::Reverse(t.1));
        Self {
            architecture,
            tensors: plan.len(),
            types,
            input_bytes,
            output_bytes,
        }
    }
}

/// Quantizes the Hugging Face model directory `dir` to a GGUF file `out`
/// for `preset`, calling `progress` after each tensor.
///
/// `dir` holds `config.json`, `tokenizer.json` (byte-level BPE), optionally
/// `tokenizer_config.json` (chat template, `add_bos_token`) and
/// `generation_config.json` (special token ids), and one or more
/// `*.safetensors` in f32, f16 or bf16, which are memory-mapped and read one
/// tensor at a time. Everything is validated before the output is created.
///
/// ```no_run
/// use candle_engine::convert::quantize_hf_dir;
/// use candle_quant::preset::Preset;
/// use std::path::Path;
/// let summary = quantize_hf_dir(Path::new("SmolLM2-135M"), Preset::Q4KM, Path::new("model.gguf"), |p| {
///     eprintln!("[{}/{}] {} {}", p.index, p.count, p.tensor.name, p.tensor.ty);
/// })?;
/// println!("{} bytes", summary.output_bytes);
/// # Ok::<(), candle_engine::convert::ConvertError>(())
/// ```
pub fn quantize_hf_dir(
    dir: &Path,
    preset: Preset,
    out: &Path,
    progress: impl FnMut(Progress<'_>),
) -> Result<QuantizeSummary> {
    if !dir.is_dir() {
        return Err(ConvertError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let config_path = require(dir, "config.json", "the model's hyper-parameters")?;
    let tokenizer_path = require(dir, "tokenizer.json", "the tokenizer")?;
    let config_text = read_text(&config_path)?;
    let raw_config = parse_json(&config_path, &config_text)?;
    let model_type = raw_config["model_type"].as_str().unwrap_or_default();
    if !HF_LLAMA_TYPES.contains(&model_type) {
        return Err(ConvertError::UnsupportedArchitecture {
            path: config_path,
            found: model_type.to_string(),
            supported: "llama, mistral (model_type in config.json)",
        });
    }
    let config = DecoderConfig::from_hf_json(&config_text)?;
    let generation = optional_json(&dir.join("generation_config.json"))?;
    let tokenizer_config_path = dir.join("tokenizer_config.json");
    let tokenizer_config = optional_json(&tokenizer_config_path)?;

    let shards = safetensors_files(dir)?;
    if shards.is_empty() {
        return Err(ConvertError::MissingFile {
            dir: dir.to_path_buf(),
            file: "*.safetensors",
            what: "the weights",
        });
    }
    let checkpoint = SafetensorsDir::open_files(&shards)?;
    let tensors = llama_tensors(&config, &checkpoint)?;

    let mut metadata = llama_metadata(&config, preset, dir);
    let tokenizer = parse_json(&tokenizer_path, &read_text(&tokenizer_path)?)?;
    metadata.extend(vocabulary_metadata(
        &tokenizer_path,
        &tokenizer,
        config.vocab_size,
        &raw_config,
        generation.as_ref(),
    )?);
    let add_bos = match tokenizer_config.as_ref().map(|c| &c["add_bos_token"]) {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(other) => {
            return Err(field_error(
                &tokenizer_config_path,
                "add_bos_token",
                "a boolean",
                other,
            ))
        }
    };
    metadata.push(("tokenizer.ggml.add_bos_token".into(), add_bos.into()));
    if let Some(template) = chat_template(&tokenizer_config_path, tokenizer_config.as_ref())? {
        metadata.push(("tokenizer.chat_template".into(), template.into()));
    }

    let names: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|t| (t.name.gguf(), t.shape.clone()))
        .collect();
    let plan = plan_types(preset, &names);
    let output_bytes = write_gguf(
        out,
        metadata,
        &plan,
        |i| load_f32(&tensors[i], &config),
        progress,
    )?;
    let input_bytes = tensors
        .iter()
        .map(|t| t.raw.bytes.as_slice().len() as u64)
        .sum();
    Ok(QuantizeSummary::of(
        "llama",
        &plan,
        input_bytes,
        output_bytes,
    ))
}

/// A tensor of the checkpoint as the llama mapping expects it.
struct SourceTensor {
    name: TensorName,
    shape: Vec<usize>,
    raw: RawTensor,
}

/// Checks that the checkpoint holds exactly the llama tensors with the
/// shapes `config` implies, and lists them in GGUF order.
fn llama_tensors(config: &DecoderConfig, checkpoint: &SafetensorsDir) -> Result<Vec<SourceTensor>> {
    let expected = expected_tensors(
        config,
        checkpoint
            .find(TensorName::Global(GlobalTensor::Output), Family::Llama)?
            .is_some(),
    );
    let known: HashSet<String> = expected
        .iter()
        .map(|(name, _)| name.hf(Family::Llama))
        .collect();
    let mut unknown: Vec<String> = checkpoint
        .names()
        .filter(|k| !known.contains(*k) && !k.ends_with("rotary_emb.inv_freq"))
        .filter(|k| !(config.tie_word_embeddings && *k == "lm_head.weight"))
        .map(str::to_string)
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(ConvertError::UnknownTensors { names: unknown });
    }
    expected
        .into_iter()
        .map(|(name, shape)| {
            let Some(raw) = checkpoint.find(name, Family::Llama)? else {
                return Err(ConvertError::MissingTensor {
                    tensor: name.hf(Family::Llama),
                });
            };
            if raw.dims != shape {
                return Err(ConvertError::TensorShape {
                    tensor: name.hf(Family::Llama),
                    expected: shape,
                    found: raw.dims,
                });
            }
            Ok(SourceTensor { name, shape, raw })
        })
        .collect()
}

/// The tensor's values as f32, with the llama query/key rows permuted for
/// interleaved RoPE.
fn load_f32(t: &SourceTensor, config: &DecoderConfig) -> Result<Vec<f32>> {
    let values = t.raw.to_f32(&t.shape)?;
    let cols = config.hidden_size;
    Ok(match t.name {
        TensorName::Layer(_, LayerTensor::Query) => {
            interleave_rope_rows(&values, config.num_heads, cols)
        }
        TensorName::Layer(_, LayerTensor::Key) => {
            interleave_rope_rows(&values, config.num_kv_heads, cols)
        }
        _ => values,
    })
}
