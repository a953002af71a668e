//! Hugging Face model directories <-> GGUF, for the llama family (LLaMA,
//! Mistral, SmolLM): the architecture-specific half of
//! `hanzo-candle quantize`, and its inverse.
//!
//! [`quantize_hf_dir`] (`to_gguf`) maps `config.json` to the `llama.*`
//! hyper-parameters (`metadata`), `tokenizer.json` to the `tokenizer.ggml.*`
//! vocabulary (`vocab`), the chat template to `tokenizer.chat_template`, and
//! the checkpoint's tensors, read through [`crate::weights::SafetensorsDir`],
//! to llama.cpp's names, with the query/key rows permuted as llama.cpp's
//! converter does so that adjacent dimension pairs rotate together
//! (`layout`); then [`candle_quant::preset`] chooses the types and
//! [`candle_quant::gguf::write_gguf`] streams the file.
//!
//! [`quantize_encoder_dir`] (`encoder`) does the same for BERT encoders,
//! in llama.cpp's `bert` layout.
//!
//! [`gguf_to_hf_dir`] (`to_safetensors`) goes back: a GGUF llama file becomes
//! an f32 safetensors directory (dequantized, permutation undone) that
//! `transformers` and [`crate::loader::Model::load`] read.
#![cfg(not(target_arch = "wasm32"))]

mod encoder;
mod files;
mod layout;
mod metadata;
mod to_gguf;
mod to_safetensors;
mod vocab;

pub use encoder::quantize_encoder_dir;
pub use layout::{deinterleave_rope_rows, interleave_rope_rows};
pub use to_gguf::{quantize_hf_dir, QuantizeSummary};
pub use to_safetensors::gguf_to_hf_dir;

use candle_quant::gguf::{GgufError, StreamError};
use std::path::PathBuf;

/// Errors of converting between a Hugging Face directory and GGUF, each
/// naming the file or tensor, what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
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
    Stream(Box<StreamError>),

    #[error(transparent)]
    Gguf(Box<GgufError>),
}

pub(crate) type Result<T> = std::result::Result<T, ConvertError>;

impl From<crate::Error> for ConvertError {
    fn from(e: crate::Error) -> Self {
        Self::Engine(Box::new(e))
    }
}

impl From<StreamError> for ConvertError {
    fn from(e: StreamError) -> Self {
        Self::Stream(Box::new(e))
    }
}

impl From<GgufError> for ConvertError {
    fn from(e: GgufError) -> Self {
        Self::Gguf(Box::new(e))
    }
}
