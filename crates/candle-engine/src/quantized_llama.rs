//! HIP-19's seed API for quantized models: `QuantizedLlama::load(path,
//! &device)` and `forward(&input, position_offset)`.

use crate::backend::Backend;
use crate::gguf::GgufModel;
use crate::kv_cache::{CacheOptions, KvCache, KvPrecision};
use crate::model::{Batch, Decoder};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;
use std::sync::Mutex;

/// A GGUF LLaMA-family model with a single-sequence KV cache.
///
/// ```no_run
/// use candle_core::{Device, Tensor};
/// use candle_engine::QuantizedLlama;
/// let model = QuantizedLlama::load("model.gguf", &Device::Cpu)?;
/// let input = Tensor::new(&[1u32, 2, 3], &Device::Cpu)?;
/// let logits = model.forward(&input, 0)?; // [1, 3, vocab]
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct QuantizedLlama {
    decoder: Decoder,
    cache: Mutex<KvCache>,
}

/// Prompt tokens per forward step; longer inputs run in several steps.
const STEP: usize = 512;

impl QuantizedLlama {
    /// Loads a `.gguf` file with a context of at most 4096 positions.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::from_file(candle_quant::gguf::GgufFile::open(path.as_ref())?, device)
    }

    /// Like [`QuantizedLlama::load`], from the bytes of a `.gguf` file already in
    /// memory (the form a browser hands over); validated the same way.
    pub fn from_gguf_bytes(bytes: Vec<u8>, device: &Device) -> Result<Self> {
        Self::from_file(candle_quant::gguf::GgufFile::from_vec(bytes)?, device)
    }

    fn from_file(file: candle_quant::gguf::GgufFile<'static>, device: &Device) -> Result<Self> {
        // Our kernels on the CPU; candle ops and upstream QMatMul elsewhere.
        let backend = if device.is_cpu() {
            Backend::Native
        } else {
            Backend::Tensors(device.clone())
        };
        let model = GgufModel::new(file);
        let config = model.config()?;
        let context = config.max_position_embeddings.min(4096);
        let decoder = Decoder::load_on(config, &model, context, backend)?;
        // f32 keys and values: this API's users compare its logits with
        // reference implementations.
        let cache = decoder.new_cache(CacheOptions {
            max_step_tokens: STEP,
            precision: KvPrecision::F32,
            ..CacheOptions::default()
        })?;
        Ok(Self {
            decoder,
            cache: Mutex::new(cache),
        })
    }

    /// Logits `[1, seq, vocab]` (on the model's device) for `input` (`[seq]` or `[1, seq]` token ids,
    /// u32 or i64) placed at positions `position_offset..`. Offset 0 starts a
    /// new sequence; a later call must continue where the previous ended.
    pub fn forward(&self, input: &Tensor, position_offset: usize) -> Result<Tensor> {
        let ids = match input.rank() {
            1 => input.clone(),
            2 if input.dim(0)? == 1 => input.squeeze(0)?,
            _ => {
                return Err(Error::InvalidBatch(format!(
                    "input must be [seq] or [1, seq] token ids, got {:?}",
                    input.dims()
                )))
            }
        };
        let ids: Vec<u32> = ids.to_dtype(DType::U32)?.to_vec1()?;
        let mut cache = self.cache.lock().map_err(|_| {
            Error::Internal("an earlier call panicked while holding the KV cache".into())
        })?;
        if position_offset == 0 {
            cache.clear(0);
        } else if position_offset != cache.len(0) {
            return Err(Error::InvalidBatch(format!(
                "position_offset {position_offset} does not continue the cached sequence of {} tokens",
                cache.len(0)
            )));
        }
        cache.check_room(0, ids.len())?;
        let mut rows = Vec::with_capacity(ids.len().div_ceil(STEP));
        for (chunk, tokens) in ids.chunks(STEP).enumerate() {
            let batch = Batch::single(0, position_offset + chunk * STEP, tokens);
            rows.push(self.decoder.forward(&batch, &mut cache)?);
        }
        Ok(Tensor::cat(&rows, 0)?.unsqueeze(0)?)
    }
}
