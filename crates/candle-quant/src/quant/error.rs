use super::QuantType;

/// Errors from quantization, dequantization and `QLinear`.
///
/// Every variant names the operation or field, what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{op}: {ty} data for the given shape must be {expected} bytes, got {got}")]
    ByteLength {
        op: &'static str,
        ty: QuantType,
        expected: usize,
        got: usize,
    },
    #[error("row length {row_len} is not a multiple of the {ty} block size {block_elems}")]
    RowNotBlockMultiple {
        ty: QuantType,
        row_len: usize,
        block_elems: usize,
    },
    #[error("byte range {start}..{end} is outside the {len}-byte buffer")]
    ByteRange {
        start: usize,
        end: usize,
        len: usize,
    },
    #[error("size of {elems} {ty} values overflows usize")]
    SizeOverflow { ty: QuantType, elems: usize },
    #[error(
        "{op}: input must have {expected_in} features in its last dimension, got shape {got:?}"
    )]
    InputShape {
        op: &'static str,
        expected_in: usize,
        got: Vec<usize>,
    },
    #[cfg(feature = "tensor")]
    #[error("{op}: input must be f32, got {got:?}")]
    InputDType {
        op: &'static str,
        got: candle_core::DType,
    },
    #[error("{op}: {what} must hold {expected} values, got {got}")]
    SliceLength {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op}: layer {index} has {got} input features, layer 0 has {expected}")]
    GroupInFeatures {
        op: &'static str,
        index: usize,
        expected: usize,
        got: usize,
    },
    #[error("{op}: {what} must be > 0, got 0")]
    ZeroDimension {
        op: &'static str,
        what: &'static str,
    },
    #[error("{op}: {ty} is not supported on {device}")]
    Unsupported {
        op: &'static str,
        ty: QuantType,
        device: String,
    },
    #[error("unsupported ggml type id {id} (supported: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K)")]
    UnknownGgmlType { id: u32 },
    #[error("invalid thread count {got}: must be at least 1")]
    ThreadCount { got: usize },
    #[cfg(feature = "tensor")]
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

#[cfg(feature = "tensor")]
impl From<QuantError> for candle_core::Error {
    fn from(e: QuantError) -> Self {
        match e {
            QuantError::Candle(inner) => inner,
            other => candle_core::Error::wrap(other),
        }
    }
}
