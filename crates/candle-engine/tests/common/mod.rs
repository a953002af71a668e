//! What the engine's integration tests share.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use candle_core::Device;
use candle_engine::kv_cache::KvCache;
use candle_engine::{Backend, Batch, Decoder};

/// The tensor path (what CUDA and Metal run) on the CPU device, or on the
/// device `HANZO_TEST_DEVICE` names (`cuda:0`, `metal:0`) in a build with
/// that feature: `scripts/gpu-check.sh` runs the tests so.
pub fn tensor_backend() -> Backend {
    match std::env::var("HANZO_TEST_DEVICE") {
        Ok(name) => Backend::from_name(&name).unwrap(),
        Err(_) => Backend::Tensors(Device::Cpu),
    }
}

/// The greedy continuation of `prompt`, `steps` tokens long: the prompt in
/// one batch, then one token per step through `cache`, as a decoder
/// generates. No end token stops it, so every step can be compared.
pub fn greedy_continuation(
    decoder: &Decoder,
    cache: &mut KvCache,
    prompt: &[u32],
    steps: usize,
) -> Vec<u32> {
    let mut batch = Batch::single(0, 0, prompt);
    batch.logits_for = vec![prompt.len() - 1];
    let mut logits = decoder.forward(&batch, cache).unwrap();
    let mut continuation = Vec::with_capacity(steps);
    loop {
        let next = logits
            .squeeze(0)
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        continuation.push(next);
        if continuation.len() == steps {
            return continuation;
        }
        let position = prompt.len() + continuation.len() - 1;
        logits = decoder
            .forward(&Batch::single(0, position, &[next]), cache)
            .unwrap();
    }
}
