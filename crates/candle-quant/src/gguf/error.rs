//! Every way a GGUF file can be rejected, each naming the field at fault.

use super::types::ValueType;

/// Errors from reading, validating or writing a GGUF file.
///
/// Every variant names the field, key or tensor at fault together with the
/// offending value and the limit it broke, so that a user holding a bad file
/// can tell what is wrong with it without a hex editor.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("gguf: cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("gguf: bad magic: expected \"GGUF\" (47 47 55 46), found {found:02x?}")]
    BadMagic { found: [u8; 4] },

    #[error(
        "gguf: file is big-endian (version field reads {version_swapped} byte-swapped); only little-endian files are supported"
    )]
    BigEndian { version_swapped: u32 },

    #[error("gguf: unsupported version {found}: expected 2 or 3")]
    UnsupportedVersion { found: u32 },

    #[error(
        "gguf: truncated while reading {field} at byte {offset}: needed {needed} bytes, {available} left"
    )]
    Truncated {
        field: String,
        offset: usize,
        needed: u64,
        available: usize,
    },

    #[error(
        "gguf: {field} is {count}, but even at {min_bytes_each} bytes each that needs more than the {available} bytes left in the file"
    )]
    CountExceedsFile {
        field: String,
        count: u64,
        min_bytes_each: u64,
        available: usize,
    },

    #[error("gguf: {field}: string is not valid UTF-8 (first bad byte at {valid_up_to})")]
    InvalidUtf8 { field: String, valid_up_to: usize },

    #[error("gguf: {field}: unknown metadata value type {found} (expected 0..=12)")]
    UnknownValueType { field: String, found: u32 },

    #[error("gguf: {field}: bool byte is {found}, expected 0 or 1")]
    InvalidBool { field: String, found: u8 },

    #[error("gguf: {field}: arrays nested {depth} deep; at most {limit} levels are accepted")]
    ArrayNestingTooDeep {
        field: String,
        depth: usize,
        limit: usize,
    },

    #[error("gguf: duplicate metadata key {key:?} (entries {first} and {second})")]
    DuplicateKey {
        key: String,
        first: usize,
        second: usize,
    },

    #[error("gguf: duplicate tensor name {name:?} (tensors {first} and {second})")]
    DuplicateTensor {
        name: String,
        first: usize,
        second: usize,
    },

    #[error("gguf: general.alignment must be a uint32, found {found}")]
    AlignmentType { found: ValueType },

    #[error("gguf: general.alignment is {found}: expected a power of two in 1..={max}")]
    InvalidAlignment { found: u64, max: u64 },

    #[error("gguf: tensor {tensor:?}: n_dims is {found}, expected 1..={max}")]
    InvalidDimCount {
        tensor: String,
        found: u32,
        max: u32,
    },

    #[error("gguf: tensor {tensor:?}: dims[{axis}] is {found}, expected 1..={max}")]
    InvalidDim {
        tensor: String,
        axis: usize,
        found: u64,
        max: u64,
    },

    #[error("gguf: tensor {tensor:?}: element count of dims {dims:?} overflows the {max} limit")]
    ElementCountOverflow {
        tensor: String,
        dims: Vec<u64>,
        max: u64,
    },

    #[error("gguf: tensor {tensor:?}: unknown ggml type id {found}")]
    UnknownGgmlType { tensor: String, found: u32 },

    #[error(
        "gguf: tensor {tensor:?}: ggml type id {found} ({name}) was removed from the format and has no defined size"
    )]
    RemovedGgmlType {
        tensor: String,
        found: u32,
        name: &'static str,
    },

    #[error(
        "gguf: tensor {tensor:?}: row length dims[0]={row} is not a multiple of the {ggml_type} block size {block_size}"
    )]
    RowNotBlockAligned {
        tensor: String,
        ggml_type: &'static str,
        row: u64,
        block_size: u64,
    },

    #[error(
        "gguf: tensor {tensor:?}: byte size of {elements} {ggml_type} elements overflows {max}"
    )]
    ByteSizeOverflow {
        tensor: String,
        ggml_type: &'static str,
        elements: u64,
        max: u64,
    },

    #[error(
        "gguf: tensor {tensor:?}: offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error(
        "gguf: tensor {tensor:?}: data [{offset}, {offset}+{size}) is outside the {data_len}-byte data section"
    )]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        size: u64,
        data_len: usize,
    },

    #[error(
        "gguf: tensors {first:?} and {second:?} overlap: {first:?} ends at {first_end}, {second:?} starts at {second_start}"
    )]
    OverlappingTensors {
        first: String,
        second: String,
        first_end: u64,
        second_start: u64,
    },

    #[error(
        "gguf: data section starts at byte {data_offset} (tensor infos end at {infos_end}, padded to {alignment}) but the file is {file_len} bytes"
    )]
    DataSectionOutOfBounds {
        data_offset: u64,
        infos_end: usize,
        alignment: u64,
        file_len: usize,
    },

    #[error("gguf: metadata key {key:?} not found")]
    MissingKey { key: String },

    #[error("gguf: metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: String,
        found: String,
    },

    #[error("gguf: metadata key {key:?}: value {value} does not fit {target}")]
    ValueOutOfRange {
        key: String,
        value: String,
        target: &'static str,
    },

    #[error("gguf: metadata key {key:?}: expected {expected}, found {found}")]
    InconsistentMetadata {
        key: String,
        expected: String,
        found: String,
    },

    #[error("gguf: tensor {name:?} not found")]
    MissingTensor { name: String },

    #[error(
        "gguf: tensor {tensor:?}: cannot convert {ggml_type} to a candle tensor directly; dequantize it through candle_quant::quant"
    )]
    UnsupportedConversion {
        tensor: String,
        ggml_type: &'static str,
    },

    #[error("gguf writer: {field}: {reason}")]
    InvalidWrite { field: String, reason: String },

    #[error("gguf writer: {source}")]
    WriteIo {
        #[source]
        source: std::io::Error,
    },

    #[cfg(feature = "tensor")]
    #[error("gguf: tensor {tensor:?}: {source}")]
    Candle {
        tensor: String,
        #[source]
        source: candle_core::Error,
    },
}

/// Result alias for the GGUF module.
pub type Result<T> = std::result::Result<T, GgufError>;
