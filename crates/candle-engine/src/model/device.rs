//! The decoder's step as candle tensor ops, for `Backend::Tensors`: the HIP-19
//! op surface of `candle-ops` and upstream `QMatMul`, so that it runs on any
//! device candle supports (CUDA, Metal). On the CPU our own kernels are
//! faster; this path runs there to be checked against them and against
//! transformers.
//!
//! Only the embedding lookup stays on the host: the table stays in the
//! file's mapping, and a step uploads just its tokens' rows.

use super::{Batch, Rope, Step};
use crate::config::{Activation, DecoderConfig, RopeLayout};
use crate::kv_cache::{DeviceKv, KvCache, KvPrecision, Ring};
use crate::Result;
use candle_core::{DType, Device, Tensor};
use candle_quant::QLinear;

pub(super) struct DeviceStep<'a> {
    config: &'a DecoderConfig,
    device: &'a Device,
    batch: &'a Batch,
    ring: &'a mut Ring,
    kv: &'a mut DeviceKv,
    precision: KvPrecision,
    /// [tokens] on the device.
    positions: Tensor,
    /// Each slot of the batch with the indices of its tokens, in batch order.
    sequences: Vec<(usize, Vec<usize>)>,
    /// Puts the attention outputs, computed sequence by sequence, back in
    /// batch order: [tokens].
    restore: Tensor,
    /// The step's masks by (slot, window), built once the first layer of
    /// that window has written the step's positions; later layers of the
    /// same window hold the same positions.
    masks: Vec<((usize, Option<usize>), Tensor)>,
}

impl<'a> DeviceStep<'a> {
    pub(super) fn new(
        config: &'a DecoderConfig,
        device: &'a Device,
        batch: &'a Batch,
        cache: &'a mut KvCache,
    ) -> Result<Self> {
        let precision = cache.precision();
        let (ring, kv) = cache.device_mut()?;
        let mut sequences: Vec<(usize, Vec<usize>)> = Vec::new();
        for (t, &slot) in batch.slots.iter().enumerate() {
            match sequences.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, tokens)) => tokens.push(t),
                None => sequences.push((slot, vec![t])),
            }
        }
        let mut restore = vec![0; batch.tokens.len()];
        let grouped = sequences.iter().flat_map(|(_, tokens)| tokens);
        for (at, &t) in grouped.enumerate() {
            restore[t] = at;
        }
        Ok(Self {
            config,
            device,
            batch,
            ring,
            kv,
            precision,
            positions: indices(batch.positions.iter().copied(), device)?,
            sequences,
            restore: indices(restore.into_iter(), device)?,
            masks: Vec::new(),
        })
    }

    fn tokens(&self) -> usize {
        self.batch.tokens.len()
    }

    /// Stores the keys and values of `slot`'s `tokens` in the cache's
    /// `layer`, one copy per run of consecutive positions (a whole prompt
    /// chunk is one run).
    ///
    /// k, v: [tokens.len(), kv_heads * head_dim]
    fn write(
        &mut self,
        layer: usize,
        slot: usize,
        tokens: &[usize],
        k: &Tensor,
        v: &Tensor,
    ) -> Result<()> {
        let positions = &self.batch.positions;
        let mut start = 0;
        while start < tokens.len() {
            let first = positions[tokens[start]];
            let run = tokens[start..]
                .iter()
                .enumerate()
                .take_while(|&(i, &t)| positions[t] == first + i)
                .count();
            self.kv.write_rows(
                self.ring,
                layer,
                slot,
                first,
                &k.narrow(0, start, run)?,
                &v.narrow(0, start, run)?,
            )?;
            start += run;
        }
        Ok(())
    }

    /// The additive mask `[tokens.len(), entries]` of `slot`'s queries in
    /// `layer`, shared by the layers of one window.
    /// Attention of one sequence's queries `[1, heads, t, hd]` over its
    /// visible entries `[entries, kv_heads * hd]`, as `[heads, t, hd]`.
    ///
    /// Not `candle_ops::scaled_dot_product_attention`: with an f16 cache,
    /// llama.cpp and the native path round the queries and the attention
    /// weights to f16 where they meet the f16 keys and values, and the
    /// op keeps the weights in f32. Measured against llama.cpp on Gemma-3
    /// (`cargo test -p candle-engine --test real_model -- tensor_path
    /// --nocapture`), the op gave 4 top-1 flips in 68 positions, one outside
    /// the near-tie bound, where this rounding gives 1.
    fn attend_sequence(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let c = self.config;
        let (heads, kv_heads, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let (t, entries) = (queries.dim(2)?, keys.dim(0)?);
        let group = heads / kv_heads;
        // The `group` query heads of one KV head are rows of one matrix, so
        // grouped-query attention needs no repeated keys.
        let queries = self.round_like_cache(queries.reshape((kv_heads, group * t, hd))?)?;
        let keys = heads_first(keys, kv_heads, hd)?.squeeze(0)?;
        let values = heads_first(values, kv_heads, hd)?.squeeze(0)?;
        let mut scores = queries
            .matmul(&keys.t()?)?
            .affine(c.attention_scale as f64, 0.0)?;
        if let Some(cap) = c.attn_logit_softcap {
            scores = soft_capped(&scores, cap)?;
        }
        let scores = scores
            .reshape((kv_heads, group, t, entries))?
            .broadcast_add(mask)?;
        let weights = candle_ops::softmax(&scores, 3)?.reshape((kv_heads, group * t, entries))?;
        Ok(self
            .round_like_cache(weights)?
            .matmul(&values)?
            .reshape((heads, t, hd))?)
    }

    /// Rounds to f16 and back when the cache is f16 (see [`Self::attend_sequence`]).
    fn round_like_cache(&self, x: Tensor) -> Result<Tensor> {
        Ok(match self.precision {
            KvPrecision::F32 => x,
            KvPrecision::F16 => x.to_dtype(DType::F16)?.to_dtype(DType::F32)?,
        })
    }

    fn mask(&mut self, layer: usize, slot: usize, positions: &[usize]) -> Result<Tensor> {
        let key = (slot, self.ring.window(layer));
        if let Some((_, mask)) = self.masks.iter().find(|(k, _)| *k == key) {
            return Ok(mask.clone());
        }
        let (values, entries) = self.ring.mask(layer, slot, positions);
        let mask = Tensor::from_vec(values, (positions.len(), entries), self.device)?;
        self.masks.push((key, mask.clone()));
        Ok(mask)
    }
}

/// `cap * tanh(x / cap)`: Gemma's soft-capping of scores and logits.
fn soft_capped(x: &Tensor, cap: f32) -> Result<Tensor> {
    Ok(((x / cap as f64)?.tanh()? * cap as f64)?)
}

fn indices(values: impl Iterator<Item = usize>, device: &Device) -> Result<Tensor> {
    let values: Vec<u32> = values.map(|v| v as u32).collect();
    let n = values.len();
    Ok(Tensor::from_vec(values, n, device)?)
}

/// `[tokens, heads * head_dim]` as `[1, heads, tokens, head_dim]`.
fn heads_first(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let tokens = x.dim(0)?;
    Ok(x.reshape((tokens, heads, head_dim))?
        .transpose(0, 1)?
        .contiguous()?
        .unsqueeze(0)?)
}

impl Step for DeviceStep<'_> {
    type Rows = Tensor;
    type Vector = Tensor;

    fn buffer(&self, width: usize) -> Result<Tensor> {
        // Every operation replaces its output: this only fixes the shape.
        Ok(Tensor::zeros(
            (self.tokens(), width),
            DType::F32,
            self.device,
        )?)
    }

    fn embedded(&self, rows: Vec<f32>) -> Result<Tensor> {
        let shape = (self.tokens(), self.config.hidden_size);
        Ok(Tensor::from_vec(rows, shape, self.device)?)
    }

    fn scale(&self, x: &mut Tensor, factor: f32) -> Result<()> {
        *x = x.affine(factor as f64, 0.0)?;
        Ok(())
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor, out: &mut Tensor) -> Result<()> {
        *out = candle_ops::rms_norm(x, weight, self.config.rms_norm_eps)?;
        Ok(())
    }

    fn rms_norm_in_place(&self, x: &mut Tensor, weight: &Tensor) -> Result<()> {
        let (tokens, width) = x.dims2()?;
        let len = weight.dim(0)?;
        let runs = x.reshape((tokens * width / len, len))?;
        *x = candle_ops::rms_norm(&runs, weight, self.config.rms_norm_eps)?
            .reshape((tokens, width))?;
        Ok(())
    }

    fn linear(&self, layers: &[&QLinear], x: &Tensor, outs: &mut [&mut Tensor]) -> Result<()> {
        for (layer, out) in layers.iter().zip(outs.iter_mut()) {
            **out = layer.forward(x)?;
        }
        Ok(())
    }

    fn add_bias(&self, x: &mut Tensor, bias: &Tensor) -> Result<()> {
        *x = x.broadcast_add(bias)?;
        Ok(())
    }

    fn rope(&self, x: &mut Tensor, rope: &Rope<Tensor>) -> Result<()> {
        let hd = self.config.head_dim;
        let (tokens, width) = x.dims2()?;
        let table = |t: &Tensor| -> Result<Tensor> {
            Ok(t.reshape((t.dim(0)? / hd, hd))?
                .index_select(&self.positions, 0)?)
        };
        let (cos, sin) = (table(&rope.cos)?, table(&rope.sin)?);
        let heads = heads_first(x, width / hd, hd)?;
        let rotated = match self.config.rope_layout {
            RopeLayout::RotateHalf => candle_ops::apply_rotary_emb(&heads, &cos, &sin)?,
            RopeLayout::Interleaved => {
                candle_ops::apply_rotary_emb_interleaved(&heads, &cos, &sin)?
            }
        };
        *x = rotated
            .squeeze(0)?
            .transpose(0, 1)?
            .reshape((tokens, width))?;
        Ok(())
    }

    fn attend(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &mut Tensor,
    ) -> Result<()> {
        let c = self.config;
        let (heads, hd) = (c.num_heads, c.head_dim);
        let mut attended = Vec::with_capacity(self.sequences.len());
        for (slot, tokens) in self.sequences.clone() {
            let rows = indices(tokens.iter().copied(), self.device)?;
            self.write(
                layer,
                slot,
                &tokens,
                &k.index_select(&rows, 0)?,
                &v.index_select(&rows, 0)?,
            )?;
            let positions: Vec<usize> = tokens.iter().map(|&t| self.batch.positions[t]).collect();
            let last = positions.iter().copied().max().unwrap_or(0);
            let (keys, values) = self.kv.visible_rows(self.ring, layer, slot, last)?;
            let mask = self.mask(layer, slot, &positions)?;
            let queries = heads_first(&q.index_select(&rows, 0)?, heads, hd)?;
            let output = self.attend_sequence(&queries, &keys, &values, &mask)?;
            // [heads, t, hd] -> [t, heads * hd]
            attended.push(
                output
                    .transpose(0, 1)?
                    .reshape((tokens.len(), heads * hd))?,
            );
        }
        *out = Tensor::cat(&attended, 0)?.index_select(&self.restore, 0)?;
        Ok(())
    }

    fn add_assign(&self, acc: &mut Tensor, x: &Tensor) -> Result<()> {
        *acc = (&*acc + x)?;
        Ok(())
    }

    fn gate(&self, gate: &mut Tensor, up: &Tensor, activation: Activation) -> Result<()> {
        let activated = match activation {
            Activation::Silu => gate.silu()?,
            Activation::GeluTanh => gate.gelu()?,
        };
        *gate = (activated * up)?;
        Ok(())
    }

    fn logits(
        &self,
        x: &Tensor,
        wanted: &[usize],
        output: &QLinear,
        softcap: Option<f32>,
    ) -> Result<Tensor> {
        let selected = x.index_select(&indices(wanted.iter().copied(), self.device)?, 0)?;
        let logits = output.forward(&selected)?;
        Ok(match softcap {
            Some(cap) => soft_capped(&logits, cap)?,
            None => logits,
        })
    }
}
