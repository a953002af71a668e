//! Keys and values as tensors on a device, for the tensor path.
//!
//! Each layer holds `[slots * capacity, kv_heads * head_dim]` keys and values
//! (a ring index's heads in one row, so a run of positions is one contiguous
//! copy) in the precision's dtype.

use super::ring::Ring;
use super::{KvPrecision, LayerGeometry};
use crate::Result;
use candle_core::{DType, Device, Tensor};

#[derive(Debug)]
struct DeviceLayer {
    k: Tensor,
    v: Tensor,
}

#[derive(Debug)]
pub(crate) struct DeviceKv {
    layers: Vec<DeviceLayer>,
}

impl DeviceKv {
    pub(crate) fn new(
        geometry: &[LayerGeometry],
        ring: &Ring,
        precision: KvPrecision,
        device: &Device,
    ) -> Result<Self> {
        let dtype = match precision {
            KvPrecision::F32 => DType::F32,
            KvPrecision::F16 => DType::F16,
        };
        let layers = geometry
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let shape = (ring.slots() * ring.capacity(i), g.kv_heads * g.head_dim);
                Ok(DeviceLayer {
                    k: Tensor::zeros(shape, dtype, device)?,
                    v: Tensor::zeros(shape, dtype, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Bytes of keys and values.
    pub(crate) fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * l.k.dtype().size_in_bytes())
            .sum()
    }

    /// Stores the keys and values of consecutive positions `first..` of
    /// sequence `slot`, recording them in `ring`.
    ///
    /// k, v: [tokens, kv_heads * head_dim] on the cache's device.
    pub(crate) fn write_rows(
        &mut self,
        ring: &mut Ring,
        layer: usize,
        slot: usize,
        first: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<()> {
        let l = &mut self.layers[layer];
        let (capacity, tokens) = (ring.capacity(layer), k.dim(0)?);
        let (k, v) = (k.to_dtype(l.k.dtype())?, v.to_dtype(l.v.dtype())?);
        // A run of ring indices without a wrap is one copy per tensor.
        let mut done = 0;
        while done < tokens {
            let index = (first + done) % capacity;
            let run = (capacity - index).min(tokens - done);
            let row = slot * capacity + index;
            l.k.slice_set(&k.narrow(0, done, run)?.contiguous()?, 0, row)?;
            l.v.slice_set(&v.narrow(0, done, run)?.contiguous()?, 0, row)?;
            for i in 0..run {
                ring.store(layer, slot, first + done + i);
            }
            done += run;
        }
        Ok(())
    }

    /// The keys and values `[entries, kv_heads * head_dim]` (f32) that
    /// queries of `slot` up to position `last` may see, on the device; the
    /// rows [`Ring::mask`] covers.
    pub(crate) fn visible_rows(
        &self,
        ring: &Ring,
        layer: usize,
        slot: usize,
        last: usize,
    ) -> Result<(Tensor, Tensor)> {
        let l = &self.layers[layer];
        let start = slot * ring.capacity(layer);
        let entries = ring.visible_entries(layer, last);
        let rows = |t: &Tensor| t.narrow(0, start, entries)?.to_dtype(DType::F32);
        Ok((rows(&l.k)?, rows(&l.v)?))
    }
}
