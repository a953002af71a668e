//! The decoder's step on the host: our quantized kernels and the row
//! operations of [`crate::rows`] on `Vec<f32>` activations, and the CPU
//! attention of the host KV cache.

use super::{Rope, Step};
use crate::config::{Activation, DecoderConfig};
use crate::kv_cache::{HostKv, KvCache, Ring, ScoreParams};
use crate::model::Batch;
use crate::{rows, Result};
use candle_core::{Device, Tensor};
use candle_quant::QLinear;

pub(super) struct HostStep<'a> {
    config: &'a DecoderConfig,
    batch: &'a Batch,
    ring: &'a mut Ring,
    kv: &'a mut HostKv,
}

impl<'a> HostStep<'a> {
    pub(super) fn new(
        config: &'a DecoderConfig,
        batch: &'a Batch,
        cache: &'a mut KvCache,
    ) -> Result<Self> {
        let (ring, kv) = cache.host_mut()?;
        Ok(Self {
            config,
            batch,
            ring,
            kv,
        })
    }

    fn tokens(&self) -> usize {
        self.batch.tokens.len()
    }
}

impl Step for HostStep<'_> {
    type Rows = Vec<f32>;
    type Vector = Vec<f32>;

    fn buffer(&self, width: usize) -> Result<Vec<f32>> {
        Ok(vec![0f32; self.tokens() * width])
    }

    fn embedded(&self, rows: Vec<f32>) -> Result<Vec<f32>> {
        Ok(rows)
    }

    fn scale(&self, x: &mut Vec<f32>, factor: f32) -> Result<()> {
        x.iter_mut().for_each(|v| *v *= factor);
        Ok(())
    }

    fn rms_norm(&self, x: &Vec<f32>, weight: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        rows::rms_norm(x, weight, self.config.rms_norm_eps, out);
        Ok(())
    }

    fn rms_norm_in_place(&self, x: &mut Vec<f32>, weight: &Vec<f32>) -> Result<()> {
        rows::rms_norm_in_place(x, weight, self.config.rms_norm_eps);
        Ok(())
    }

    fn linear(&self, layers: &[&QLinear], x: &Vec<f32>, outs: &mut [&mut Vec<f32>]) -> Result<()> {
        let mut outs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        QLinear::forward_group(layers, x, self.tokens(), &mut outs)?;
        Ok(())
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>) -> Result<()> {
        rows::add_bias(x, bias);
        Ok(())
    }

    fn rope(&self, x: &mut Vec<f32>, rope: &Rope<Vec<f32>>) -> Result<()> {
        let hd = self.config.head_dim;
        let width = x.len() / self.tokens();
        for (row, &position) in x.chunks_mut(width).zip(&self.batch.positions) {
            let angles = position * hd..(position + 1) * hd;
            rows::rope(
                row,
                &rope.cos[angles.clone()],
                &rope.sin[angles],
                self.config.rope_layout,
            );
        }
        Ok(())
    }

    fn attend(
        &mut self,
        layer: usize,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let width = k.len() / self.tokens();
        let (slots, positions) = (&self.batch.slots, &self.batch.positions);
        for (t, (k_row, v_row)) in k.chunks(width).zip(v.chunks(width)).enumerate() {
            let index = self.ring.store(layer, slots[t], positions[t]);
            self.kv.write(layer, slots[t], index, k_row, v_row);
        }
        let scores = ScoreParams {
            scale: self.config.attention_scale,
            softcap: self.config.attn_logit_softcap,
        };
        self.kv
            .attend_batch(layer, self.ring, slots, positions, q, scores, out)
    }

    fn add_assign(&self, acc: &mut Vec<f32>, x: &Vec<f32>) -> Result<()> {
        rows::add_assign(acc, x);
        Ok(())
    }

    fn gate(&self, gate: &mut Vec<f32>, up: &Vec<f32>, activation: Activation) -> Result<()> {
        rows::gate(gate, up, activation);
        Ok(())
    }

    fn logits(
        &self,
        x: &Vec<f32>,
        wanted: &[usize],
        output: &QLinear,
        softcap: Option<f32>,
    ) -> Result<Tensor> {
        let (h, vocab) = (self.config.hidden_size, self.config.vocab_size);
        let selected: Vec<f32> = wanted
            .iter()
            .flat_map(|&i| x[i * h..(i + 1) * h].iter().copied())
            .collect();
        let mut logits = vec![0f32; wanted.len() * vocab];
        output.forward_slice(&selected, wanted.len(), &mut logits)?;
        if let Some(cap) = softcap {
            rows::softcap(&mut logits, cap);
        }
        Ok(Tensor::from_vec(
            logits,
            (wanted.len(), vocab),
            &Device::Cpu,
        )?)
    }
}
