//! Writing GGUF v3 files.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;

#[cfg(feature = "tensor")]
use candle_core::{DType, Tensor};

use super::error::{GgufError, Result};
use super::reader::{
    tensor_byte_size, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT, MAX_DIMS,
};
use super::types::GgmlType;
use super::value::Value;

struct PendingTensor<'d> {
    name: String,
    ggml_type: GgmlType,
    dims: Vec<u64>,
    data: Cow<'d, [u8]>,
}

/// Builds a little-endian GGUF v3 file: metadata of every value type
/// (arrays included) and tensors, each placed at an aligned offset.
///
/// Everything is checked when added (duplicate keys and names, dims, byte
/// sizes, array element types), so a writer that accepted its inputs
/// always produces a file that [`GgufFile`](super::GgufFile) accepts.
///
/// ```
/// use candle_quant::gguf::{GgufFile, GgufWriter, GgmlType, Value, ValueType};
/// let mut writer = GgufWriter::new();
/// writer.add_metadata("tokenizer.ggml.tokens", Value::string_array(["<s>", "hi"]))?;
/// writer.add_metadata("tokenizer.ggml.scores", Value::array(ValueType::F32, [0.0f32, -1.5]))?;
/// writer.add_tensor("token_embd.weight", GgmlType::Q8_0, &[32, 2], vec![0u8; 2 * 34])?;
/// let file = GgufFile::from_vec(writer.to_bytes()?)?;
/// assert_eq!(file.get_str_array("tokenizer.ggml.tokens")?, ["<s>", "hi"]);
/// assert_eq!(file.tensor("token_embd.weight")?.info.shape(), [2, 32]);
/// # Ok::<(), candle_quant::gguf::GgufError>(())
/// ```
pub struct GgufWriter<'d> {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor<'d>>,
    names: HashSet<String>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'d> GgufWriter<'d> {
    pub fn new() -> Self {
        Self {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// Adds a metadata entry. `general.alignment` must be a power-of-two
    /// `uint32` and sets the alignment used for tensor data.
    pub fn add_metadata(&mut self, key: &str, value: impl Into<Value>) -> Result<&mut Self> {
        let value = value.into();
        if self.keys.contains(key) {
            return Err(invalid(format!("metadata {key:?}"), "key already added"));
        }
        check_value(key, &value, 0)?;
        if key == ALIGNMENT_KEY {
            match value {
                Value::U32(a) if a.is_power_of_two() && u64::from(a) <= MAX_ALIGNMENT => {
                    self.alignment = u64::from(a);
                }
                _ => {
                    return Err(invalid(
                        ALIGNMENT_KEY,
                        format!("expected a power-of-two uint32 <= {MAX_ALIGNMENT}, got {value:?}"),
                    ))
                }
            }
        }
        self.keys.insert(key.to_owned());
        self.metadata.push((key.to_owned(), value));
        Ok(self)
    }

    /// Adds a tensor from its raw encoded bytes.
    ///
    /// dims: ggml order, row length first (`[cols, rows]` for a
    /// `[rows, cols]` matrix); `data` must be exactly the byte size those
    /// dims take in `ggml_type`.
    pub fn add_tensor(
        &mut self,
        name: &str,
        ggml_type: GgmlType,
        dims: &[u64],
        data: impl Into<Cow<'d, [u8]>>,
    ) -> Result<&mut Self> {
        let data = data.into();
        let field = || format!("tensor {name:?}");
        if self.names.contains(name) {
            return Err(invalid(field(), "name already added"));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS as usize {
            return Err(invalid(
                field(),
                format!("expected 1..={MAX_DIMS} dims, got {}", dims.len()),
            ));
        }
        if dims.contains(&0) {
            return Err(invalid(
                field(),
                format!("zero-length dimension in {dims:?}"),
            ));
        }
        let size = tensor_byte_size(name, ggml_type, dims)?;
        if size != data.len() as u64 {
            return Err(invalid(
                field(),
                format!(
                    "{ggml_type} dims {dims:?} take {size} bytes, data has {}",
                    data.len()
                ),
            ));
        }
        self.names.insert(name.to_owned());
        self.tensors.push(PendingTensor {
            name: name.to_owned(),
            ggml_type,
            dims: dims.to_vec(),
            data,
        });
        Ok(self)
    }

    /// Adds an F32, F16 or BF16 candle tensor, stored in its own dtype.
    ///
    /// tensor: any shape of rank 1..=4; it is written with the dims reversed
    /// into ggml order.
    #[cfg(feature = "tensor")]
    pub fn add_candle_tensor(&mut self, name: &str, tensor: &Tensor) -> Result<&mut Self> {
        let candle_err = |source| GgufError::Candle {
            tensor: name.to_owned(),
            source,
        };
        let flat = tensor.flatten_all().map_err(candle_err)?;
        let (ggml_type, data): (GgmlType, Vec<u8>) = match tensor.dtype() {
            DType::F32 => (
                GgmlType::F32,
                flat.to_vec1::<f32>()
                    .map_err(candle_err)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            DType::F16 => (
                GgmlType::F16,
                flat.to_vec1::<half::f16>()
                    .map_err(candle_err)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            DType::BF16 => (
                GgmlType::BF16,
                flat.to_vec1::<half::bf16>()
                    .map_err(candle_err)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            other => {
                return Err(invalid(
                    format!("tensor {name:?}"),
                    format!("expected dtype f32, f16 or bf16, got {other:?}"),
                ))
            }
        };
        let dims: Vec<u64> = tensor.dims().iter().rev().map(|&d| d as u64).collect();
        self.add_tensor(name, ggml_type, &dims, data)
    }

    /// Writes the file; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, mut out: W) -> Result<u64> {
        let mut sink = CountingWriter {
            inner: &mut out,
            written: 0,
        };
        self.write_all(&mut sink)
            .map_err(|source| GgufError::WriteIo { source })?;
        Ok(sink.written)
    }

    /// The file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    fn write_all<W: Write>(&self, out: &mut CountingWriter<W>) -> std::io::Result<()> {
        out.write_all(&MAGIC)?;
        out.write_all(&3u32.to_le_bytes())?;
        out.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_string(out, key)?;
            out.write_all(&value.value_type().id().to_le_bytes())?;
            write_value(out, value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(out, &t.name)?;
            out.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                out.write_all(&d.to_le_bytes())?;
            }
            out.write_all(&t.ggml_type.id().to_le_bytes())?;
            out.write_all(&offset.to_le_bytes())?;
            offset = (offset + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        // The data section starts aligned, so padding each tensor to an
        // absolute aligned position lands it at the offset recorded above.
        for t in &self.tensors {
            pad_to(out, self.alignment)?;
            out.write_all(&t.data)?;
        }
        if self.tensors.is_empty() {
            return Ok(());
        }
        pad_to(out, self.alignment)
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> GgufError {
    GgufError::InvalidWrite {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_value(key: &str, value: &Value, depth: usize) -> Result<()> {
    if let Value::Array(element_type, items) = value {
        if depth >= super::cursor::MAX_ARRAY_NESTING {
            return Err(invalid(
                format!("metadata {key:?}"),
                format!(
                    "arrays nested deeper than {} levels",
                    super::cursor::MAX_ARRAY_NESTING
                ),
            ));
        }
        for (i, item) in items.iter().enumerate() {
            if item.value_type() != *element_type {
                return Err(invalid(
                    format!("metadata {key:?}[{i}]"),
                    format!(
                        "array declared {element_type} but element is {}",
                        item.value_type()
                    ),
                ));
            }
            check_value(key, item, depth + 1)?;
        }
    }
    Ok(())
}

struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> CountingWriter<W> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

fn pad_to<W: Write>(out: &mut CountingWriter<W>, alignment: u64) -> std::io::Result<()> {
    let padding = out.written.next_multiple_of(alignment) - out.written;
    out.write_all(&vec![0u8; padding as usize])
}

fn write_string<W: Write>(out: &mut CountingWriter<W>, s: &str) -> std::io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn write_value<W: Write>(out: &mut CountingWriter<W>, value: &Value) -> std::io::Result<()> {
    match value {
        Value::U8(v) => out.write_all(&v.to_le_bytes()),
        Value::I8(v) => out.write_all(&v.to_le_bytes()),
        Value::U16(v) => out.write_all(&v.to_le_bytes()),
        Value::I16(v) => out.write_all(&v.to_le_bytes()),
        Value::U32(v) => out.write_all(&v.to_le_bytes()),
        Value::I32(v) => out.write_all(&v.to_le_bytes()),
        Value::F32(v) => out.write_all(&v.to_le_bytes()),
        Value::Bool(v) => out.write_all(&[u8::from(*v)]),
        Value::String(s) => write_string(out, s),
        Value::U64(v) => out.write_all(&v.to_le_bytes()),
        Value::I64(v) => out.write_all(&v.to_le_bytes()),
        Value::F64(v) => out.write_all(&v.to_le_bytes()),
        Value::Array(element_type, items) => {
            out.write_all(&element_type.id().to_le_bytes())?;
            out.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|item| write_value(out, item))
        }
    }
}
