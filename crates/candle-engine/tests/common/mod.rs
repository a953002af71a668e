//! What the engine's integration tests share.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use candle_core::Device;
use candle_engine::kv_cache::KvCache;
use candle_engine::{Backend, Batch, Decoder};

/// A real model of `$HANZO_CANDLE_MODELS` (default
/// `~/.cache/hanzo-candle/models`); `fetch` is what
/// `scripts/fetch-models.sh` calls it, named when the file is missing.
pub fn real_model_path(file: &str, fetch: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("HANZO_CANDLE_MODELS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/hanzo-candle/models")
        });
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh {fetch}",
        path.display()
    );
    path
}

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
