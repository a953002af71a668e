//! GGUF container: a hardened, zero-copy reader, a writer, a streaming
//! quantizing writer, and `describe`.
//!
//! [`GgufFile::open`] memory-maps a file (`from_vec` / `from_bytes` take a
//! buffer, for wasm32 where there is no filesystem) and validates the whole
//! header, every metadata value and every tensor info before any tensor
//! byte is touched: magic and version, counts against the bytes left,
//! string and array lengths, UTF-8, nested arrays, duplicate keys and tensor
//! names, `general.alignment`, dims and byte sizes without overflow, known
//! ggml types with block-divisible rows, aligned in-file offsets and
//! non-overlapping data. Every failure is a [`GgufError`] naming the field.
//!
//! Tensors come out as [`TensorView`]s whose `data` is a slice of the
//! mapping; block-quantized data is handed as-is to `candle_quant::quant`,
//! and F32/F16/BF16 convert to candle tensors with [`TensorView::to_candle`].
//!
//! [`GgufWriter`] holds a whole file in memory; [`write_gguf`] streams one
//! from f32 tensors, quantizing each as it goes.

mod cursor;
mod describe;
mod error;
mod reader;
mod stream;
mod tokenizer;
mod types;
mod value;
mod writer;

pub use describe::describe;
pub use error::{GgufError, Result};
pub use reader::{
    GgufFile, TensorInfo, TensorView, DEFAULT_ALIGNMENT, MAX_ALIGNMENT, MAX_DIMS, MAX_ELEMENTS,
};
pub use stream::{write_gguf, Progress, StreamError, TensorPlan};
pub use tokenizer::GgufVocab;
pub use types::{GgmlType, GgmlTypeIdError, ValueType};
pub use value::{ArrayIter, ArrayView, MetadataValue, Value};
pub use writer::GgufWriter;
