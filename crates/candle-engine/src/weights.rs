//! Where the decoder's weights come from. A source hands out each tensor as
//! bytes plus its ggml type and shape, borrowed from the file's mapping when
//! possible, so that every linear layer becomes a [`QLinear`] and there is
//! one matmul path whatever the format.

use crate::backend::Backend;
use crate::config::Family;
use crate::{Error, Result};
use candle_quant::{QLinear, QuantType, WeightBytes};
use std::sync::Arc;

/// Lets row ranges of a tensor borrow the tensor's own bytes.
struct SharedBytes(WeightBytes);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// One tensor of a checkpoint. `dims` is in row-major order, outermost
/// first (`[out_features, in_features]` for a linear layer).
pub struct RawTensor {
    /// The file's own name of the tensor, for errors.
    pub key: String,
    pub ty: QuantType,
    pub dims: Vec<usize>,
    pub bytes: WeightBytes,
}

/// A checkpoint the decoder can read tensors from, by the decoder's own
/// names (see [`TensorName`]).
pub trait WeightSource {
    /// The file's own key for `name` in a model of `family`.
    fn key(&self, name: TensorName, family: Family) -> String;

    /// The tensor stored under `key`, or `None` when the file lacks it.
    fn get(&self, key: &str) -> Result<Option<RawTensor>>;

    /// The tensor `name` of a `family` model, or `None` when the checkpoint
    /// lacks it (tensors only some files carry: biases, a separate output).
    fn find(&self, name: TensorName, family: Family) -> Result<Option<RawTensor>> {
        self.get(&self.key(name, family))
    }

    /// The tensor `name` of a `family` model; its absence is an error naming
    /// the file's key.
    fn tensor(&self, name: TensorName, family: Family) -> Result<RawTensor> {
        let key = self.key(name, family);
        self.get(&key)?.ok_or(Error::MissingTensor(key))
    }
}

/// The tensors of a decoder, independent of any file format's naming: a
/// few global ones, and the same parts in every layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorName {
    Global(GlobalTensor),
    Layer(usize, LayerTensor),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalTensor {
    /// [vocab, hidden]
    TokenEmbedding,
    /// [hidden]
    OutputNorm,
    /// [vocab, hidden]; absent when tied to the embedding.
    Output,
}

/// The parts of one layer. The LLaMA set comes first; the others exist in
/// some families only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerTensor {
    AttentionNorm,
    Query,
    Key,
    Value,
    AttentionOutput,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
    /// Qwen2's projection biases: [heads * head_dim] and [kv_heads * head_dim].
    QueryBias,
    KeyBias,
    ValueBias,
    /// Per-head RMSNorm weights [head_dim] (Qwen3, Gemma 3).
    QueryNorm,
    KeyNorm,
    /// Gemma's sandwich norms on the attention and feed-forward outputs.
    PostAttentionNorm,
    PostFfnNorm,
    /// Phi-3's query, key and value projections stacked by rows.
    FusedQkv,
    /// Phi-3's gate and up projections stacked by rows (gate first).
    FusedGateUp,
}

impl TensorName {
    /// The name in Hugging Face `transformers` checkpoints of `family`.
    pub fn hf(self, family: Family) -> String {
        let gemma = matches!(family, Family::Gemma2 | Family::Gemma3);
        let (layer, part) = match self {
            Self::Global(GlobalTensor::TokenEmbedding) => {
                return "model.embed_tokens.weight".into()
            }
            Self::Global(GlobalTensor::OutputNorm) => return "model.norm.weight".into(),
            Self::Global(GlobalTensor::Output) => return "lm_head.weight".into(),
            Self::Layer(layer, part) => (layer, part),
        };
        let suffix = match part {
            LayerTensor::AttentionNorm => "input_layernorm.weight",
            LayerTensor::Query => "self_attn.q_proj.weight",
            LayerTensor::Key => "self_attn.k_proj.weight",
            LayerTensor::Value => "self_attn.v_proj.weight",
            LayerTensor::AttentionOutput => "self_attn.o_proj.weight",
            // Gemma's `post_attention_layernorm` is a sandwich norm; its
            // pre-FFN norm has a name of its own.
            LayerTensor::FfnNorm if gemma => "pre_feedforward_layernorm.weight",
            LayerTensor::FfnNorm => "post_attention_layernorm.weight",
            LayerTensor::FfnGate => "mlp.gate_proj.weight",
            LayerTensor::FfnUp => "mlp.up_proj.weight",
            LayerTensor::FfnDown => "mlp.down_proj.weight",
            LayerTensor::QueryBias => "self_attn.q_proj.bias",
            LayerTensor::KeyBias => "self_attn.k_proj.bias",
            LayerTensor::ValueBias => "self_attn.v_proj.bias",
            LayerTensor::QueryNorm => "self_attn.q_norm.weight",
            LayerTensor::KeyNorm => "self_attn.k_norm.weight",
            LayerTensor::PostAttentionNorm => "post_attention_layernorm.weight",
            LayerTensor::PostFfnNorm => "post_feedforward_layernorm.weight",
            LayerTensor::FusedQkv => "self_attn.qkv_proj.weight",
            LayerTensor::FusedGateUp => "mlp.gate_up_proj.weight",
        };
        format!("model.layers.{layer}.{suffix}")
    }

    /// The name llama.cpp's converter gives it (the same in every family).
    pub fn gguf(self) -> String {
        let (layer, part) = match self {
            Self::Global(GlobalTensor::TokenEmbedding) => return "token_embd.weight".into(),
            Self::Global(GlobalTensor::OutputNorm) => return "output_norm.weight".into(),
            Self::Global(GlobalTensor::Output) => return "output.weight".into(),
            Self::Layer(layer, part) => (layer, part),
        };
        let suffix = match part {
            LayerTensor::AttentionNorm => "attn_norm.weight",
            LayerTensor::Query => "attn_q.weight",
            LayerTensor::Key => "attn_k.weight",
            LayerTensor::Value => "attn_v.weight",
            LayerTensor::AttentionOutput => "attn_output.weight",
            LayerTensor::FfnNorm => "ffn_norm.weight",
            LayerTensor::FfnGate => "ffn_gate.weight",
            LayerTensor::FfnUp => "ffn_up.weight",
            LayerTensor::FfnDown => "ffn_down.weight",
            LayerTensor::QueryBias => "attn_q.bias",
            LayerTensor::KeyBias => "attn_k.bias",
            LayerTensor::ValueBias => "attn_v.bias",
            LayerTensor::QueryNorm => "attn_q_norm.weight",
            LayerTensor::KeyNorm => "attn_k_norm.weight",
            LayerTensor::PostAttentionNorm => "post_attention_norm.weight",
            LayerTensor::PostFfnNorm => "post_ffw_norm.weight",
            LayerTensor::FusedQkv => "attn_qkv.weight",
            // Phi-3 GGUF files keep the stacked gate/up under the up name.
            LayerTensor::FusedGateUp => "ffn_up.weight",
        };
        format!("blk.{layer}.{suffix}")
    }
}

impl RawTensor {
    /// Fails unless the tensor has shape `expected`.
    pub fn check_dims(&self, expected: &[usize]) -> Result<()> {
        if self.dims != expected {
            return Err(Error::TensorShape {
                name: self.key.clone(),
                expected: expected.to_vec(),
                got: self.dims.clone(),
            });
        }
        Ok(())
    }

    /// A linear layer `[out, in]` for `backend`, checked against the
    /// expected shape.
    pub fn into_linear(
        self,
        out_features: usize,
        in_features: usize,
        backend: &Backend,
    ) -> Result<QLinear> {
        self.check_dims(&[out_features, in_features])?;
        linear_for(backend, self.ty, out_features, in_features, self.bytes)
    }

    /// Splits a `[sum(rows), in_features]` matrix stacked by rows into one
    /// linear layer per part, each borrowing its rows of the same bytes.
    pub fn split_rows<const N: usize>(
        self,
        rows: [usize; N],
        in_features: usize,
        backend: &Backend,
    ) -> Result<[QLinear; N]> {
        self.check_dims(&[rows.iter().sum(), in_features])?;
        let row_bytes = self.ty.row_bytes(in_features)?;
        let whole = Arc::new(SharedBytes(self.bytes));
        let mut start = 0;
        let parts = rows
            .iter()
            .map(|&n| {
                let range = start * row_bytes..(start + n) * row_bytes;
                start += n;
                let bytes = WeightBytes::new(whole.clone(), range)?;
                linear_for(backend, self.ty, n, in_features, bytes)
            })
            .collect::<Result<Vec<_>>>()?;
        // One part per entry of `rows`, by construction.
        parts.try_into().map_err(|_| {
            Error::Internal(format!("{} split into the wrong number of parts", self.key))
        })
    }

    /// All values as f32 (norm weights, biases), checked against the
    /// expected shape.
    pub fn to_f32(&self, expected: &[usize]) -> Result<Vec<f32>> {
        self.check_dims(expected)?;
        let n = expected.iter().product();
        Ok(candle_quant::quant::dequantize(
            self.ty,
            self.bytes.as_slice(),
            n,
        )?)
    }
}

/// A linear layer over `bytes`: our kernels for `Backend::Native`, upstream
/// `QMatMul` on the device for `Backend::Tensors`.
fn linear_for(
    backend: &Backend,
    ty: QuantType,
    out_features: usize,
    in_features: usize,
    bytes: WeightBytes,
) -> Result<QLinear> {
    Ok(match backend {
        Backend::Native => QLinear::from_bytes(ty, out_features, in_features, bytes)?,
        Backend::Tensors(device) => {
            QLinear::upstream_from_bytes(ty, out_features, in_features, bytes, device)?
        }
    })
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{safetensors_files, SafetensorsDir};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    /// The `*.safetensors` files of `dir`, sorted by name (shards in order).
    pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// The `*.safetensors` files of a Hugging Face model directory,
    /// memory-mapped; tensors are borrowed from the mappings.
    pub struct SafetensorsDir {
        tensors: HashMap<String, (usize, QuantType, Vec<usize>, std::ops::Range<usize>)>,
        /// Tensors of other dtypes (integer buffers such as BERT's
        /// `position_ids`): an error only when asked for.
        unsupported: HashMap<String, String>,
        maps: Vec<Arc<memmap2::Mmap>>,
    }

    impl SafetensorsDir {
        pub fn open(dir: &Path) -> Result<Self> {
            let files = safetensors_files(dir)?;
            if files.is_empty() {
                return Err(Error::InvalidModel(format!(
                    "no *.safetensors file in {}",
                    dir.display()
                )));
            }
            Self::open_files(&files)
        }

        /// Maps `files` (the shards of one checkpoint); the tensors read
        /// from it must be f32, f16 or bf16.
        pub fn open_files(files: &[PathBuf]) -> Result<Self> {
            let mut tensors = HashMap::new();
            let mut unsupported = HashMap::new();
            let mut maps = Vec::new();
            for path in files {
                let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                // SAFETY: the mapping is read-only and the loader documents that
                // model files must not be modified while loaded.
                let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
                let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&map)
                    .map_err(|e| Error::InvalidModel(format!("{}: {e}", path.display())))?;
                let data_start = 8 + header_len;
                for (name, info) in metadata.tensors() {
                    let ty = match info.dtype {
                        safetensors::Dtype::F32 => QuantType::F32,
                        safetensors::Dtype::F16 => QuantType::F16,
                        safetensors::Dtype::BF16 => QuantType::BF16,
                        other => {
                            unsupported.insert(
                                name.clone(),
                                format!(
                                    "{}: tensor {name} has dtype {other:?}; supported: F32, F16, BF16",
                                    path.display()
                                ),
                            );
                            continue;
                        }
                    };
                    let (start, end) = info.data_offsets;
                    tensors.insert(
                        name.clone(),
                        (
                            maps.len(),
                            ty,
                            info.shape.clone(),
                            data_start + start..data_start + end,
                        ),
                    );
                }
                maps.push(Arc::new(map));
            }
            Ok(Self {
                tensors,
                unsupported,
                maps,
            })
        }

        /// The names of all tensors, as the checkpoint spells them, in no
        /// particular order.
        pub fn names(&self) -> impl Iterator<Item = &str> {
            self.tensors.keys().map(String::as_str)
        }
    }

    impl WeightSource for SafetensorsDir {
        fn key(&self, name: TensorName, family: Family) -> String {
            name.hf(family)
        }

        fn get(&self, key: &str) -> Result<Option<RawTensor>> {
            if let Some(message) = self.unsupported.get(key) {
                return Err(Error::InvalidModel(message.clone()));
            }
            let Some((file, ty, dims, range)) = self.tensors.get(key) else {
                return Ok(None);
            };
            Ok(Some(RawTensor {
                key: key.to_string(),
                ty: *ty,
                dims: dims.clone(),
                bytes: WeightBytes::new(self.maps[*file].clone(), range.clone())?,
            }))
        }
    }
}
