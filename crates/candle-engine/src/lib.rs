//! The Hanzo Candle LLM engine (HIP-19 §Execution Flow).
//!
//! This crate compiles for `wasm32-unknown-unknown`: file access, memory
//! mapping and threads stay at the edges, behind small interfaces.

mod error;
pub mod kv_cache;
pub mod sampling;

pub use error::{Error, Result};
