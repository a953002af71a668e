//! The decoder against Hugging Face transformers on a tiny random
//! LlamaForCausalLM (`scripts/gen_engine_fixtures.py`), through every path
//! the engine uses: one prefill, token-by-token decoding through the KV
//! cache, and several sequences in one flat batch. Each path runs on both
//! backends: our CPU kernels and the tensor path (candle ops, here on the
//! CPU device) that CUDA and Metal use.

mod common;

use candle_core::{Device, Tensor};
use candle_engine::kv_cache::{CacheOptions, KvCache, KvPrecision};
use candle_engine::weights::SafetensorsDir;
use candle_engine::{Backend, Batch, Decoder, DecoderConfig, Error};
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

const BACKENDS: [fn() -> Backend; 2] = [|| Backend::Native, common::tensor_backend];

fn load_on(backend: Backend) -> (Decoder, Vec<u32>, Vec<Vec<f32>>) {
    let dir = fixture_dir();
    let config =
        DecoderConfig::from_hf_json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
            .unwrap();
    let source = SafetensorsDir::open(&dir).unwrap();
    let decoder = Decoder::load_on(config, &source, 64, backend).unwrap();
    let reference = candle_core::safetensors::load(
        dir.with_file_name("tiny-llama-reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let tokens: Vec<u32> = reference["tokens"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&t| t as u32)
        .collect();
    let logits = reference["logits"].to_vec2::<f32>().unwrap();
    (decoder, tokens, logits)
}

fn load() -> (Decoder, Vec<u32>, Vec<Vec<f32>>) {
    load_on(Backend::Native)
}

fn cache_with_step(decoder: &Decoder, slots: usize, step: usize) -> KvCache {
    decoder
        .new_cache(CacheOptions {
            slots,
            max_context: Some(64),
            max_step_tokens: step,
            precision: KvPrecision::F32,
        })
        .unwrap()
}

fn cache_for(decoder: &Decoder, slots: usize) -> KvCache {
    cache_with_step(decoder, slots, 16)
}

/// Largest absolute difference between two logit matrices.
fn max_diff(got: &[Vec<f32>], expected: &[Vec<f32>]) -> f32 {
    assert_eq!(got.len(), expected.len());
    got.iter()
        .zip(expected)
        .flat_map(|(g, e)| g.iter().zip(e).map(|(a, b)| (a - b).abs()))
        .fold(0.0, f32::max)
}

/// Logits here are O(1-10); f32 matmuls over at most 112 terms and a
/// different summation order than PyTorch's leave errors of ~1e-6 relative,
/// so 1e-4 absolute has two orders of margin yet catches any wrong rotation,
/// mask or norm (those move logits by > 1e-1).
const TOLERANCE: f32 = 1e-4;

#[test]
fn prefill_logits_match_transformers() {
    for backend in BACKENDS {
        let (decoder, tokens, expected) = load_on(backend());
        let mut cache = cache_for(&decoder, 1);
        let logits = decoder
            .forward(&Batch::single(0, 0, &tokens), &mut cache)
            .unwrap();
        let diff = max_diff(&logits.to_vec2().unwrap(), &expected);
        assert!(diff < TOLERANCE, "max |diff| {diff}");
    }
}

#[test]
fn token_by_token_decoding_through_the_cache_matches_transformers() {
    for backend in BACKENDS {
        let (decoder, tokens, expected) = load_on(backend());
        let mut cache = cache_for(&decoder, 1);
        let mut rows = vec![];
        for (p, &t) in tokens.iter().enumerate() {
            let logits = decoder
                .forward(&Batch::single(0, p, &[t]), &mut cache)
                .unwrap();
            rows.push(logits.to_vec2::<f32>().unwrap().remove(0));
        }
        let diff = max_diff(&rows, &expected);
        assert!(diff < TOLERANCE, "max |diff| {diff}");
    }
}

#[test]
fn sequences_batched_together_get_the_logits_they_get_alone() {
    for backend in BACKENDS {
        let (decoder, tokens, expected) = load_on(backend());
        // Slot 1 prefills the first 5 tokens alone, then one step carries its
        // next 7 tokens together with a fresh 4-token prompt in slot 0.
        let mut cache = cache_for(&decoder, 2);
        decoder
            .forward(&Batch::single(1, 0, &tokens[..5]), &mut cache)
            .unwrap();
        let other: Vec<u32> = vec![7, 3, 90, 12];
        let mut batch = Batch::single(0, 0, &other);
        let continued = Batch::single(1, 5, &tokens[5..]);
        let offset = batch.tokens.len();
        batch.tokens.extend(&continued.tokens);
        batch.positions.extend(&continued.positions);
        batch.slots.extend(&continued.slots);
        batch.logits_for = (0..batch.tokens.len()).collect();
        let logits = decoder
            .forward(&batch, &mut cache)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!(max_diff(&logits[offset..], &expected[5..]) < TOLERANCE);

        let mut alone = cache_for(&decoder, 1);
        let other_alone = decoder
            .forward(&Batch::single(0, 0, &other), &mut alone)
            .unwrap();
        assert!(max_diff(&logits[..offset], &other_alone.to_vec2().unwrap()) < TOLERANCE);
    }
}

#[test]
fn bad_batches_are_errors_that_say_what_is_wrong() {
    let (decoder, _, _) = load();
    let mut cache = cache_for(&decoder, 1);
    let err = decoder
        .forward(&Batch::single(0, 0, &[1, 96]), &mut cache)
        .unwrap_err();
    assert!(err.to_string().contains("token id 96"), "{err}");
    let err = decoder
        .forward(&Batch::single(0, 63, &[1, 2]), &mut cache)
        .unwrap_err();
    assert!(
        matches!(err, Error::ContextExceeded { needed: 65, .. }),
        "{err}"
    );
    let err = decoder
        .forward(&Batch::single(3, 0, &[1]), &mut cache)
        .unwrap_err();
    assert!(err.to_string().contains("slot 3"), "{err}");
}

#[test]
fn a_cache_made_by_another_decoder_is_refused() {
    for backend in BACKENDS {
        let (decoder, _, _) = load_on(backend());
        let other = match decoder.backend() {
            Backend::Native => common::tensor_backend(),
            Backend::Tensors(_) => Backend::Native,
        };
        for maker in [load_on(other).0, load_on(decoder.backend().clone()).0] {
            let mut cache = cache_for(&maker, 1);
            let err = decoder
                .forward(&Batch::single(0, 0, &[1, 2]), &mut cache)
                .unwrap_err();
            assert!(matches!(err, Error::ForeignCache), "{err}");
            assert!(err.to_string().contains("Decoder::new_cache"), "{err}");
        }
    }
    assert!(Backend::from_name("cuda:x")
        .unwrap_err()
        .to_string()
        .contains("use cpu, cuda:N or metal:N"));
}

#[test]
fn a_cache_larger_than_the_decoder_context_is_refused() {
    let (decoder, _, _) = load();
    let err = decoder
        .new_cache(CacheOptions {
            max_context: Some(65),
            ..CacheOptions::default()
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("65") && err.to_string().contains("64"),
        "{err}"
    );
}

#[test]
fn unknown_architectures_are_named_with_the_supported_list() {
    let json = r#"{"model_type": "mamba", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
                   "num_hidden_layers": 1, "num_attention_heads": 2}"#;
    let err = DecoderConfig::from_hf_json(json).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("mamba") && msg.contains("llama"), "{msg}");
    let truncated = r#"{"model_type": "llama", "vocab_size": 8"#;
    assert!(DecoderConfig::from_hf_json(truncated)
        .unwrap_err()
        .to_string()
        .contains("config.json"));
}

#[test]
fn a_checkpoint_missing_a_tensor_names_it() {
    let dir = std::env::temp_dir().join(format!("hanzo-engine-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let embedding = Tensor::zeros((96, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let tensors =
        std::collections::HashMap::from([("model.embed_tokens.weight".to_string(), embedding)]);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let config = DecoderConfig::from_hf_json(
        &std::fs::read_to_string(fixture_dir().join("config.json")).unwrap(),
    )
    .unwrap();
    let source = SafetensorsDir::open(&dir).unwrap();
    let err = Decoder::load(config, &source, 8)
        .err()
        .expect("load must fail");
    assert!(
        err.to_string()
            .contains("model.layers.0.self_attn.q_proj.weight"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let empty = std::env::temp_dir().join(format!("hanzo-engine-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let err = SafetensorsDir::open(&empty).err().expect("no weights");
    assert!(err.to_string().contains("no *.safetensors"), "{err}");
    std::fs::remove_dir_all(&empty).unwrap();
}

/// A byte-level vocabulary of the fixture's size: generation needs a
/// tokenizer, and any 96 distinct tokens decode.
fn tiny_tokenizer() -> candle_engine::tokenizer::Tokenizer {
    let tokens: Vec<String> = (0..96u32)
        .map(|i| char::from_u32(0x21 + i).unwrap().to_string())
        .collect();
    let spec = candle_engine::tokenizer::GgufTokenizerSpec {
        model: "gpt2",
        pre: Some("gpt2"),
        tokens: tokens.iter().map(String::as_str).collect(),
        token_types: vec![1; 96],
        merges: vec![],
        bos: None,
        eos: None,
        add_bos: false,
    };
    candle_engine::tokenizer::Tokenizer::from_gguf(&spec).unwrap()
}

#[test]
fn generating_prompts_together_gives_the_greedy_tokens_each_gets_alone() {
    for backend in BACKENDS {
        use candle_engine::generate::{generate, GenerationParams};
        let (decoder, tokens, _) = load_on(backend());
        let tokenizer = tiny_tokenizer();
        let prompts = vec![tokens[..3].to_vec(), tokens[4..11].to_vec(), vec![42]];
        let params = GenerationParams {
            max_tokens: 10,
            ..Default::default()
        };
        let mut cache = cache_with_step(&decoder, 3, 4);
        let together = generate(
            &decoder,
            &tokenizer,
            &mut cache,
            &prompts,
            &params,
            &mut |_| {},
        )
        .unwrap();
        for (prompt, batched) in prompts.iter().zip(&together) {
            let mut alone_cache = cache_with_step(&decoder, 1, 4);
            let alone = generate(
                &decoder,
                &tokenizer,
                &mut alone_cache,
                std::slice::from_ref(prompt),
                &params,
                &mut |_| {},
            )
            .unwrap();
            assert_eq!(alone[0].tokens, batched.tokens, "prompt {prompt:?}");
            assert_eq!(batched.tokens.len(), 10);
        }
    }
}

/// A server shares one loaded model between its request handlers and its
/// engine thread; this fails to compile if a field ever stops being
/// thread-safe.
#[test]
fn a_loaded_model_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<std::sync::Arc<candle_engine::loader::Model>>();
    shareable::<std::sync::Arc<Decoder>>();
    fn sendable<T: Send>() {}
    sendable::<KvCache>();
}

#[test]
fn requests_joining_and_leaving_a_running_batch_get_the_greedy_tokens_they_get_alone() {
    use candle_engine::generate::{generate, Generation, GenerationParams};
    use candle_engine::scheduler::{Scheduler, SchedulerOptions, StepEvent};
    use std::collections::HashMap;
    for backend in BACKENDS {
        let (decoder, tokens, _) = load_on(backend());
        let tokenizer = tiny_tokenizer();
        let params = |max_tokens| GenerationParams {
            max_tokens,
            ..Default::default()
        };
        let alone = |prompt: &[u32], max_tokens| {
            let mut cache = cache_with_step(&decoder, 1, 4);
            generate(
                &decoder,
                &tokenizer,
                &mut cache,
                &[prompt.to_vec()],
                &params(max_tokens),
                &mut |_| {},
            )
            .unwrap()
            .remove(0)
        };
        let (a, b, c) = (tokens[..3].to_vec(), tokens[4..11].to_vec(), vec![42]);

        // Two slots and a 4-token step: B's 7-token prompt is prefilled in
        // chunks beside A's decode tokens, C waits for a slot until A is
        // cancelled.
        let mut cache = cache_with_step(&decoder, 2, 4);
        let options = SchedulerOptions { step_tokens: 4 };
        let mut scheduler = Scheduler::new(&decoder, &tokenizer, &mut cache, options).unwrap();
        let mut done: HashMap<u64, Generation> = HashMap::new();
        let mut collect = |events: Vec<StepEvent>| {
            for event in events {
                match event {
                    StepEvent::Finished { id, generation } => {
                        done.insert(id, generation);
                    }
                    StepEvent::Failed { error, .. } => panic!("{error}"),
                    _ => {}
                }
            }
        };
        let id_a = scheduler.add(a.clone(), params(20)).unwrap();
        collect(scheduler.step());
        collect(scheduler.step());
        let id_b = scheduler.add(b.clone(), params(6)).unwrap();
        let id_c = scheduler.add(c.clone(), params(8)).unwrap();
        collect(scheduler.step());
        assert_eq!((scheduler.running(), scheduler.waiting()), (2, 1));
        assert!(scheduler.cancel(id_a));
        assert!(!scheduler.cancel(id_a));
        assert_eq!((scheduler.running(), scheduler.waiting()), (1, 1));
        while !scheduler.is_idle() {
            collect(scheduler.step());
        }
        assert!(!done.contains_key(&id_a));
        assert_eq!(done[&id_b].tokens, alone(&b, 6).tokens);
        assert_eq!(done[&id_c].tokens, alone(&c, 8).tokens);
        assert_eq!(done[&id_b].tokens.len(), 6);
    }
}

#[test]
fn scheduler_requests_that_cannot_run_are_refused_naming_why() {
    use candle_engine::generate::GenerationParams;
    use candle_engine::scheduler::{Scheduler, SchedulerOptions};
    let (decoder, _, _) = load();
    let tokenizer = tiny_tokenizer();
    let mut cache = cache_with_step(&decoder, 2, 4);
    let err = Scheduler::new(
        &decoder,
        &tokenizer,
        &mut cache,
        SchedulerOptions { step_tokens: 1 },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("2 slots"), "{err}");
    let mut scheduler = Scheduler::new(
        &decoder,
        &tokenizer,
        &mut cache,
        SchedulerOptions { step_tokens: 4 },
    )
    .unwrap();
    let params = GenerationParams::default();
    let err = |r: candle_engine::Result<u64>| r.err().unwrap().to_string();
    assert!(err(scheduler.add(vec![], params.clone())).contains("empty"));
    assert!(err(scheduler.add(vec![1_000_000], params.clone())).contains("vocabulary"));
    let long = GenerationParams {
        max_tokens: 60,
        ..GenerationParams::default()
    };
    // 10 prompt tokens + 60 - 1 cached generated tokens > 64 positions.
    assert!(matches!(
        scheduler.add(vec![1; 10], long),
        Err(Error::ContextExceeded {
            needed: 69,
            max_context: 64
        })
    ));
    let mut bad = GenerationParams {
        max_tokens: 4,
        ..params
    };
    bad.sampling.temperature = -1.0;
    assert!(err(scheduler.add(vec![1], bad)).contains("temperature"));
    assert!(scheduler.is_idle());
}

#[test]
fn a_request_continuing_a_finished_one_reuses_its_prefix_and_gets_the_same_tokens() {
    use candle_engine::generate::{generate, Generation, GenerationParams};
    use candle_engine::scheduler::{Scheduler, SchedulerOptions, StepEvent};
    for backend in BACKENDS {
        let (decoder, tokens, _) = load_on(backend());
        let tokenizer = tiny_tokenizer();
        let params = GenerationParams {
            max_tokens: 5,
            ..Default::default()
        };
        let mut cache = cache_with_step(&decoder, 2, 4);
        let options = SchedulerOptions { step_tokens: 4 };
        let mut scheduler = Scheduler::new(&decoder, &tokenizer, &mut cache, options).unwrap();
        let mut run = |prompt: Vec<u32>| -> Generation {
            scheduler.add(prompt, params.clone()).unwrap();
            let mut result = None;
            while !scheduler.is_idle() {
                for event in scheduler.step() {
                    if let StepEvent::Finished { generation, .. } = event {
                        result = Some(generation);
                    }
                }
            }
            result.unwrap()
        };
        let first = run(tokens[..6].to_vec());
        assert_eq!(first.cached_tokens, 0);
        // The next turn: the first prompt, its output, and more tokens.
        let mut next = tokens[..6].to_vec();
        next.extend(&first.tokens);
        next.extend(&tokens[6..9]);
        let second = run(next.clone());
        // The last generated token was sampled but never run, so the cache
        // holds the prompt and all but the last output token.
        assert_eq!(second.cached_tokens, 6 + first.tokens.len() - 1);
        let mut fresh = cache_with_step(&decoder, 1, 4);
        let alone = generate(
            &decoder,
            &tokenizer,
            &mut fresh,
            &[next],
            &params,
            &mut |_| {},
        );
        let alone = alone.unwrap().remove(0);
        assert_eq!(alone.cached_tokens, 0);
        assert_eq!(second.tokens, alone.tokens);
    }
}
