//! Opening and validating a GGUF file, and zero-copy access to its contents.

use std::collections::HashMap;
use std::ops::Range;

#[cfg(feature = "tensor")]
use candle_core::{DType, Device, Tensor};

use super::cursor::Cursor;
use super::error::{GgufError, Result};
use super::types::{GgmlType, GgmlTypeIdError, ValueType};
use super::value::{ArrayView, MetadataValue};

/// The four bytes every GGUF file starts with.
pub(crate) const MAGIC: [u8; 4] = *b"GGUF";
/// The data-section alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Larger alignments buy nothing and let padding arithmetic approach
/// overflow; real files use 32.
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// ggml stores dimensions and element counts as i64; shapes must also fit
/// `usize` on the platform reading the file (32 bits on wasm32).
pub const MAX_ELEMENTS: u64 = if (usize::MAX as u64) < (i64::MAX as u64) {
    usize::MAX as u64
} else {
    i64::MAX as u64
};
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: u32 = 4;
pub(crate) const ALIGNMENT_KEY: &str = "general.alignment";

/// Fewest bytes a metadata entry can take: key length (8), key type (4) and
/// a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Fewest bytes a tensor info can take: name length (8), n_dims (4), one
/// dimension (8), type (4) and offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// A count bounded by the file size can still claim millions of entries, and
/// an in-memory entry is larger than its minimal encoding; beyond this many,
/// storage grows only as entries actually parse.
const MAX_PREALLOCATED_ENTRIES: usize = 4096;

/// Where a tensor sits and what it holds, validated against the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    /// Dimensions in ggml order: `dims[0]` is the contiguous row length, the
    /// reverse of candle's shape order.
    pub dims: Vec<u64>,
    /// Byte offset of the data from the start of the data section.
    pub offset: u64,
    /// Byte size of the data.
    pub size: u64,
}

impl TensorInfo {
    /// The shape in candle's order (outermost first), e.g. `[rows, cols]`
    /// for a weight whose ggml dims are `[cols, rows]`.
    pub fn shape(&self) -> Vec<usize> {
        // Validation bounded the element count, hence every dimension, by
        // MAX_ELEMENTS, which fits usize.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A tensor and its bytes, borrowed from the file without copying.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'f> {
    pub info: &'f TensorInfo,
    /// The tensor's bytes in the mapping, exactly `info.size` long.
    pub data: &'f [u8],
}

impl TensorView<'_> {
    /// Copies an F32, F16 or BF16 tensor into a candle tensor of the same
    /// dtype and the shape [`TensorInfo::shape`]. Block-quantized types are
    /// dequantized through `candle_quant::quant`, not here.
    ///
    /// ```
    /// use candle_quant::gguf::{GgufFile, GgufWriter, GgmlType};
    /// let bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    /// let mut writer = GgufWriter::new();
    /// writer.add_tensor("w", GgmlType::F32, &[3, 2], bytes)?;
    /// let file = GgufFile::from_vec(writer.to_bytes()?)?;
    /// let w = file.tensor("w")?.to_candle(&candle_core::Device::Cpu)?;
    /// assert_eq!(w.dims(), &[2, 3]);
    /// assert_eq!(w.to_vec2::<f32>().unwrap(), vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
    /// # Ok::<(), candle_quant::gguf::GgufError>(())
    /// ```
    #[cfg(feature = "tensor")]
    pub fn to_candle(&self, device: &Device) -> Result<Tensor> {
        let dtype = match self.info.ggml_type {
            GgmlType::F32 => DType::F32,
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            other => {
                return Err(GgufError::UnsupportedConversion {
                    tensor: self.info.name.clone(),
                    ggml_type: other.name(),
                })
            }
        };
        Tensor::from_raw_buffer(self.data, dtype, &self.info.shape(), device).map_err(|source| {
            GgufError::Candle {
                tensor: self.info.name.clone(),
                source,
            }
        })
    }
}

enum Storage<'a> {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
    Borrowed(&'a [u8]),
}

impl Storage<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
            Self::Borrowed(b) => b,
        }
    }
}

/// A metadata value as stored after validation: scalars inline, strings and
/// arrays as byte ranges into the file, so lookups cost O(1) and borrow
/// from the mapping.
#[derive(Clone)]
enum StoredValue {
    Scalar(MetadataValue<'static>),
    String(Range<usize>),
    Array {
        element_type: ValueType,
        len: usize,
        bytes: Range<usize>,
    },
}

struct MetadataEntry {
    key: String,
    value: StoredValue,
}

/// A validated GGUF file (version 2 or 3, little-endian).
///
/// Opening checks every header field, metadata value and tensor info before
/// any tensor byte is touched; afterwards tensor data is handed out as
/// slices of the memory mapping (or of the buffer it was opened from).
///
/// ```
/// use candle_quant::gguf::{GgufFile, GgufWriter, GgmlType};
/// let mut writer = GgufWriter::new();
/// writer.add_metadata("general.architecture", "llama")?;
/// writer.add_metadata("llama.block_count", 30u32)?;
/// writer.add_tensor("norm.weight", GgmlType::F32, &[4], vec![0u8; 16])?;
/// let file = GgufFile::from_vec(writer.to_bytes()?)?;
/// assert_eq!(file.get_u32("llama.block_count")?, 30);
/// assert_eq!(file.get_str("general.architecture")?, "llama");
/// assert_eq!(file.tensor("norm.weight")?.data.len(), 16);
/// # Ok::<(), candle_quant::gguf::GgufError>(())
/// ```
pub struct GgufFile<'a> {
    storage: Storage<'a>,
    version: u32,
    alignment: u64,
    data_offset: usize,
    metadata: Vec<MetadataEntry>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile<'static> {
    /// Memory-maps and validates the file at `path`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        // SAFETY: the mapping is read-only. Like every mmap-based loader we
        // rely on the file not being truncated or rewritten by another
        // process while it is mapped; all offsets are validated against the
        // length observed here.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        Self::from_storage(Storage::Mapped(map))
    }

    /// Validates a file held in an owned buffer (e.g. fetched by a browser).
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self> {
        Self::from_storage(Storage::Owned(bytes))
    }
}

impl<'a> GgufFile<'a> {
    /// Validates a file held in a borrowed buffer.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        Self::from_storage(Storage::Borrowed(bytes))
    }

    fn from_storage(storage: Storage<'a>) -> Result<Self> {
        let parsed = parse(storage.bytes())?;
        Ok(Self {
            storage,
            version: parsed.version,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            metadata: parsed.metadata,
            key_index: parsed.key_index,
            tensors: parsed.tensors,
            tensor_index: parsed.tensor_index,
        })
    }

    fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset of the data section.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    pub fn file_len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether tensor data lives in a memory mapping (as opposed to a buffer).
    pub fn is_memory_mapped(&self) -> bool {
        match self.storage {
            #[cfg(not(target_arch = "wasm32"))]
            Storage::Mapped(_) => true,
            _ => false,
        }
    }

    fn materialize(&self, stored: &StoredValue) -> MetadataValue<'_> {
        // Ranges were produced by validation over these same bytes, which
        // are immutable for the life of `self`; the fallbacks are
        // unreachable and only avoid a panic path.
        let bytes = self.bytes();
        match stored {
            StoredValue::Scalar(v) => *v,
            StoredValue::String(range) => MetadataValue::String(
                bytes
                    .get(range.clone())
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or_default(),
            ),
            StoredValue::Array {
                element_type,
                len,
                bytes: range,
            } => MetadataValue::Array(ArrayView::new(
                *element_type,
                *len,
                bytes.get(range.clone()).unwrap_or_default(),
            )),
        }
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, MetadataValue<'_>)> {
        self.metadata
            .iter()
            .map(|e| (e.key.as_str(), self.materialize(&e.value)))
    }

    pub fn metadata_len(&self) -> usize {
        self.metadata.len()
    }

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<MetadataValue<'_>> {
        let &index = self.key_index.get(key)?;
        self.metadata
            .get(index)
            .map(|entry| self.materialize(&entry.value))
    }

    fn require(&self, key: &str) -> Result<MetadataValue<'_>> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn wrong_type(key: &str, expected: &str, found: &MetadataValue<'_>) -> GgufError {
        GgufError::WrongType {
            key: key.to_owned(),
            expected: expected.to_owned(),
            found: found.type_description(),
        }
    }

    pub fn get_u32(&self, key: &str) -> Result<u32> {
        match self.require(key)? {
            MetadataValue::U32(v) => Ok(v),
            other => Err(Self::wrong_type(key, "uint32", &other)),
        }
    }

    pub fn get_i32(&self, key: &str) -> Result<i32> {
        match self.require(key)? {
            MetadataValue::I32(v) => Ok(v),
            other => Err(Self::wrong_type(key, "int32", &other)),
        }
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        match self.require(key)? {
            MetadataValue::U64(v) => Ok(v),
            other => Err(Self::wrong_type(key, "uint64", &other)),
        }
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.require(key)? {
            MetadataValue::F32(v) => Ok(v),
            other => Err(Self::wrong_type(key, "float32", &other)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            MetadataValue::Bool(v) => Ok(v),
            other => Err(Self::wrong_type(key, "bool", &other)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            MetadataValue::String(v) => Ok(v),
            other => Err(Self::wrong_type(key, "string", &other)),
        }
    }

    /// Any integer type that converts to `usize` without loss: converters
    /// disagree on the width of counts such as `context_length`.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let value = self.require(key)?;
        let wide = value
            .as_i128()
            .ok_or_else(|| Self::wrong_type(key, "an integer", &value))?;
        usize::try_from(wide).map_err(|_| GgufError::ValueOutOfRange {
            key: key.to_owned(),
            value: wide.to_string(),
            target: "usize",
        })
    }

    pub fn get_array(&self, key: &str) -> Result<ArrayView<'_>> {
        match self.require(key)? {
            MetadataValue::Array(a) => Ok(a),
            other => Err(Self::wrong_type(key, "array", &other)),
        }
    }

    fn typed_array(&self, key: &str, element_type: ValueType) -> Result<ArrayView<'_>> {
        let array = self.get_array(key)?;
        if array.element_type() != element_type {
            return Err(GgufError::WrongType {
                key: key.to_owned(),
                expected: format!("array[{element_type}]"),
                found: format!("array[{}; {}]", array.element_type(), array.len()),
            });
        }
        Ok(array)
    }

    /// A string array such as `tokenizer.ggml.tokens`, borrowed from the file.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        Ok(self.typed_array(key, ValueType::String)?.strs())
    }

    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        Ok(self
            .typed_array(key, ValueType::F32)?
            .fixed(f32::from_le_bytes))
    }

    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        Ok(self
            .typed_array(key, ValueType::I32)?
            .fixed(i32::from_le_bytes))
    }

    pub fn get_u32_array(&self, key: &str) -> Result<Vec<u32>> {
        Ok(self
            .typed_array(key, ValueType::U32)?
            .fixed(u32::from_le_bytes))
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn view<'s>(&'s self, info: &'s TensorInfo) -> TensorView<'s> {
        // Validation proved data_offset + offset + size <= file length.
        let start = self.data_offset + info.offset as usize;
        let data = self
            .bytes()
            .get(start..start + info.size as usize)
            .unwrap_or_default();
        TensorView { info, data }
    }

    /// The tensor called `name`, its bytes borrowed from the file.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .map(|info| self.view(info))
            .ok_or_else(|| GgufError::MissingTensor {
                name: name.to_owned(),
            })
    }

    /// Every tensor in file order, bytes borrowed from the file.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.tensors.iter().map(|info| self.view(info))
    }
}

struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: usize,
    metadata: Vec<MetadataEntry>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

fn parse(buf: &[u8]) -> Result<Parsed> {
    let mut cur = Cursor::new(buf, 0);
    let magic: [u8; 4] = cur
        .take(4, &|| "magic".into())?
        .try_into()
        .unwrap_or_default();
    if magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = cur.u32(&|| "version".into())?;
    if version != 2 && version != 3 {
        if matches!(version.swap_bytes(), 2 | 3) {
            return Err(GgufError::BigEndian {
                version_swapped: version.swap_bytes(),
            });
        }
        return Err(GgufError::UnsupportedVersion { found: version });
    }
    let tensor_count = cur.u64(&|| "tensor_count".into())?;
    let kv_count = cur.u64(&|| "metadata_kv_count".into())?;
    // Both counts are bounded by the bytes left before anything is reserved.
    cur.check_count(kv_count, MIN_KV_BYTES, &|| "metadata_kv_count".into())?;
    let kv_bytes = kv_count * MIN_KV_BYTES;
    let tensor_room = (cur.remaining() as u64).saturating_sub(kv_bytes);
    if tensor_count
        .checked_mul(MIN_TENSOR_INFO_BYTES)
        .is_none_or(|needed| needed > tensor_room)
    {
        return Err(GgufError::CountExceedsFile {
            field: "tensor_count".into(),
            count: tensor_count,
            min_bytes_each: MIN_TENSOR_INFO_BYTES,
            available: cur.remaining(),
        });
    }

    let (metadata, key_index) = parse_metadata(&mut cur, kv_count as usize)?;
    let alignment = match key_index.get(ALIGNMENT_KEY).and_then(|&i| metadata.get(i)) {
        None => DEFAULT_ALIGNMENT,
        Some(entry) => match &entry.value {
            StoredValue::Scalar(MetadataValue::U32(a)) => {
                let a = u64::from(*a);
                if !a.is_power_of_two() || a > MAX_ALIGNMENT {
                    return Err(GgufError::InvalidAlignment {
                        found: a,
                        max: MAX_ALIGNMENT,
                    });
                }
                a
            }
            StoredValue::Scalar(v) => {
                return Err(GgufError::AlignmentType {
                    found: v.value_type(),
                })
            }
            StoredValue::String(_) => {
                return Err(GgufError::AlignmentType {
                    found: ValueType::String,
                })
            }
            StoredValue::Array { .. } => {
                return Err(GgufError::AlignmentType {
                    found: ValueType::Array,
                })
            }
        },
    };

    let (tensors, tensor_index) = parse_tensor_infos(&mut cur, tensor_count as usize, alignment)?;

    let infos_end = cur.pos();
    // infos_end <= buf.len() and alignment <= 2^20, so this cannot overflow u64.
    let data_offset_u64 = (infos_end as u64).div_ceil(alignment) * alignment;
    let data_offset = match usize::try_from(data_offset_u64) {
        Ok(off) if off <= buf.len() => off,
        // A file without tensors needs no data section or padding.
        _ if tensors.is_empty() => buf.len(),
        _ => {
            return Err(GgufError::DataSectionOutOfBounds {
                data_offset: data_offset_u64,
                infos_end,
                alignment,
                file_len: buf.len(),
            })
        }
    };
    check_tensor_extents(&tensors, buf.len() - data_offset)?;

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

fn parse_metadata(
    cur: &mut Cursor<'_>,
    kv_count: usize,
) -> Result<(Vec<MetadataEntry>, HashMap<String, usize>)> {
    let capacity = kv_count.min(MAX_PREALLOCATED_ENTRIES);
    let mut metadata = Vec::with_capacity(capacity);
    let mut key_index = HashMap::with_capacity(capacity);
    for index in 0..kv_count {
        let key = cur.string(&|| format!("metadata[{index}] key"))?;
        let field = || format!("metadata {key:?}");
        let vtype = cur.value_type(&field)?;
        let value_start = cur.pos();
        let value = cur.value(vtype, 0, &field)?;
        let stored = match value {
            MetadataValue::String(s) => {
                // The string's bytes follow its u64 length.
                let start = value_start + 8;
                StoredValue::String(start..start + s.len())
            }
            MetadataValue::Array(a) => {
                let end = cur.pos();
                StoredValue::Array {
                    element_type: a.element_type(),
                    len: a.len(),
                    bytes: end - a.raw_bytes().len()..end,
                }
            }
            MetadataValue::U8(v) => StoredValue::Scalar(MetadataValue::U8(v)),
            MetadataValue::I8(v) => StoredValue::Scalar(MetadataValue::I8(v)),
            MetadataValue::U16(v) => StoredValue::Scalar(MetadataValue::U16(v)),
            MetadataValue::I16(v) => StoredValue::Scalar(MetadataValue::I16(v)),
            MetadataValue::U32(v) => StoredValue::Scalar(MetadataValue::U32(v)),
            MetadataValue::I32(v) => StoredValue::Scalar(MetadataValue::I32(v)),
            MetadataValue::F32(v) => StoredValue::Scalar(MetadataValue::F32(v)),
            MetadataValue::Bool(v) => StoredValue::Scalar(MetadataValue::Bool(v)),
            MetadataValue::U64(v) => StoredValue::Scalar(MetadataValue::U64(v)),
            MetadataValue::I64(v) => StoredValue::Scalar(MetadataValue::I64(v)),
            MetadataValue::F64(v) => StoredValue::Scalar(MetadataValue::F64(v)),
        };
        if let Some(&first) = key_index.get(key) {
            return Err(GgufError::DuplicateKey {
                key: key.to_owned(),
                first,
                second: index,
            });
        }
        key_index.insert(key.to_owned(), index);
        metadata.push(MetadataEntry {
            key: key.to_owned(),
            value: stored,
        });
    }
    Ok((metadata, key_index))
}

fn parse_tensor_infos(
    cur: &mut Cursor<'_>,
    tensor_count: usize,
    alignment: u64,
) -> Result<(Vec<TensorInfo>, HashMap<String, usize>)> {
    let capacity = tensor_count.min(MAX_PREALLOCATED_ENTRIES);
    let mut tensors = Vec::with_capacity(capacity);
    let mut tensor_index = HashMap::with_capacity(capacity);
    for index in 0..tensor_count {
        let name = cur.string(&|| format!("tensor[{index}] name"))?.to_owned();
        let field = |what: &str| {
            let name = &name;
            let what = what.to_owned();
            move || format!("tensor {name:?} {what}")
        };
        let n_dims = cur.u32(&field("n_dims"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::InvalidDimCount {
                tensor: name,
                found: n_dims,
                max: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for axis in 0..n_dims as usize {
            let dim = cur.u64(&field(&format!("dims[{axis}]")))?;
            if dim == 0 || dim > MAX_ELEMENTS {
                return Err(GgufError::InvalidDim {
                    tensor: name,
                    axis,
                    found: dim,
                    max: MAX_ELEMENTS,
                });
            }
            dims.push(dim);
        }
        let type_id = cur.u32(&field("type"))?;
        let ggml_type = GgmlType::from_id(type_id).map_err(|e| match e {
            GgmlTypeIdError::Removed(type_name) => GgufError::RemovedGgmlType {
                tensor: name.clone(),
                found: type_id,
                name: type_name,
            },
            GgmlTypeIdError::Unknown => GgufError::UnknownGgmlType {
                tensor: name.clone(),
                found: type_id,
            },
        })?;
        let offset = cur.u64(&field("offset"))?;
        let size = tensor_byte_size(&name, ggml_type, &dims)?;
        if !offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedOffset {
                tensor: name,
                offset,
                alignment,
            });
        }
        if let Some(&first) = tensor_index.get(&name) {
            return Err(GgufError::DuplicateTensor {
                name,
                first,
                second: index,
            });
        }
        tensor_index.insert(name.clone(), index);
        tensors.push(TensorInfo {
            name,
            ggml_type,
            dims,
            offset,
            size,
        });
    }
    Ok((tensors, tensor_index))
}

/// Byte size of a tensor, checking the element count, the block divisibility
/// of the row and the byte size for overflow.
pub(crate) fn tensor_byte_size(name: &str, ggml_type: GgmlType, dims: &[u64]) -> Result<u64> {
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| GgufError::ElementCountOverflow {
            tensor: name.to_owned(),
            dims: dims.to_vec(),
            max: MAX_ELEMENTS,
        })?;
    let row = dims.first().copied().unwrap_or(1);
    if !row.is_multiple_of(ggml_type.block_size()) {
        return Err(GgufError::RowNotBlockAligned {
            tensor: name.to_owned(),
            ggml_type: ggml_type.name(),
            row,
            block_size: ggml_type.block_size(),
        });
    }
    ggml_type
        .bytes_for(elements)
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| GgufError::ByteSizeOverflow {
            tensor: name.to_owned(),
            ggml_type: ggml_type.name(),
            elements,
            max: MAX_ELEMENTS,
        })
}

fn check_tensor_extents(tensors: &[TensorInfo], data_len: usize) -> Result<()> {
    for t in tensors {
        let inside = t
            .offset
            .checked_add(t.size)
            .is_some_and(|end| end <= data_len as u64);
        if !inside {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                size: t.size,
                data_len,
            });
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Both ends were bounded by data_len above, so the sum cannot overflow.
        let a_end = a.offset + a.size;
        if b.offset < a_end {
            return Err(GgufError::OverlappingTensors {
                first: a.name.clone(),
                second: b.name.clone(),
                first_end: a_end,
                second_start: b.offset,
            });
        }
    }
    Ok(())
}

/// The whole file's bytes, so that an `Arc<GgufFile>` can own the weight
/// slices handed to `QLinear` without copying them out of the mapping.
impl AsRef<[u8]> for GgufFile<'_> {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}
