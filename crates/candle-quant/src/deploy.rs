//! Quantize at deploy time (HIP-19: store in safetensors, quantize to GGUF
//! for the target): the architecture-independent half of
//! `hanzo-candle quantize`.
//!
//! - [`Preset`] names a target (`q4_k_m`, `q5_k_m`, `q8_0`, `q4_0`) and
//!   [`plan_types`] turns it into one storage type per tensor, following
//!   llama.cpp's mixture rules so that files match what `llama-quantize`
//!   would produce for the same preset.
//! - [`write_gguf`] streams the file: the header is written first, then each
//!   tensor is fetched as f32, quantized on all cores and written before the
//!   next one is fetched, so peak memory stays near one tensor, not the model.
//!
//! Tensor names are llama.cpp's GGUF names (`token_embd.weight`,
//! `blk.N.attn_v.weight`, `output.weight`...); mapping a checkpoint's own
//! names onto them is the caller's job.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::gguf::{GgmlType, GgufError, GgufWriter, Value, DEFAULT_ALIGNMENT};
use crate::quant::{quantize, QuantError, QuantType, QK_K};

/// Errors of planning and writing a quantized GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("quantize: unknown preset `{got}`; expected one of {}", Preset::NAMES)]
    UnknownPreset { got: String },

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

/// A target mixture, named as `llama-quantize` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Q4_K for most weights, Q6_K for the output and for `attn_v` and
    /// `ffn_down` in the layers that matter most.
    Q4KM,
    /// Q5_K for most weights, Q6_K where `q4_k_m` uses it.
    Q5KM,
    /// Q8_0 everywhere.
    Q8_0,
    /// Q4_0 for most weights, Q6_K (or Q8_0) for the output.
    Q4_0,
}

impl Preset {
    pub const ALL: [Preset; 4] = [Preset::Q4KM, Preset::Q5KM, Preset::Q8_0, Preset::Q4_0];
    const NAMES: &'static str = "q4_k_m, q5_k_m, q8_0, q4_0";

    /// The name on the command line, e.g. `"q4_k_m"`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Q4KM => "q4_k_m",
            Preset::Q5KM => "q5_k_m",
            Preset::Q8_0 => "q8_0",
            Preset::Q4_0 => "q4_0",
        }
    }

    /// The type most weight matrices get.
    pub fn base_type(self) -> QuantType {
        match self {
            Preset::Q4KM => QuantType::Q4K,
            Preset::Q5KM => QuantType::Q5K,
            Preset::Q8_0 => QuantType::Q8_0,
            Preset::Q4_0 => QuantType::Q4_0,
        }
    }

    /// llama.cpp's `llama_ftype` number, stored as `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            Preset::Q4_0 => 2,
            Preset::Q8_0 => 7,
            Preset::Q4KM => 15,
            Preset::Q5KM => 17,
        }
    }

    fn is_k_mixture(self) -> bool {
        matches!(self, Preset::Q4KM | Preset::Q5KM)
    }
}

impl std::str::FromStr for Preset {
    type Err = DeployError;

    fn from_str(s: &str) -> Result<Self, DeployError> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| DeployError::UnknownPreset { got: s.to_owned() })
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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

/// Chooses each tensor's storage type for `preset`.
///
/// tensors: `(gguf_name, row-major shape)` in file order.
///
/// The rules are llama.cpp's (`llama_tensor_get_type`) for these presets:
/// vectors (norms, biases) stay f32; the output matrix — or the token
/// embedding when the output is tied to it — gets Q6_K (Q8_0 for `q8_0`,
/// or when its rows are not a multiple of 256); with the `_m` presets,
/// `attn_v` and `ffn_down` get Q6_K in the first and last eighth of the
/// layers and in every third layer between, and a fused `attn_qkv` one
/// step up. A K-quant chosen for rows that are not a multiple of 256 falls
/// back to Q5_0 (for Q4_K), Q5_1 (Q5_K) or Q8_0 (Q6_K), and a block type
/// whose block does not divide the rows falls back to F16.
///
/// ```
/// use candle_quant::deploy::{plan_types, Preset};
/// use candle_quant::QuantType;
/// let tensors = [
///     ("token_embd.weight".to_string(), vec![1000, 512]),
///     ("blk.0.attn_norm.weight".to_string(), vec![512]),
///     ("blk.0.attn_q.weight".to_string(), vec![512, 512]),
///     ("blk.0.attn_v.weight".to_string(), vec![128, 512]),
///     ("blk.0.ffn_down.weight".to_string(), vec![512, 1376]),
/// ];
/// let plan = plan_types(Preset::Q4KM, &tensors);
/// let types: Vec<QuantType> = plan.iter().map(|t| t.ty).collect();
/// // Tied output: the embedding is quantized as the output matrix; the
/// // 1376-long rows of ffn_down cannot hold Q6_K super-blocks.
/// assert_eq!(types, [QuantType::Q6K, QuantType::F32, QuantType::Q4K, QuantType::Q6K, QuantType::Q8_0]);
/// ```
pub fn plan_types(preset: Preset, tensors: &[(String, Vec<usize>)]) -> Vec<TensorPlan> {
    let has_output = tensors.iter().any(|(name, _)| name == "output.weight");
    let count = |part: &str| tensors.iter().filter(|(n, _)| n.contains(part)).count();
    let n_attn_v = count("attn_v.weight");
    let n_ffn_down = count("ffn_down");
    let (mut i_attn_v, mut i_ffn_down) = (0, 0);
    tensors
        .iter()
        .map(|(name, shape)| {
            let row = shape.last().copied().unwrap_or(0);
            let is_matrix = shape.len() >= 2 && name.ends_with("weight");
            let ty = if !is_matrix {
                QuantType::F32
            } else if name == "output.weight" || (!has_output && name == "token_embd.weight") {
                output_type(preset, row)
            } else if name.contains("attn_v.weight") {
                let i = i_attn_v;
                i_attn_v += 1;
                more_bits_type(preset, i, n_attn_v)
            } else if name.contains("ffn_down") {
                let i = i_ffn_down;
                i_ffn_down += 1;
                more_bits_type(preset, i, n_ffn_down)
            } else if name.contains("attn_qkv.weight") {
                match preset {
                    Preset::Q4KM => QuantType::Q5K,
                    Preset::Q5KM => QuantType::Q6K,
                    _ => preset.base_type(),
                }
            } else {
                preset.base_type()
            };
            TensorPlan {
                name: name.clone(),
                shape: shape.clone(),
                ty: fit_row(ty, row),
            }
        })
        .collect()
}

fn output_type(preset: Preset, row: usize) -> QuantType {
    if preset == Preset::Q8_0 || !row.is_multiple_of(QK_K) {
        QuantType::Q8_0
    } else {
        QuantType::Q6K
    }
}

/// The layers that get more bits: llama.cpp's `use_more_bits`.
fn more_bits_type(preset: Preset, layer: usize, layers: usize) -> QuantType {
    let eighth = layers / 8;
    let more = layer < eighth || layer >= 7 * layers / 8 || (layer - eighth) % 3 == 2;
    if preset.is_k_mixture() && more {
        QuantType::Q6K
    } else {
        preset.base_type()
    }
}

fn fit_row(ty: QuantType, row: usize) -> QuantType {
    let ty = if ty.block_elems() == QK_K && !row.is_multiple_of(QK_K) {
        match ty {
            QuantType::Q4K => QuantType::Q5_0,
            QuantType::Q5K => QuantType::Q5_1,
            _ => QuantType::Q8_0,
        }
    } else {
        ty
    };
    if row.is_multiple_of(ty.block_elems()) {
        ty
    } else {
        QuantType::F16
    }
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
/// use candle_quant::deploy::{write_gguf, TensorPlan};
/// use candle_quant::gguf::GgufFile;
/// use candle_quant::QuantType;
/// let dir = std::env::temp_dir().join(format!("deploy-doc-{}", std::process::id()));
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
) -> Result<u64, DeployError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let sizes = tensors
        .iter()
        .map(|t| {
            let elems: usize = t.shape.iter().product();
            t.ty.row_bytes(elems)
                .map_err(|source| DeployError::Quantize {
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
    let io = |source| DeployError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(&partial).map_err(io)?;
    let result = (|| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header).map_err(io)?;
        let mut written = header.len() as u64;
        for (i, (plan, &size)) in tensors.iter().zip(&sizes).enumerate() {
            let values = load(i).map_err(|e| DeployError::Source {
                tensor: plan.name.clone(),
                source: e.into(),
            })?;
            let expected: usize = plan.shape.iter().product();
            if values.len() != expected {
                return Err(DeployError::ValueCount {
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
) -> Result<Vec<u8>, DeployError> {
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
fn quantize_rows(plan: &TensorPlan, values: &[f32], row: usize) -> Result<Vec<u8>, DeployError> {
    let wrap = |source| DeployError::Quantize {
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

    fn llama_like(
        layers: usize,
        hidden: usize,
        ffn: usize,
        tied: bool,
    ) -> Vec<(String, Vec<usize>)> {
        let mut t = vec![("token_embd.weight".to_string(), vec![1000, hidden])];
        for i in 0..layers {
            for (name, shape) in [
                ("attn_norm.weight", vec![hidden]),
                ("attn_q.weight", vec![hidden, hidden]),
                ("attn_k.weight", vec![hidden / 4, hidden]),
                ("attn_v.weight", vec![hidden / 4, hidden]),
                ("attn_output.weight", vec![hidden, hidden]),
                ("ffn_norm.weight", vec![hidden]),
                ("ffn_gate.weight", vec![ffn, hidden]),
                ("ffn_up.weight", vec![ffn, hidden]),
                ("ffn_down.weight", vec![hidden, ffn]),
            ] {
                t.push((format!("blk.{i}.{name}"), shape));
            }
        }
        t.push(("output_norm.weight".to_string(), vec![hidden]));
        if !tied {
            t.push(("output.weight".to_string(), vec![1000, hidden]));
        }
        t
    }

    fn type_of(plan: &[TensorPlan], name: &str) -> QuantType {
        plan.iter().find(|t| t.name == name).unwrap().ty
    }

    #[test]
    fn q4_k_m_gives_more_bits_to_llama_cpps_layers() {
        // 32 layers, as in a 7B llama: llama.cpp's use_more_bits picks
        // 0..4, 28..32 and every third layer from 4 + 2.
        let plan = plan_types(Preset::Q4KM, &llama_like(32, 512, 1024, false));
        let expected: Vec<usize> = (0..32)
            .filter(|&i| !(4..28).contains(&i) || (i - 4) % 3 == 2)
            .collect();
        for i in 0..32 {
            let want = if expected.contains(&i) {
                QuantType::Q6K
            } else {
                QuantType::Q4K
            };
            assert_eq!(type_of(&plan, &format!("blk.{i}.attn_v.weight")), want);
            assert_eq!(type_of(&plan, &format!("blk.{i}.ffn_down.weight")), want);
            assert_eq!(
                type_of(&plan, &format!("blk.{i}.attn_q.weight")),
                QuantType::Q4K
            );
            assert_eq!(
                type_of(&plan, &format!("blk.{i}.ffn_norm.weight")),
                QuantType::F32
            );
        }
        assert_eq!(type_of(&plan, "output.weight"), QuantType::Q6K);
        assert_eq!(type_of(&plan, "token_embd.weight"), QuantType::Q4K);
    }

    #[test]
    fn rows_that_are_not_256_long_fall_back_like_llama_cpp() {
        // SmolLM2-135M: hidden 576 = 18 x 32 but not a multiple of 256;
        // intermediate 1536 = 6 x 256.
        let tensors = llama_like(30, 576, 1536, true);
        let q4 = plan_types(Preset::Q4KM, &tensors);
        assert_eq!(type_of(&q4, "token_embd.weight"), QuantType::Q8_0);
        assert_eq!(type_of(&q4, "blk.5.attn_q.weight"), QuantType::Q5_0);
        assert_eq!(type_of(&q4, "blk.0.attn_v.weight"), QuantType::Q8_0);
        assert_eq!(type_of(&q4, "blk.4.attn_v.weight"), QuantType::Q5_0);
        assert_eq!(type_of(&q4, "blk.5.attn_v.weight"), QuantType::Q8_0);
        assert_eq!(type_of(&q4, "blk.0.ffn_down.weight"), QuantType::Q6K);
        assert_eq!(type_of(&q4, "blk.4.ffn_down.weight"), QuantType::Q4K);
        let q5 = plan_types(Preset::Q5KM, &tensors);
        assert_eq!(type_of(&q5, "blk.5.attn_q.weight"), QuantType::Q5_1);
        assert_eq!(type_of(&q5, "blk.4.ffn_down.weight"), QuantType::Q5K);
        let q40 = plan_types(Preset::Q4_0, &tensors);
        assert_eq!(type_of(&q40, "token_embd.weight"), QuantType::Q8_0);
        assert_eq!(type_of(&q40, "blk.0.ffn_down.weight"), QuantType::Q4_0);
        let odd = plan_types(Preset::Q8_0, &[("w.weight".into(), vec![4, 40])]);
        assert_eq!(odd[0].ty, QuantType::F16);
    }

    #[test]
    fn presets_parse_by_name_and_reject_others() {
        for p in Preset::ALL {
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
        }
        assert_eq!("Q4_K_M".parse::<Preset>().unwrap(), Preset::Q4KM);
        let err = "q3_k_s".parse::<Preset>().unwrap_err().to_string();
        assert!(err.contains("q3_k_s") && err.contains("q4_k_m"), "{err}");
    }

    // Reads back through the memory-mapped reader, which wasm targets lack.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn streamed_file_reads_back_with_each_tensor_in_place() {
        let dir = std::env::temp_dir().join(format!("deploy-test-{}", std::process::id()));
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
        let dir = std::env::temp_dir().join(format!("deploy-fail-{}", std::process::id()));
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
