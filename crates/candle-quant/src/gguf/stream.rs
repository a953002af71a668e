//! Writes a GGUF file tensor by tensor: the header first, then each tensor
//! fetched as f32, quantized on all cores and written before the next one
//! is fetched, so peak memory stays near one tensor, not the model.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{GgmlType, GgufError, GgufWriter, Value, DEFAULT_ALIGNMENT};
use crate::quant::{quantize, QuantError, QuantType};

/// Errors of streaming a quantized GGUF file, each naming the tensor or path.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "quantize: tensor {tensor:?}: shape {shape:?} has {expected} values, the source gave {got}"
    )]
    ValueCount {
        tensor: String,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },

    #[error("quantize: tensor {tensor:?} as {ty}: {source}")]
    Quantize {
        tensor: String,
        ty: QuantType,
        #[source]
        source: QuantError,
    },

    #[error("quantize: reading tensor {tensor:?}: {source}")]
    Source {
        tensor: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("quantize: cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Gguf(#[from] GgufError),
}

/// One tensor of the output file before its data exists.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorPlan {
    /// llama.cpp's GGUF name, e.g. `blk.3.ffn_down.weight`.
    pub name: String,
    /// Row-major shape, outermost first (`[out_features, in_features]`).
    pub shape: Vec<usize>,
    pub ty: QuantType,
}

/// What [`write_gguf`] reports after each tensor.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// 1-based index of the tensor just written.
    pub index: usize,
    pub count: usize,
    pub tensor: &'a TensorPlan,
    /// Bytes of this tensor in the output.
    pub tensor_bytes: u64,
    /// Bytes written so far, header included.
    pub written: u64,
    /// The final file size.
    pub total: u64,
}

/// Writes a GGUF file to `path`, streaming tensor by tensor.
///
/// `load(i)` returns the values of `tensors[i]` as f32 in row-major order;
/// it is called once per tensor, in order, and its buffer is dropped before
/// the next call. The file is written to `<path>.partial` and renamed when
/// complete, so a failure never leaves a truncated model under `path`.
/// Returns the file size.
///
/// ```
/// use candle_quant::gguf::{write_gguf, TensorPlan};
/// use candle_quant::gguf::GgufFile;
/// use candle_quant::QuantType;
/// let dir = std::env::temp_dir().join(format!("stream-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("tiny.gguf");
/// let tensors = [TensorPlan { name: "w".into(), shape: vec![2, 32], ty: QuantType::Q8_0 }];
/// let metadata = vec![("general.architecture".to_string(), "llama".into())];
/// write_gguf(&path, metadata, &tensors, |_| Ok::<_, std::io::Error>(vec![0.5f32; 64]), |_| {})?;
/// let file = GgufFile::open(&path)?;
/// assert_eq!(file.tensor("w")?.info.shape(), [2, 32]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_gguf<E>(
    path: &Path,
    metadata: Vec<(String, Value)>,
    tensors: &[TensorPlan],
    mut load: impl FnMut(usize) -> Result<Vec<f32>, E>,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<u64, StreamError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let sizes = tensors
        .iter()
        .map(|t| {
            let elems: usize = t.shape.iter().product();
            t.ty.row_bytes(elems)
                .map_err(|source| StreamError::Quantize {
                    tensor: t.name.clone(),
                    ty: t.ty,
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let header = header_bytes(metadata, tensors, &sizes)?;
    let total = header.len() as u64
        + sizes
            .iter()
            .map(|&s| (s as u64).next_multiple_of(DEFAULT_ALIGNMENT))
            .sum::<u64>();

    let partial = PathBuf::from(format!("{}.partial", path.display()));
    let io = |source| StreamError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(&partial).map_err(io)?;
    let result = (|| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header).map_err(io)?;
        let mut written = header.len() as u64;
        for (i, (plan, &size)) in tensors.iter().zip(&sizes).enumerate() {
            let values = load(i).map_err(|e| StreamError::Source {
                tensor: plan.name.clone(),
                source: e.into(),
            })?;
            let expected: usize = plan.shape.iter().product();
            if values.len() != expected {
                return Err(StreamError::ValueCount {
                    tensor: plan.name.clone(),
                    shape: plan.shape.clone(),
                    expected,
                    got: values.len(),
                });
            }
            let row = plan.shape.last().copied().unwrap_or(1);
            let bytes = quantize_rows(plan, &values, row)?;
            drop(values);
            debug_assert_eq!(bytes.len(), size);
            let padded = (size as u64).next_multiple_of(DEFAULT_ALIGNMENT);
            out.write_all(&bytes).map_err(io)?;
            out.write_all(&vec![0u8; (padded - size as u64) as usize])
                .map_err(io)?;
            written += padded;
            progress(Progress {
                index: i + 1,
                count: tensors.len(),
                tensor: plan,
                tensor_bytes: size as u64,
                written,
                total,
            });
        }
        out.flush().map_err(io)?;
        out.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        std::fs::rename(&partial, path).map_err(io)?;
        Ok(written)
    })();
    if result.is_err() {
        // Best effort: the partial file is useless and may be large.
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The header (metadata, tensor infos, padding up to the data section),
/// serialized by [`GgufWriter`] so its validation applies: the writer is
/// given zero-filled stand-ins for the data and its output is cut where the
/// data section begins.
fn header_bytes(
    metadata: Vec<(String, Value)>,
    tensors: &[TensorPlan],
    sizes: &[usize],
) -> Result<Vec<u8>, StreamError> {
    let zeros = vec![0u8; sizes.iter().copied().max().unwrap_or(0)];
    let mut writer = GgufWriter::new();
    for (key, value) in metadata {
        writer.add_metadata(&key, value)?;
    }
    for (plan, &size) in tensors.iter().zip(sizes) {
        let ggml = GgmlType::from_id(plan.ty.ggml_id())
            .expect("every QuantType has a ggml type id the reader knows");
        let dims: Vec<u64> = plan.shape.iter().rev().map(|&d| d as u64).collect();
        writer.add_tensor(&plan.name, ggml, &dims, Cow::Borrowed(&zeros[..size]))?;
    }
    let data_len: u64 = sizes
        .iter()
        .map(|&s| (s as u64).next_multiple_of(DEFAULT_ALIGNMENT))
        .sum();
    let mut sink = HeaderSink {
        header: Vec::new(),
        seen: 0,
        keep: u64::MAX,
    };
    let total = writer.write_to(&mut sink)?;
    sink.header.clear();
    sink.seen = 0;
    sink.keep = total - data_len;
    writer.write_to(&mut sink)?;
    Ok(sink.header)
}

/// Keeps the first `keep` bytes written to it and discards the rest.
struct HeaderSink {
    header: Vec<u8>,
    seen: u64,
    keep: u64,
}

impl Write for HeaderSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.keep.saturating_sub(self.seen).min(buf.len() as u64) as usize;
        if self.keep != u64::MAX {
            self.header.extend_from_slice(&buf[..room]);
        }
        self.seen += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Quantizes whole rows, split across the available cores.
fn quantize_rows(plan: &TensorPlan, values: &[f32], row: usize) -> Result<Vec<u8>, StreamError> {
    let wrap = |source| StreamError::Quantize {
        tensor: plan.name.clone(),
        ty: plan.ty,
        source,
    };
    let rows = values.len() / row.max(1);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(rows.max(1));
    if threads <= 1 || !plan.ty.is_quantized() {
        return quantize(plan.ty, values).map_err(wrap);
    }
    let chunk = rows.div_ceil(threads) * row;
    let parts: Vec<Result<Vec<u8>, QuantError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = values
            .chunks(chunk)
            .map(|part| scope.spawn(move || quantize(plan.ty, part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("quantizer threads do not panic"))
            .collect()
    });
    let mut out = Vec::with_capacity(plan.ty.row_bytes(values.len()).map_err(wrap)?);
    for part in parts {
        out.extend_from_slice(&part.map_err(wrap)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::gguf::GgufFile;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::quant::dequantize;

    // Reads back through the memory-mapped reader, which wasm targets lack.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn streamed_file_reads_back_with_each_tensor_in_place() {
        let dir = std::env::temp_dir().join(format!("stream-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        let plans = vec![
            TensorPlan {
                name: "a.weight".into(),
                shape: vec![3, 256],
                ty: QuantType::Q4K,
            },
            TensorPlan {
                name: "n.weight".into(),
                shape: vec![5],
                ty: QuantType::F32,
            },
            TensorPlan {
                name: "b.weight".into(),
                shape: vec![7, 64],
                ty: QuantType::Q8_0,
            },
        ];
        let data: Vec<Vec<f32>> = plans
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let n: usize = p.shape.iter().product();
                (0..n)
                    .map(|i| ((i * 7 + k) % 23) as f32 / 11.0 - 1.0)
                    .collect()
            })
            .collect();
        let mut seen = Vec::new();
        let size = write_gguf(
            &path,
            vec![("general.name".into(), "t".into())],
            &plans,
            |i| Ok::<_, std::io::Error>(data[i].clone()),
            |p| seen.push((p.index, p.count, p.written, p.total)),
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|&(_, n, _, total)| n == 3 && total == size));
        assert_eq!(seen[2].2, size);
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.get_str("general.name").unwrap(), "t");
        for (plan, values) in plans.iter().zip(&data) {
            let view = file.tensor(&plan.name).unwrap();
            assert_eq!(view.info.shape(), plan.shape);
            // The file must hold exactly what the quantizer produces for
            // these values: streaming may not change a byte.
            assert_eq!(view.data, quantize(plan.ty, values).unwrap().as_slice());
            let back = dequantize(plan.ty, view.data, values.len()).unwrap();
            let max_err = back
                .iter()
                .zip(values)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // Values span [-1, 1]; 4-bit K-quant steps are 2/15 at worst.
            assert!(max_err < 0.15, "{}: {max_err}", plan.name);
        }
        assert!(!PathBuf::from(format!("{}.partial", path.display())).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failing_source_leaves_no_file_and_names_the_tensor() {
        let dir = std::env::temp_dir().join(format!("stream-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        let plans = [TensorPlan {
            name: "x.weight".into(),
            shape: vec![2, 32],
            ty: QuantType::Q8_0,
        }];
        let short = write_gguf(
            &path,
            vec![],
            &plans,
            |_| Ok::<_, std::io::Error>(vec![0.0; 10]),
            |_| {},
        );
        let msg = short.unwrap_err().to_string();
        assert!(
            msg.contains("x.weight") && msg.contains("64") && msg.contains("10"),
            "{msg}"
        );
        let failing = write_gguf(
            &path,
            vec![],
            &plans,
            |_| Err(std::io::Error::other("disk on fire")),
            |_| {},
        );
        assert!(failing.unwrap_err().to_string().contains("disk on fire"));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
