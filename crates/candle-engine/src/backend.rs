//! Where the decoder computes: our CPU kernels on host buffers, or candle
//! tensor ops on a device. The decoder, its weights and its KV cache are all
//! built for one backend.

use crate::{Error, Result};
use candle_core::Device;

/// Where and how the decoder computes.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// Our quantized CPU kernels on host buffers: the fastest on a CPU.
    #[default]
    Native,
    /// candle tensor ops (the HIP-19 op surface of `candle-ops`) and
    /// upstream `QMatMul` on a device: CUDA and Metal, or the CPU, where it
    /// is checked against the native path.
    Tensors(Device),
}

impl Backend {
    /// `cpu` for the native path, `cuda:N` or `metal:N` for the tensor path
    /// on that device. Fails with a clear error for anything else, or for a
    /// device this build or machine lacks.
    pub fn from_name(name: &str) -> Result<Self> {
        let ordinal = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|n| n.parse::<usize>().ok())
        };
        let error = |reason: String| Error::Device {
            name: name.to_string(),
            reason,
        };
        let (device, feature) = if name == "cpu" {
            return Ok(Backend::Native);
        } else if let Some(n) = ordinal("cuda:") {
            (Device::new_cuda(n), "cuda")
        } else if let Some(n) = ordinal("metal:") {
            (Device::new_metal(n), "metal")
        } else {
            return Err(error("unknown device; use cpu, cuda:N or metal:N".into()));
        };
        device.map(Backend::Tensors).map_err(|e| {
            error(format!(
                "{e} (GPU support is compiled in with `cargo build --release --features {feature}`)"
            ))
        })
    }
}
