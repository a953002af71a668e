//! Human-readable summary of a GGUF file, for `hanzo-candle inspect`.

use std::fmt::{self, Write};

use super::reader::GgufFile;

/// Metadata (long arrays summarised) and the tensor table of `file`.
///
/// ```
/// use candle_quant::gguf::{describe, GgufFile, GgufWriter, GgmlType, Value};
/// let mut writer = GgufWriter::new();
/// writer.add_metadata("tokenizer.ggml.tokens", Value::string_array((0..1000).map(|i| format!("t{i}"))))?;
/// writer.add_tensor("output_norm.weight", GgmlType::F32, &[8], vec![0u8; 32])?;
/// let text = describe(&GgufFile::from_vec(writer.to_bytes()?)?);
/// assert!(text.contains("tokenizer.ggml.tokens: array[string; 1000]"));
/// assert!(text.contains("992 more"));
/// assert!(text.contains("output_norm.weight"));
/// # Ok::<(), candle_quant::gguf::GgufError>(())
/// ```
pub fn describe(file: &GgufFile<'_>) -> String {
    file.to_string()
}

impl fmt::Debug for GgufFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version())
            .field("file_len", &self.file_len())
            .field("alignment", &self.alignment())
            .field("metadata_keys", &self.metadata_len())
            .field("tensors", &self.tensor_infos().len())
            .field("memory_mapped", &self.is_memory_mapped())
            .finish()
    }
}

impl fmt::Display for GgufFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.tensor_infos().iter().map(|t| t.size).sum();
        writeln!(
            f,
            "GGUF v{}: {} bytes, alignment {}, data section at byte {}",
            self.version(),
            self.file_len(),
            self.alignment(),
            self.data_offset()
        )?;
        writeln!(f, "metadata ({} keys):", self.metadata_len())?;
        for (key, value) in self.metadata() {
            writeln!(f, "  {key}: {} = {value}", value.type_description())?;
        }
        writeln!(
            f,
            "tensors ({}, {total} bytes of data):",
            self.tensor_infos().len()
        )?;
        let name_width = self
            .tensor_infos()
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "  {:<name_width$}  {:<7}  {:<24}  {:>12}  {:>12}",
            "name", "type", "dims", "bytes", "offset"
        )?;
        for t in self.tensor_infos() {
            let mut dims = String::new();
            for (i, d) in t.dims.iter().enumerate() {
                let sep = if i == 0 { "" } else { " x " };
                let _ = write!(dims, "{sep}{d}");
            }
            writeln!(
                f,
                "  {:<name_width$}  {:<7}  {:<24}  {:>12}  {:>12}",
                t.name,
                t.ggml_type.name(),
                dims,
                t.size,
                t.offset
            )?;
        }
        Ok(())
    }
}
