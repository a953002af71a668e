//! The Hanzo Candle LLM engine (HIP-19 §Execution Flow).
//!
//! This crate compiles for `wasm32-unknown-unknown`: file access, memory
//! mapping and threads stay at the edges, behind small interfaces.

pub mod chat;
pub mod config;
pub mod convert;
mod error;
pub mod generate;
pub mod gguf;
pub mod kv_cache;
mod kv_math;
#[cfg(not(target_arch = "wasm32"))]
pub mod loader;
pub mod model;
pub mod perplexity;
mod quantized_llama;
mod rows;
pub mod sampling;
mod spm;
pub mod tokenizer;
pub mod weights;

pub use config::{DecoderConfig, Family, RopeLayout};
pub use error::{Error, Result};
pub use model::{Backend, Batch, Decoder};
pub use quantized_llama::QuantizedLlama;
