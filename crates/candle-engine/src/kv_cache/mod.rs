//! The pre-allocated KV cache of HIP-19 §Memory Management.
//!
//! Every layer owns one buffer for keys and one for values, sized once for
//! `slots` concurrent sequences; generating a token writes into it and never
//! allocates. Three parts, one idea each:
//! - [`ring`]: which position each ring index holds, and each slot's length;
//! - [`host`]: keys and values in host memory, and the CPU attention;
//! - [`device`]: keys and values as tensors on a device, for the tensor path.
//!
//! Keys are stored after RoPE, so a key's ring index does not matter to
//! attention; the ring keeps each entry's position to mask it.
//!
//! A cache is made by the decoder it serves ([`crate::Decoder::new_cache`]),
//! so its backend and geometry always match that decoder.

mod device;
mod host;
mod ring;

pub(crate) use device::DeviceKv;
pub(crate) use host::HostKv;
pub(crate) use ring::Ring;

use crate::backend::Backend;
use crate::{Error, Result};

/// Element type of the stored keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvPrecision {
    /// Exact f32: what comparisons against f32 reference implementations use.
    F32,
    /// Half the memory and bandwidth of f32, and the default (as in the
    /// binary and in llama.cpp). Rounds like llama.cpp's f16 cache: keys and
    /// values are stored as f16, and the query and the attention weights are
    /// rounded to f16 before they meet them.
    #[default]
    F16,
}

/// What a decoder's new cache holds ([`crate::Decoder::new_cache`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    /// Sequences that can be held at once, one per slot.
    pub slots: usize,
    /// Positions per sequence; `None` for the context the decoder was loaded
    /// for (a larger value is an error).
    pub max_context: Option<usize>,
    /// The most tokens of one sequence a forward step may add (prompts are
    /// fed in chunks of at most that size).
    pub max_step_tokens: usize,
    pub precision: KvPrecision,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            slots: 1,
            max_context: None,
            max_step_tokens: 512,
            precision: KvPrecision::default(),
        }
    }
}

/// Geometry of one layer's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayerGeometry {
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `None` for full attention, `Some(w)` when a query sees only the last
    /// `w` positions (itself included).
    pub window: Option<usize>,
}

/// How raw attention scores are formed: `q·k * scale`, then, for models
/// that cap their logits (Gemma 2), `cap * tanh(score / cap)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScoreParams {
    pub scale: f32,
    pub softcap: Option<f32>,
}

impl ScoreParams {
    pub(crate) fn score(&self, dot: f32) -> f32 {
        let score = dot * self.scale;
        self.softcap
            .map_or(score, |cap| crate::rows::softcapped(score, cap))
    }
}

/// Where the keys and values live.
#[derive(Debug)]
pub(crate) enum Storage {
    Host(HostKv),
    Device(DeviceKv),
}

/// KV cache for one decoder's layers and a fixed number of sequence slots.
#[derive(Debug)]
pub struct KvCache {
    ring: Ring,
    storage: Storage,
    precision: KvPrecision,
    /// The decoder that made the cache ([`crate::Decoder::new_cache`]).
    owner: u64,
}

impl KvCache {
    /// A cache for layers of `geometry` on `backend`, for the decoder
    /// identified by `owner`.
    pub(crate) fn new(
        geometry: &[LayerGeometry],
        options: CacheOptions,
        max_context: usize,
        backend: &Backend,
        owner: u64,
    ) -> Result<Self> {
        let windows: Vec<Option<usize>> = geometry.iter().map(|g| g.window).collect();
        let ring = Ring::new(
            &windows,
            options.slots,
            max_context,
            options.max_step_tokens,
        )?;
        let storage = match backend {
            Backend::Native => Storage::Host(HostKv::new(geometry, &ring, options.precision)?),
            Backend::Tensors(device) => {
                Storage::Device(DeviceKv::new(geometry, &ring, options.precision, device)?)
            }
        };
        Ok(Self {
            ring,
            storage,
            precision: options.precision,
            owner,
        })
    }

    pub fn slots(&self) -> usize {
        self.ring.slots()
    }

    pub fn max_context(&self) -> usize {
        self.ring.max_context()
    }

    pub fn precision(&self) -> KvPrecision {
        self.precision
    }

    /// The most tokens of one sequence a forward step may add.
    pub fn max_step_tokens(&self) -> usize {
        self.ring.max_step_tokens()
    }

    /// Number of positions sequence `slot` holds.
    pub fn len(&self, slot: usize) -> usize {
        self.ring.len(slot)
    }

    /// Bytes held by the cache (keys, values and positions).
    pub fn bytes(&self) -> usize {
        let values = match &self.storage {
            Storage::Host(host) => host.bytes(),
            Storage::Device(device) => device.bytes(),
        };
        values + self.ring.bytes()
    }

    /// Makes every page of a host cache resident now. A fresh cache commits
    /// memory only as positions are first written, so a server's resident
    /// size would creep up for minutes until every slot had held its longest
    /// sequence; committed up front, it is the steady-state size from the
    /// start, and a machine short of memory fails at startup, not under
    /// load. (A device cache is allocated in full already.)
    pub fn commit_memory(&mut self) {
        if let Storage::Host(host) = &mut self.storage {
            host.commit_memory();
        }
    }

    /// Fails with a clear error when `new_tokens` more tokens do not fit the
    /// context of `slot`.
    pub fn check_room(&self, slot: usize, new_tokens: usize) -> Result<()> {
        self.ring.check_room(slot, new_tokens)
    }

    /// Forgets sequence `slot` so that a new sequence can use it.
    pub fn clear(&mut self, slot: usize) {
        self.ring.clear(slot);
    }

    /// Keeps the first `len` positions of `slot` and forgets the rest, so
    /// that a new sequence sharing that prefix continues from it. Fails,
    /// changing nothing, when a sliding-window layer has already overwritten
    /// an entry the continuation would attend to.
    pub fn truncate(&mut self, slot: usize, len: usize) -> Result<()> {
        self.ring.truncate(slot, len)
    }

    /// Records the positions a step wrote (into every layer) as held by
    /// their sequences.
    pub(crate) fn record_step(&mut self, slots: &[usize], positions: &[usize]) {
        for (&slot, &position) in slots.iter().zip(positions) {
            self.ring.extend_len(slot, position);
        }
    }

    pub(crate) fn owner(&self) -> u64 {
        self.owner
    }

    /// The ring and the host storage, for the native path.
    pub(crate) fn host_mut(&mut self) -> Result<(&mut Ring, &mut HostKv)> {
        match &mut self.storage {
            Storage::Host(host) => Ok((&mut self.ring, host)),
            Storage::Device(_) => Err(Error::Internal(
                "the native path was handed a device cache".into(),
            )),
        }
    }

    /// The ring and the device storage, for the tensor path.
    pub(crate) fn device_mut(&mut self) -> Result<(&mut Ring, &mut DeviceKv)> {
        match &mut self.storage {
            Storage::Device(device) => Ok((&mut self.ring, device)),
            Storage::Host(_) => Err(Error::Internal(
                "the tensor path was handed a host cache".into(),
            )),
        }
    }
}
