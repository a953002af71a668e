//! Where the decoder's weights come from. A source hands out each tensor as
//! bytes plus its ggml type and shape, borrowed from the file's mapping when
//! possible, so that every linear layer becomes a [`QLinear`] and there is
//! one matmul path whatever the format.

use crate::model::Backend;
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
    pub ty: QuantType,
    pub dims: Vec<usize>,
    pub bytes: WeightBytes,
}

/// A checkpoint the decoder can read tensors from, by the decoder's own
/// names (see [`TensorName`]).
pub trait WeightSource {
    fn tensor(&self, name: &TensorName) -> Result<RawTensor>;
    fn contains(&self, name: &TensorName) -> bool;
    /// A tensor of `layer` that only some families have.
    fn layer_tensor(&self, layer: usize, part: LayerTensor) -> Result<RawTensor>;
    fn contains_layer_tensor(&self, layer: usize, part: LayerTensor) -> bool;
}

/// Per-layer tensors beyond the LLaMA set, present in some families only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerTensor {
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

impl LayerTensor {
    /// The name in Hugging Face `transformers` checkpoints.
    pub fn hf(self, layer: usize) -> String {
        let suffix = match self {
            Self::QueryBias => "self_attn.q_proj.bias",
            Self::KeyBias => "self_attn.k_proj.bias",
            Self::ValueBias => "self_attn.v_proj.bias",
            Self::QueryNorm => "self_attn.q_norm.weight",
            Self::KeyNorm => "self_attn.k_norm.weight",
            Self::PostAttentionNorm => "post_attention_layernorm.weight",
            Self::PostFfnNorm => "post_feedforward_layernorm.weight",
            Self::FusedQkv => "self_attn.qkv_proj.weight",
            Self::FusedGateUp => "mlp.gate_up_proj.weight",
        };
        format!("model.layers.{layer}.{suffix}")
    }

    /// The name llama.cpp's converter gives it.
    pub fn gguf(self, layer: usize) -> String {
        let suffix = match self {
            Self::QueryBias => "attn_q.bias",
            Self::KeyBias => "attn_k.bias",
            Self::ValueBias => "attn_v.bias",
            Self::QueryNorm => "attn_q_norm.weight",
            Self::KeyNorm => "attn_k_norm.weight",
            Self::PostAttentionNorm => "post_attention_norm.weight",
            Self::PostFfnNorm => "post_ffw_norm.weight",
            Self::FusedQkv => "attn_qkv.weight",
            // Phi-3 GGUF files keep the stacked gate/up under the up name.
            Self::FusedGateUp => "ffn_up.weight",
        };
        format!("blk.{layer}.{suffix}")
    }
}

/// The tensors of a LLaMA-style decoder, independent of any file format's
/// naming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorName {
    TokenEmbedding,
    OutputNorm,
    Output,
    AttentionNorm(usize),
    Query(usize),
    Key(usize),
    Value(usize),
    AttentionOutput(usize),
    FfnNorm(usize),
    FfnGate(usize),
    FfnUp(usize),
    FfnDown(usize),
}

impl TensorName {
    /// The name in Hugging Face `transformers` checkpoints.
    pub fn hf(&self) -> String {
        match *self {
            Self::TokenEmbedding => "model.embed_tokens.weight".into(),
            Self::OutputNorm => "model.norm.weight".into(),
            Self::Output => "lm_head.weight".into(),
            Self::AttentionNorm(i) => format!("model.layers.{i}.input_layernorm.weight"),
            Self::Query(i) => format!("model.layers.{i}.self_attn.q_proj.weight"),
            Self::Key(i) => format!("model.layers.{i}.self_attn.k_proj.weight"),
            Self::Value(i) => format!("model.layers.{i}.self_attn.v_proj.weight"),
            Self::AttentionOutput(i) => format!("model.layers.{i}.self_attn.o_proj.weight"),
            Self::FfnNorm(i) => format!("model.layers.{i}.post_attention_layernorm.weight"),
            Self::FfnGate(i) => format!("model.layers.{i}.mlp.gate_proj.weight"),
            Self::FfnUp(i) => format!("model.layers.{i}.mlp.up_proj.weight"),
            Self::FfnDown(i) => format!("model.layers.{i}.mlp.down_proj.weight"),
        }
    }
}

impl RawTensor {
    /// Fails unless the tensor has shape `expected`.
    pub fn check_dims(&self, name: &dyn std::fmt::Debug, expected: &[usize]) -> Result<()> {
        if self.dims != expected {
            return Err(Error::TensorShape {
                name: format!("{name:?}"),
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
        name: &TensorName,
        out_features: usize,
        in_features: usize,
        backend: &Backend,
    ) -> Result<QLinear> {
        self.check_dims(name, &[out_features, in_features])?;
        linear_for(backend, self.ty, out_features, in_features, self.bytes)
    }

    /// Splits a `[sum(rows), in_features]` matrix stacked by rows into one
    /// linear layer per part, each borrowing its rows of the same bytes.
    pub fn split_rows(
        self,
        name: &str,
        rows: &[usize],
        in_features: usize,
        backend: &Backend,
    ) -> Result<Vec<QLinear>> {
        let total: usize = rows.iter().sum();
        if self.dims != [total, in_features] {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: vec![total, in_features],
                got: self.dims.clone(),
            });
        }
        let row_bytes = self.ty.row_bytes(in_features)?;
        let whole = Arc::new(SharedBytes(self.bytes));
        let mut start = 0;
        rows.iter()
            .map(|&n| {
                let range = start * row_bytes..(start + n) * row_bytes;
                start += n;
                let bytes = WeightBytes::new(whole.clone(), range)?;
                linear_for(backend, self.ty, n, in_features, bytes)
            })
            .collect()
    }

    /// All values as f32 (norm weights, embedding tables), checked against
    /// the expected shape.
    pub fn to_f32(&self, name: &dyn std::fmt::Debug, expected: &[usize]) -> Result<Vec<f32>> {
        self.check_dims(name, expected)?;
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

        /// Maps `files` (the shards of one checkpoint); every tensor must be
        /// f32, f16 or bf16.
        pub fn open_files(files: &[PathBuf]) -> Result<Self> {
            let mut tensors = HashMap::new();
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
                            return Err(Error::InvalidModel(format!(
                                "{}: tensor {name} has dtype {other:?}; supported: F32, F16, BF16",
                                path.display()
                            )))
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
            Ok(Self { tensors, maps })
        }

        /// The names of all tensors, as the checkpoint spells them, in no
        /// particular order.
        pub fn names(&self) -> impl Iterator<Item = &str> {
            self.tensors.keys().map(String::as_str)
        }
    }

    impl SafetensorsDir {
        fn get(&self, key: String) -> Result<RawTensor> {
            let (file, ty, dims, range) =
                self.tensors.get(&key).ok_or(Error::MissingTensor(key))?;
            Ok(RawTensor {
                ty: *ty,
                dims: dims.clone(),
                bytes: WeightBytes::new(self.maps[*file].clone(), range.clone())?,
            })
        }

        /// Gemma checkpoints name the pre-FFN norm `pre_feedforward_layernorm`
        /// (their `post_attention_layernorm` is a sandwich norm); the others
        /// call it `post_attention_layernorm`.
        fn key(&self, name: &TensorName) -> String {
            if let TensorName::FfnNorm(i) = *name {
                let gemma = format!("model.layers.{i}.pre_feedforward_layernorm.weight");
                if self.tensors.contains_key(&gemma) {
                    return gemma;
                }
            }
            name.hf()
        }
    }

    impl WeightSource for SafetensorsDir {
        fn tensor(&self, name: &TensorName) -> Result<RawTensor> {
            self.get(self.key(name))
        }

        fn contains(&self, name: &TensorName) -> bool {
            self.tensors.contains_key(&self.key(name))
        }

        fn layer_tensor(&self, layer: usize, part: LayerTensor) -> Result<RawTensor> {
            self.get(part.hf(layer))
        }

        fn contains_layer_tensor(&self, layer: usize, part: LayerTensor) -> bool {
            self.tensors.contains_key(&part.hf(layer))
        }
    }
}
