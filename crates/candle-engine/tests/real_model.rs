//! The engine on real models against llama.cpp
//! (`scripts/gen_llamacpp_fixtures.py` ran llama-cpp-python on the same
//! files): for SmolLM2-135M-Instruct Q4_1 (llama) tokenization in both
//! directions, and for it and Gemma-3-270M Q4_K_M (gemma3) next-token
//! distributions at every prompt position and greedy continuations, driven
//! by llama.cpp's token ids.
//!
//! The models come from `scripts/fetch-models.sh` (which `scripts/test.sh`
//! runs first) into `$HANZO_CANDLE_MODELS`, default
//! `~/.cache/hanzo-candle/models`.

mod common;

use candle_engine::generate::{generate, Event, FinishReason, GenerationParams};
use candle_engine::gguf::GgufModel;
use candle_engine::kv_cache::{CacheOptions, KvCache, KvPrecision};
use candle_engine::{Backend, Batch, Decoder};
use std::path::PathBuf;

#[derive(serde::Deserialize)]
struct Reference {
    tokenizer: Vec<TokenizerCase>,
    prompts: Vec<Prompt>,
}

#[derive(serde::Deserialize)]
struct TokenizerCase {
    text: String,
    ids: Vec<u32>,
    detokenized: String,
}

#[derive(serde::Deserialize)]
struct Prompt {
    text: String,
    ids: Vec<u32>,
    positions: Vec<Position>,
    greedy: Vec<u32>,
    greedy_margins: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct Position {
    ids: Vec<u32>,
    logprobs: Vec<f64>,
}

/// A real model and how closely it must follow llama.cpp.
struct RealModel {
    file: &'static str,
    /// `scripts/fetch-models.sh` argument and fixture directory.
    name: &'static str,
    /// Logit gap under which llama.cpp's choice counts as a near tie.
    near_tie: f64,
    /// Bound on the mean KL(llama.cpp || ours) over prompt positions.
    max_mean_kl: f64,
    /// Most prompt positions, out of 100, whose top-1 may differ (each at a
    /// near tie); a drift that moved many of them would show here first.
    max_flips_per_100: usize,
}

/// Both engines quantize activations to 8 bits with the same rounding and
/// store the KV cache in f16, but sum in different orders; measured over
/// the 64 prompt positions, the log-probability of llama.cpp's top token
/// differs between the engines by at most 0.31 (0.22 on the tensor path).
/// Calls closer than 0.4 may go either way; wider ones must not. Measured
/// mean KL 3.1e-3 nats (2.7e-3 on the tensor path); a real defect (wrong
/// rotation, norm or cache) gives KL > 0.1: the bound leaves 1.6x margin
/// above the measurement and 20x below a defect. The top-1 token must be
/// llama.cpp's at every position (issue 4's criterion; none differs on
/// either backend).
const SMOLLM2: RealModel = RealModel {
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    name: "smollm2",
    near_tie: 0.4,
    max_mean_kl: 5e-3,
    max_flips_per_100: 0,
};

/// The same rounding differences as SmolLM2, through 18 layers of K-quants
/// (Q4_K, Q5_0, Q6_K, Q8_0 weights) and activations scaled up by
/// sqrt(640): measured over its 68 prompt positions, the log-probability of
/// llama.cpp's top token shifts by at most 0.225 and the mean KL is 7.4e-3
/// nats (2 near-tie flips). The bounds leave 2x margin; a wrong sliding-layer
/// RoPE base already flips a top-1 where llama.cpp's gap is 0.86. Gemma has
/// many near ties (gaps 0.07-0.2), and which of them flip is rounding noise:
/// fusing the multiply and add of one kernel's per-block sum (Q5_0) moved the
/// flips from 1 to 5 and the mean KL from 5.5e-3 to 3.8e-3; the flip bound
/// leaves 2x margin above 5. The prompts are shorter than the 512-position
/// window, so `tests/families.rs` is what checks the windows.
const GEMMA3: RealModel = RealModel {
    file: "gemma-3-270m-q4_k_m.gguf",
    name: "gemma3",
    near_tie: 0.45,
    max_mean_kl: 1.5e-2,
    max_flips_per_100: 15,
};

fn model_path(model: &RealModel) -> PathBuf {
    common::real_model_path(model.file, model.name)
}

fn reference(model: &RealModel) -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model.name)
        .join("llamacpp.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(model: &RealModel) -> (GgufModel, Decoder) {
    load_on(model, Backend::Native)
}

fn load_on(model: &RealModel, backend: Backend) -> (GgufModel, Decoder) {
    let file = GgufModel::new(candle_quant::gguf::GgufFile::open(model_path(model)).unwrap());
    let decoder = Decoder::load_on(file.config().unwrap(), &file, 512, backend).unwrap();
    (file, decoder)
}

/// llama.cpp's default cache precision, for `decoder`'s backend.
fn f16_cache(decoder: &Decoder) -> KvCache {
    decoder
        .new_cache(CacheOptions {
            slots: 1,
            max_context: Some(512),
            max_step_tokens: 512,
            precision: KvPrecision::F16,
        })
        .unwrap()
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = max
        + row
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&v| v as f64 - lse).collect()
}

#[test]
fn gguf_tokenizer_matches_llama_cpp_both_ways() {
    let (model, _) = load(&SMOLLM2);
    let tokenizer = model.tokenizer().unwrap();
    for case in reference(&SMOLLM2).tokenizer {
        let ids = tokenizer.encode(&case.text, false).unwrap();
        assert_eq!(ids, case.ids, "encoding {:?}", case.text);
        assert_eq!(
            tokenizer.decode(&case.ids, false).unwrap(),
            case.detokenized,
            "decoding {:?}",
            case.text
        );
    }
}

#[test]
fn next_token_distributions_match_llama_cpp() {
    check_distributions(&SMOLLM2, Backend::Native);
}

#[test]
fn gemma3_next_token_distributions_match_llama_cpp() {
    check_distributions(&GEMMA3, Backend::Native);
}

/// The tensor path that CUDA and Metal run, here on the CPU device (its
/// matmuls through upstream candle's quantized CPU kernels), held to the
/// same bounds (measured: SmolLM2 mean KL 2.7e-3, no flips; Gemma-3 5.3e-3,
/// one near-tie flip).
#[test]
fn tensor_path_distributions_match_llama_cpp() {
    check_distributions(&SMOLLM2, common::tensor_backend());
    check_distributions(&GEMMA3, common::tensor_backend());
}

#[test]
fn gemma3_layers_follow_llama_cpp_sliding_pattern() {
    let (file, _) = load(&GEMMA3);
    let config = file.config().unwrap();
    // Every sixth layer is global; the others see the last 512 positions
    // and rotate with base 10000 instead of the file's 1e6.
    let expected: Vec<_> = (0..18).map(|i| (i % 6 != 5).then_some(512)).collect();
    assert_eq!(config.layer_windows, expected);
    assert_eq!(config.sliding_rope_theta, Some(10_000.0));
    assert_eq!(config.rope_theta, 1_000_000.0);
    assert_eq!(config.head_dim, 256);
}

#[test]
fn greedy_continuations_match_llama_cpp() {
    check_greedy(&SMOLLM2);
}

#[test]
fn gemma3_greedy_continuations_match_llama_cpp() {
    check_greedy(&GEMMA3);
}

fn check_distributions(model: &RealModel, backend: Backend) {
    let near_tie = model.near_tie;
    let (_, decoder) = load_on(model, backend);
    let mut total_kl = 0.0;
    let mut positions = 0;
    let mut tie_flips = 0;
    let mut max_shift = 0f64;
    for prompt in reference(model).prompts {
        let mut cache = f16_cache(&decoder);
        let logits = decoder
            .forward(&Batch::single(0, 0, &prompt.ids), &mut cache)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (p, (ours, theirs)) in logits.iter().zip(&prompt.positions).enumerate() {
            let ours = log_softmax(ours);
            max_shift = f64::max(
                max_shift,
                (ours[theirs.ids[0] as usize] - theirs.logprobs[0]).abs(),
            );
            let top1 = ours
                .iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > ours[best] { i } else { best })
                as u32;
            if top1 != theirs.ids[0] {
                // A different choice is only acceptable where llama.cpp
                // itself was torn between the two tokens.
                let gap = theirs
                    .ids
                    .iter()
                    .position(|&id| id == top1)
                    .map(|rank| theirs.logprobs[0] - theirs.logprobs[rank]);
                eprintln!(
                    "position {p} of {:?}: ours {top1}, llama.cpp {} (its gap {gap:?})",
                    prompt.text, theirs.ids[0]
                );
                assert!(
                    gap.is_some_and(|g| g < near_tie),
                    "top-1 at position {p} of {:?}: ours {top1}, llama.cpp {} with gap {gap:?}",
                    prompt.text,
                    theirs.ids[0]
                );
                tie_flips += 1;
            }
            // KL(llama.cpp || ours) over llama.cpp's 128 most likely tokens,
            // which hold all but a sliver of its mass.
            total_kl += theirs
                .ids
                .iter()
                .zip(&theirs.logprobs)
                .map(|(&id, &lp)| lp.exp() * (lp - ours[id as usize]))
                .sum::<f64>();
            positions += 1;
        }
    }
    let mean_kl = total_kl / positions as f64;
    eprintln!("{} on {:?}: mean KL(llama.cpp || ours) = {mean_kl:.2e} nats over {positions} positions, {tie_flips} near-tie flips, max shift {max_shift}", model.name, decoder.backend());
    assert!(
        mean_kl < model.max_mean_kl,
        "mean KL {mean_kl} nats over {positions} positions"
    );
    assert!(
        max_shift < near_tie,
        "the engines' top-token log-probabilities differ by {max_shift}"
    );
    assert!(
        tie_flips * 100 <= model.max_flips_per_100 * positions,
        "{tie_flips} of {positions} positions disagree"
    );
}

fn check_greedy(model: &RealModel) {
    let (_, decoder) = load(model);
    for prompt in reference(model).prompts {
        let mut cache = f16_cache(&decoder);
        let ours =
            common::greedy_continuation(&decoder, &mut cache, &prompt.ids, prompt.greedy.len());
        // The sequences must agree token for token until llama.cpp meets a
        // near tie; after a tie either choice is right and the texts part,
        // as llama.cpp's own builds and settings part from this fixture
        // (docs/ENGINE.md, "How close to llama.cpp").
        let agreed = ours
            .iter()
            .zip(&prompt.greedy)
            .take_while(|(a, b)| a == b)
            .count();
        let first_tie = prompt
            .greedy_margins
            .iter()
            .position(|&m| m < model.near_tie)
            .unwrap_or(prompt.greedy.len());
        eprintln!(
            "{:?}: {agreed} of {} greedy tokens agree; llama.cpp's first near tie at {first_tie}",
            prompt.text,
            ours.len()
        );
        assert!(agreed >= first_tie, "greedy continuation of {:?} diverged at {agreed} before any tie (first at {first_tie})", prompt.text);
    }
}

#[test]
fn gemma3_loads_end_to_end_from_text() {
    // The whole path a user takes: `Model::load` on the file, the prompt's
    // text through the GGUF tokenizer, then the decoder; the ids and the
    // first greedy token must be llama.cpp's, unless llama.cpp's first step
    // was a near tie (none is, on these prompts).
    let model = candle_engine::loader::Model::load(&model_path(&GEMMA3), Some(512)).unwrap();
    for prompt in reference(&GEMMA3).prompts {
        let ids = model.tokenizer.encode(&prompt.text, true).unwrap();
        assert_eq!(ids, prompt.ids, "encoding {:?}", prompt.text);
        let mut cache = f16_cache(&model.decoder);
        let next = common::greedy_continuation(&model.decoder, &mut cache, &ids, 1)[0];
        if prompt.greedy_margins[0] >= GEMMA3.near_tie {
            assert_eq!(next, prompt.greedy[0], "after {:?}", prompt.text);
        }
    }
}

#[test]
fn a_stop_string_ends_generation_and_streaming_holds_back_only_what_may_start_one() {
    // llama.cpp's greedy continuation of this prompt begins " Paris.\n\nThe"
    // with every top-2 gap above the near-tie bound, so our greedy decoding
    // takes the same tokens (`greedy_continuations_match_llama_cpp`) and the
    // stop string ".\n\nThe", three tokens long, certainly occurs.
    let (model, decoder) = load(&SMOLLM2);
    let tokenizer = model.tokenizer().unwrap();
    let prompt = reference(&SMOLLM2)
        .prompts
        .into_iter()
        .find(|p| p.text == "The capital of France is")
        .unwrap();
    let forced = &prompt.greedy[..5];
    assert!(prompt.greedy_margins[..5]
        .iter()
        .all(|&m| m >= SMOLLM2.near_tie));
    assert_eq!(tokenizer.decode(forced, false).unwrap(), " Paris.\n\nThe");

    let params = GenerationParams {
        max_tokens: 16,
        // "Paris!" never completes: the " Paris" it could begin is held
        // back until the "." rules it out.
        stop: vec!["Paris!".into(), ".\n\nThe".into()],
        ..GenerationParams::default()
    };
    let mut pieces = Vec::new();
    let mut cache = f16_cache(&decoder);
    let generation = generate(
        &decoder,
        &tokenizer,
        &mut cache,
        std::slice::from_ref(&prompt.ids),
        &params,
        &mut |event| {
            if let Event::Text { text, .. } = event {
                pieces.push(text.to_string());
            }
        },
    )
    .unwrap()
    .remove(0);
    assert_eq!(generation.finish, FinishReason::Stop);
    assert_eq!(generation.tokens, forced);
    assert_eq!(generation.text, " Paris");
    assert_eq!(pieces.concat(), generation.text);
    // " " streams as soon as " Paris" arrives ("Paris" may start "Paris!"),
    // "Paris" once "." rules that out; the "." that starts ".\n\nThe" and
    // the newlines after it are never streamed.
    assert_eq!(pieces, [" ", "Paris"]);
}
