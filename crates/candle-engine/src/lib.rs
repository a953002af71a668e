//! The Hanzo Candle LLM engine (HIP-19 §Execution Flow).
//!
//! This crate compiles for `wasm32-unknown-unknown`: file access, memory
//! mapping and threads stay at the edges, behind small interfaces.

mod backend;
pub mod chat;
pub mod config;
pub mod convert;
#[cfg(not(target_arch = "wasm32"))]
pub mod encoder;
mod error;
pub mod generate;
pub mod gguf;
pub mod kv_cache;
mod kv_math;
pub mod loader;
pub mod model;
pub mod perplexity;
mod quantized_llama;
mod rows;
pub mod sampling;
pub mod scheduler;
mod spm;
pub mod tokenizer;
pub mod weights;

pub use backend::Backend;
pub use config::{DecoderConfig, Family, RopeLayout};
#[cfg(not(target_arch = "wasm32"))]
pub use encoder::{Embedder, Embedding, RerankScore, Reranker};
pub use error::{Error, Result};
pub use kv_cache::{CacheOptions, KvCache, KvPrecision};
pub use model::{Batch, Decoder};
pub use quantized_llama::QuantizedLlama;
