//! Quantized weights for Hanzo Candle: a hardened, zero-copy GGUF reader and
//! writer, ggml-compatible block formats with scalar reference kernels, fast
//! SIMD kernels, llama.cpp's quantization presets, and `QLinear`.

pub mod gguf;
pub mod kernels;
pub mod preset;
#[cfg(feature = "tensor")]
mod qlinear;
pub mod quant;

#[cfg(feature = "tensor")]
pub use qlinear::{QLinear, WeightBytes};
pub use quant::{QuantError, QuantType};
