//! Hugging Face model directories <-> GGUF, for the llama family (LLaMA,
//! Mistral, SmolLM): the architecture-specific half of
//! `hanzo-candle quantize`, and its inverse.
//!
//! [`quantize_hf_dir`] maps `config.json` to the `llama.*` hyper-parameters,
//! `tokenizer.json` to the `tokenizer.ggml.*` vocabulary, the chat template
//! to `tokenizer.chat_template`, and the checkpoint's tensors to llama.cpp's
//! names, with the query/key rows permuted as llama.cpp's converter does so
//! that adjacent dimension pairs rotate together; then
//! [`candle_quant::deploy`] chooses the types and streams the file.
//!
//! [`gguf_to_hf_dir`] goes back: a GGUF llama file becomes an f32
//! safetensors directory (dequantized, permutation undone) that
//! `transformers` and [`crate::loader::Model::load`] read.
#![cfg(not(target_arch = "wasm32"))]

use crate::config::DecoderConfig;
use crate::gguf::GgufModel;
use crate::tokenizer::{
    gguf_bpe_document, LLAMA3_REGEX, QWEN2_REGEX, SUPPORTED_GGUF_PRE, TOKEN_TYPE_CONTROL,
    TOKEN_TYPE_USER_DEFINED,
};
use crate::config::Family;
use crate::weights::{GlobalTensor, LayerTensor, TensorName};
use candle_quant::deploy::{plan_types, write_gguf, DeployError, Preset, Progress};
use candle_quant::gguf::{GgufError, GgufFile, GgufVocab, Value, ValueType};
use candle_quant::quant::dequantize;
use candle_quant::QuantType;
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors of converting between a Hugging Face directory and GGUF, each
/// naming the file or tensor, what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path} is not a model directory (expected a directory holding config.json, tokenizer.json and *.safetensors)")]
    NotADirectory { path: PathBuf },

    #[error("{dir}: missing {file} ({what})")]
    MissingFile {
        dir: PathBuf,
        file: &'static str,
        what: &'static str,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: `{field}`: expected {expected}, found {found}")]
    Field {
        path: PathBuf,
        field: String,
        expected: String,
        found: String,
    },

    #[error("{path}: {message}")]
    Safetensors { path: PathBuf, message: String },

    #[error("{path}: tensor {tensor} has dtype {dtype}; supported: F32, F16, BF16")]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },

    #[error("the checkpoint has tensors the llama mapping does not know: {names:?}")]
    UnknownTensors { names: Vec<String> },

    #[error("the checkpoint has no tensor {tensor}")]
    MissingTensor { tensor: String },

    #[error("tensor {tensor} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{path}: unsupported architecture `{found}`; supported: {supported}")]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        supported: &'static str,
    },

    // Boxed: the wrapped errors are large and every function here returns
    // this type.
    #[error(transparent)]
    Engine(Box<crate::Error>),

    #[error(transparent)]
    Deploy(Box<DeployError>),

    #[error(transparent)]
    Gguf(Box<GgufError>),
}

type Result<T> = std::result::Result<T, ExportError>;

impl From<crate::Error> for ExportError {
    fn from(e: crate::Error) -> Self {
        Self::Engine(Box::new(e))
    }
}

impl From<DeployError> for ExportError {
    fn from(e: DeployError) -> Self {
        Self::Deploy(Box::new(e))
    }
}

impl From<GgufError> for ExportError {
    fn from(e: GgufError) -> Self {
        Self::Gguf(Box::new(e))
    }
}

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
/// use candle_engine::export::quantize_hf_dir;
/// use candle_quant::deploy::Preset;
/// use std::path::Path;
/// let summary = quantize_hf_dir(Path::new("SmolLM2-135M"), Preset::Q4KM, Path::new("model.gguf"), |p| {
///     eprintln!("[{}/{}] {} {}", p.index, p.count, p.tensor.name, p.tensor.ty);
/// })?;
/// println!("{} bytes", summary.output_bytes);
/// # Ok::<(), candle_engine::export::ExportError>(())
/// ```
pub fn quantize_hf_dir(
    dir: &Path,
    preset: Preset,
    out: &Path,
    progress: impl FnMut(Progress<'_>),
) -> Result<QuantizeSummary> {
    if !dir.is_dir() {
        return Err(ExportError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let config_path = require(dir, "config.json", "the model's hyper-parameters")?;
    let tokenizer_path = require(dir, "tokenizer.json", "the tokenizer")?;
    let config_text = read_text(&config_path)?;
    let raw_config = parse_json(&config_path, &config_text)?;
    let model_type = raw_config["model_type"].as_str().unwrap_or_default();
    if !HF_LLAMA_TYPES.contains(&model_type) {
        return Err(ExportError::UnsupportedArchitecture {
            path: config_path,
            found: model_type.to_string(),
            supported: "llama, mistral (model_type in config.json)",
        });
    }
    let config = DecoderConfig::from_hf_json(&config_text)?;
    let generation = optional_json(&dir.join("generation_config.json"))?;
    let tokenizer_config_path = dir.join("tokenizer_config.json");
    let tokenizer_config = optional_json(&tokenizer_config_path)?;

    let checkpoint = Checkpoint::open(dir)?;
    let tensors = llama_tensors(&config, &checkpoint)?;

    let mut metadata = llama_metadata(&config, preset, dir);
    metadata.extend(vocabulary_metadata(
        &tokenizer_path,
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
        |i| checkpoint.load_f32(&tensors[i], &config),
        progress,
    )?;
    let mut types: Vec<(QuantType, usize)> = Vec::new();
    for t in &plan {
        match types.iter_mut().find(|(ty, _)| *ty == t.ty) {
            Some((_, n)) => *n += 1,
            None => types.push((t.ty, 1)),
        }
    }
    types.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(QuantizeSummary {
        architecture: "llama",
        tensors: plan.len(),
        types,
        input_bytes: tensors.iter().map(|t| t.bytes as u64).sum(),
        output_bytes,
    })
}

fn require(dir: &Path, file: &'static str, what: &'static str) -> Result<PathBuf> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ExportError::MissingFile {
            dir: dir.to_path_buf(),
            file,
            what,
        })
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_json(path: &Path, text: &str) -> Result<Json> {
    serde_json::from_str(text).map_err(|source| ExportError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn optional_json(path: &Path) -> Result<Option<Json>> {
    if !path.is_file() {
        return Ok(None);
    }
    parse_json(path, &read_text(path)?).map(Some)
}

fn field_error(path: &Path, field: &str, expected: &str, found: &Json) -> ExportError {
    let mut found = found.to_string();
    if found.len() > 80 {
        found.truncate(77);
        found.push_str("...");
    }
    ExportError::Field {
        path: path.to_path_buf(),
        field: field.to_string(),
        expected: expected.to_string(),
        found,
    }
}

/// A tensor of the checkpoint as the llama mapping expects it.
struct SourceTensor {
    name: TensorName,
    shape: Vec<usize>,
    file: usize,
    dtype: safetensors::Dtype,
    range: std::ops::Range<usize>,
    bytes: usize,
}

/// The memory-mapped `*.safetensors` files of a directory.
struct Checkpoint {
    paths: Vec<PathBuf>,
    maps: Vec<memmap2::Mmap>,
    /// name -> (file, dtype, shape, byte range in the mapping)
    index: HashMap<
        String,
        (
            usize,
            safetensors::Dtype,
            Vec<usize>,
            std::ops::Range<usize>,
        ),
    >,
}

impl Checkpoint {
    fn open(dir: &Path) -> Result<Self> {
        let io = |source| ExportError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(ExportError::MissingFile {
                dir: dir.to_path_buf(),
                file: "*.safetensors",
                what: "the weights",
            });
        }
        let mut maps = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = std::fs::File::open(path).map_err(|source| ExportError::Io {
                path: path.clone(),
                source,
            })?;
            // SAFETY: read-only mapping; the files must not change while
            // they are being quantized, as for any loader.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ExportError::Io {
                path: path.clone(),
                source,
            })?;
            let (header_len, meta) =
                safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
                    ExportError::Safetensors {
                        path: path.clone(),
                        message: e.to_string(),
                    }
                })?;
            let data_start = 8 + header_len;
            for (name, info) in meta.tensors() {
                if !matches!(
                    info.dtype,
                    safetensors::Dtype::F32 | safetensors::Dtype::F16 | safetensors::Dtype::BF16
                ) {
                    return Err(ExportError::UnsupportedDtype {
                        path: path.clone(),
                        tensor: name,
                        dtype: format!("{:?}", info.dtype),
                    });
                }
                let (start, end) = info.data_offsets;
                index.insert(
                    name,
                    (
                        i,
                        info.dtype,
                        info.shape.clone(),
                        data_start + start..data_start + end,
                    ),
                );
            }
            maps.push(map);
        }
        Ok(Self { paths, maps, index })
    }

    /// The tensor's values as f32, with the llama query/key rows permuted
    /// for interleaved RoPE.
    fn load_f32(&self, t: &SourceTensor, config: &DecoderConfig) -> Result<Vec<f32>> {
        let bytes = &self.maps[t.file][t.range.clone()];
        let values: Vec<f32> = match t.dtype {
            safetensors::Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            safetensors::Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(ExportError::UnsupportedDtype {
                    path: self.paths[t.file].clone(),
                    tensor: t.name.hf(Family::Llama),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let cols = config.hidden_size;
        Ok(match t.name {
            TensorName::Layer(_, LayerTensor::Query) => interleave_rope_rows(&values, config.num_heads, cols),
            TensorName::Layer(_, LayerTensor::Key) => interleave_rope_rows(&values, config.num_kv_heads, cols),
            _ => values,
        })
    }
}

/// Checks that the checkpoint holds exactly the llama tensors with the
/// shapes `config` implies, and lists them in GGUF order.
fn llama_tensors(config: &DecoderConfig, checkpoint: &Checkpoint) -> Result<Vec<SourceTensor>> {
    let expected = expected_tensors(
        config,
        checkpoint.index.contains_key(&TensorName::Global(GlobalTensor::Output).hf(Family::Llama)),
    );
    let known: std::collections::HashSet<String> =
        expected.iter().map(|(name, _)| name.hf(Family::Llama)).collect();
    let mut unknown: Vec<String> = checkpoint
        .index
        .keys()
        .filter(|k| !known.contains(*k) && !k.ends_with("rotary_emb.inv_freq"))
        .filter(|k| !(config.tie_word_embeddings && *k == "lm_head.weight"))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(ExportError::UnknownTensors { names: unknown });
    }
    expected
        .into_iter()
        .map(|(name, shape)| {
            let key = name.hf(Family::Llama);
            let (file, dtype, found, range) =
                checkpoint
                    .index
                    .get(&key)
                    .ok_or_else(|| ExportError::MissingTensor {
                        tensor: key.clone(),
                    })?;
            if *found != shape {
                return Err(ExportError::TensorShape {
                    tensor: key,
                    expected: shape,
                    found: found.clone(),
                });
            }
            Ok(SourceTensor {
                name,
                bytes: range.len(),
                file: *file,
                dtype: *dtype,
                range: range.clone(),
                shape,
            })
        })
        .collect()
}

/// The decoder's tensors with their row-major shapes, in llama.cpp's
/// order: embedding, layer by layer, final norm, output.
fn expected_tensors(c: &DecoderConfig, has_output: bool) -> Vec<(TensorName, Vec<usize>)> {
    let (h, ffn) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    let mut list = vec![(TensorName::Global(GlobalTensor::TokenEmbedding), vec![c.vocab_size, h])];
    for i in 0..c.num_layers {
        list.extend([
            (TensorName::Layer(i, LayerTensor::AttentionNorm), vec![h]),
            (TensorName::Layer(i, LayerTensor::Query), vec![q, h]),
            (TensorName::Layer(i, LayerTensor::Key), vec![kv, h]),
            (TensorName::Layer(i, LayerTensor::Value), vec![kv, h]),
            (TensorName::Layer(i, LayerTensor::AttentionOutput), vec![h, q]),
            (TensorName::Layer(i, LayerTensor::FfnNorm), vec![h]),
            (TensorName::Layer(i, LayerTensor::FfnGate), vec![ffn, h]),
            (TensorName::Layer(i, LayerTensor::FfnUp), vec![ffn, h]),
            (TensorName::Layer(i, LayerTensor::FfnDown), vec![h, ffn]),
        ]);
    }
    list.push((TensorName::Global(GlobalTensor::OutputNorm), vec![h]));
    if has_output && !c.tie_word_embeddings {
        list.push((TensorName::Global(GlobalTensor::Output), vec![c.vocab_size, h]));
    }
    list
}

/// Reorders the rows of each head from rotate-half pairing `(i, i + d/2)`
/// to adjacent pairing `(2i, 2i + 1)`, as llama.cpp's converter does.
///
/// w: [heads * head_dim, cols]
pub fn interleave_rope_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    permute_rope_rows(w, heads, cols, true)
}

/// Inverse of [`interleave_rope_rows`].
///
/// w: [heads * head_dim, cols]
pub fn deinterleave_rope_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    permute_rope_rows(w, heads, cols, false)
}

fn permute_rope_rows(w: &[f32], heads: usize, cols: usize, interleave: bool) -> Vec<f32> {
    let head_dim = w.len() / (heads * cols).max(1);
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let rotate_half_row = h * head_dim + j * half + i;
                let adjacent_row = h * head_dim + 2 * i + j;
                let (from, to) = if interleave {
                    (rotate_half_row, adjacent_row)
                } else {
                    (adjacent_row, rotate_half_row)
                };
                out[to * cols..(to + 1) * cols].copy_from_slice(&w[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

fn llama_metadata(c: &DecoderConfig, preset: Preset, dir: &Path) -> Vec<(String, Value)> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let u32_of = |n: usize| Value::U32(u32::try_from(n).unwrap_or(u32::MAX));
    let mut m: Vec<(String, Value)> = vec![
        ("general.architecture".into(), "llama".into()),
        ("general.name".into(), name.into()),
        ("general.file_type".into(), preset.file_type().into()),
        ("general.quantization_version".into(), 2u32.into()),
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
    ];
    if c.head_dim * c.num_heads != c.hidden_size {
        m.push(("llama.attention.key_length".into(), u32_of(c.head_dim)));
        m.push(("llama.attention.value_length".into(), u32_of(c.head_dim)));
    }
    m
}

/// llama.cpp's token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_UNUSED: i32 = 5;

const SUPPORTED_PRE: &str =
    "ByteLevel (gpt2), Digits + ByteLevel (smollm), the llama3 or qwen2 Split regex + ByteLevel";

/// `tokenizer.ggml.*` from a byte-level BPE `tokenizer.json`; special
/// token ids from `config.json`, else `generation_config.json`.
fn vocabulary_metadata(
    path: &Path,
    vocab_size: usize,
    config: &Json,
    generation: Option<&Json>,
) -> Result<Vec<(String, Value)>> {
    let doc = parse_json(path, &read_text(path)?)?;
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
        return Err(ExportError::Field {
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

fn chat_template(path: &Path, tokenizer_config: Option<&Json>) -> Result<Option<String>> {
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

/// Writes the llama GGUF file `gguf` as a Hugging Face directory `out_dir`:
/// `config.json`, `generation_config.json`, `tokenizer.json`,
/// `tokenizer_config.json` (chat template) and one f32
/// `model.safetensors`, dequantized and with the query/key rows put back in
/// rotate-half order. Tensors are written one at a time.
///
/// ```no_run
/// use candle_engine::export::gguf_to_hf_dir;
/// use std::path::Path;
/// gguf_to_hf_dir(Path::new("SmolLM2-135M-Instruct.Q4_1.gguf"), Path::new("smollm2-f32"))?;
/// # Ok::<(), candle_engine::export::ExportError>(())
/// ```
pub fn gguf_to_hf_dir(gguf: &Path, out_dir: &Path) -> Result<()> {
    let model = GgufModel::new(GgufFile::open(gguf)?);
    let architecture = model.file().get_str("general.architecture")?;
    if architecture != "llama" {
        return Err(ExportError::UnsupportedArchitecture {
            path: gguf.to_path_buf(),
            found: architecture.to_string(),
            supported: "llama (general.architecture)",
        });
    }
    let config = model.config()?;
    let file = model.file();
    let vocab = GgufVocab::from_gguf(file)?;
    let pre = match file.get("tokenizer.ggml.pre") {
        Some(_) => file.get_str("tokenizer.ggml.pre")?,
        None => "default",
    };
    let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
        Some(_) => file.get_bool("tokenizer.ggml.add_bos_token")?,
        None => false,
    };
    std::fs::create_dir_all(out_dir).map_err(|source| ExportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let write_json = |name: &str, value: &Json| -> Result<()> {
        let path = out_dir.join(name);
        let text = serde_json::to_string_pretty(value).map_err(|source| ExportError::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, text).map_err(|source| ExportError::Io { path, source })
    };
    // Shortest decimal that reads back as the stored f32 (1e-5, not
    // 9.999999747378752e-6).
    let f32_decimal = |v: f64| -> f64 { (v as f32).to_string().parse().unwrap_or(v) };
    let ids = json!({"bos_token_id": vocab.bos_token_id, "eos_token_id": vocab.eos_token_id});
    let c = &config;
    write_json(
        "config.json",
        &json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads,
            "num_key_value_heads": c.num_kv_heads,
            "head_dim": c.head_dim,
            "hidden_act": "silu",
            "rope_theta": f32_decimal(c.rope_theta),
            "rms_norm_eps": f32_decimal(c.rms_norm_eps),
            "max_position_embeddings": c.max_position_embeddings,
            "tie_word_embeddings": c.tie_word_embeddings,
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": "float32",
            "bos_token_id": vocab.bos_token_id,
            "eos_token_id": vocab.eos_token_id,
        }),
    )?;
    write_json("generation_config.json", &ids)?;
    write_json(
        "tokenizer.json",
        &tokenizer_json(&vocab, pre).map_err(|found| ExportError::Field {
            path: gguf.to_path_buf(),
            field: "tokenizer.ggml.pre".into(),
            expected: SUPPORTED_GGUF_PRE.into(),
            found,
        })?,
    )?;
    let token = |id: Option<u32>| id.and_then(|i| vocab.tokens.get(i as usize).copied());
    let mut tokenizer_config = json!({
        "add_bos_token": add_bos,
        "bos_token": token(vocab.bos_token_id),
        "eos_token": token(vocab.eos_token_id),
        "tokenizer_class": "GPT2Tokenizer",
    });
    if let Some(template) = model.chat_template()? {
        tokenizer_config["chat_template"] = json!(template);
    }
    write_json("tokenizer_config.json", &tokenizer_config)?;

    let tensors = expected_tensors(&config, file.tensor("output.weight").is_ok());
    write_f32_safetensors(&out_dir.join("model.safetensors"), &tensors, |name, n| {
        let key = name.gguf();
        let view = file.tensor(&key)?;
        let ty = QuantType::from_ggml_id(view.info.ggml_type.id()).ok_or_else(|| {
            ExportError::Field {
                path: gguf.to_path_buf(),
                field: key.clone(),
                expected: "a type with a dequantizer".into(),
                found: view.info.ggml_type.name().into(),
            }
        })?;
        let values = dequantize(ty, view.data, n).map_err(crate::Error::from)?;
        Ok(match name {
            TensorName::Layer(_, LayerTensor::Query) => deinterleave_rope_rows(&values, c.num_heads, c.hidden_size),
            TensorName::Layer(_, LayerTensor::Key) => deinterleave_rope_rows(&values, c.num_kv_heads, c.hidden_size),
            _ => values,
        })
    })
}

/// A `tokenizer.json` for the byte-level BPE vocabulary of a GGUF file;
/// `Err` carries an unknown pre-tokenizer name.
fn tokenizer_json(vocab: &GgufVocab<'_>, pre: &str) -> std::result::Result<Json, String> {
    gguf_bpe_document(
        &vocab.tokens,
        vocab.token_types.as_deref().unwrap_or_default(),
        vocab.merges.as_deref().unwrap_or_default(),
        pre,
    )
}

/// Streams an f32 safetensors file: the header (names, shapes, offsets)
/// first, then each tensor as `values(name, element_count)` produces it.
fn write_f32_safetensors(
    path: &Path,
    tensors: &[(TensorName, Vec<usize>)],
    mut values: impl FnMut(&TensorName, usize) -> Result<Vec<f32>>,
) -> Result<()> {
    let io = |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.hf(Family::Llama),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header =
        serde_json::to_vec(&Json::Object(header)).map_err(|source| ExportError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    // The format pads the header with spaces so the data starts 8-aligned.
    header.resize(header.len().next_multiple_of(8), b' ');
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    for (name, shape) in tensors {
        let data = values(name, shape.iter().product())?;
        out.write_all(bytemuck::cast_slice(&data)).map_err(io)?;
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_row_permutation_pairs_half_rotations_and_inverts() {
        // One head of dim 8, one column: rotate-half pairs rows (0,4),
        // (1,5), (2,6), (3,7); after the permutation they are adjacent.
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let p = interleave_rope_rows(&w, 1, 1);
        assert_eq!(p, [0., 4., 1., 5., 2., 6., 3., 7.]);
        let two_heads: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let back = deinterleave_rope_rows(&interleave_rope_rows(&two_heads, 2, 2), 2, 2);
        assert_eq!(back, two_heads);
    }

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
