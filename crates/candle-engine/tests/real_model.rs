//! The engine on the real SmolLM2-135M-Instruct Q4_1 model against llama.cpp
//! (`scripts/gen_llamacpp_fixtures.py` ran llama-cpp-python on the same
//! file): tokenization in both directions, next-token distributions at every
//! prompt position, and greedy continuations.
//!
//! The model comes from `scripts/fetch-models.sh` (which `scripts/test.sh`
//! runs first) into `$HANZO_CANDLE_MODELS`, default
//! `~/.cache/hanzo-candle/models`.

use candle_engine::gguf::GgufModel;
use candle_engine::kv_cache::KvCache;
use candle_engine::{Batch, Decoder};
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

/// Logit gap under which llama.cpp's choice counts as a near tie. Both
/// engines quantize activations to 8 bits, but llama.cpp rounds the block
/// scales to f16 (we keep f32) and stores the KV cache in f16; measured over
/// the 64 prompt positions, the log-probability of llama.cpp's top token
/// differs between the engines by at most 0.20. Calls closer than twice that
/// may go either way; wider ones must not.
const NEAR_TIE: f64 = 0.4;

fn model_path() -> PathBuf {
    let dir = std::env::var_os("HANZO_CANDLE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/hanzo-candle/models")
        });
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh smollm2",
        path.display()
    );
    path
}

fn reference() -> Reference {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2/llamacpp.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load() -> (GgufModel, Decoder) {
    let model = GgufModel::new(candle_quant::gguf::GgufFile::open(model_path()).unwrap());
    let decoder = Decoder::load(model.config().unwrap(), &model, 512).unwrap();
    (model, decoder)
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
    let (model, _) = load();
    let tokenizer = model.tokenizer().unwrap();
    for case in reference().tokenizer {
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
    let (_, decoder) = load();
    let mut total_kl = 0.0;
    let mut positions = 0;
    let mut tie_flips = 0;
    let mut max_shift = 0f64;
    for prompt in reference().prompts {
        let mut cache = KvCache::new(&decoder.cache_geometry(), 1, 512, 512).unwrap();
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
                    gap.is_some_and(|g| g < NEAR_TIE),
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
    // Same weights, different activation and KV-cache rounding (see
    // NEAR_TIE): measured mean KL 2.7e-3 nats. A real defect (wrong
    // rotation, norm or cache) gives KL > 0.1; the bound leaves 2x margin
    // above the measurement and 20x below a defect.
    assert!(
        mean_kl < 5e-3,
        "mean KL {mean_kl} nats over {positions} positions"
    );
    eprintln!("mean KL(llama.cpp || ours) = {mean_kl:.2e} nats over {positions} positions, {tie_flips} near-tie flips, max shift {max_shift}");
    assert!(
        max_shift < NEAR_TIE,
        "the engines' top-token log-probabilities differ by {max_shift}"
    );
    assert!(
        tie_flips * 20 <= positions,
        "{tie_flips} of {positions} positions disagree"
    );
}

#[test]
fn greedy_continuations_match_llama_cpp() {
    let (_, decoder) = load();
    for prompt in reference().prompts {
        let mut cache = KvCache::new(&decoder.cache_geometry(), 1, 512, 512).unwrap();
        let mut batch = Batch::single(0, 0, &prompt.ids);
        batch.logits_for = vec![prompt.ids.len() - 1];
        let mut ours = Vec::new();
        let mut position = prompt.ids.len();
        let mut logits = decoder.forward(&batch, &mut cache).unwrap();
        while ours.len() < prompt.greedy.len() {
            let next = logits
                .squeeze(0)
                .unwrap()
                .argmax(0)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap();
            ours.push(next);
            logits = decoder
                .forward(&Batch::single(0, position, &[next]), &mut cache)
                .unwrap();
            position += 1;
        }
        // The sequences must agree token for token until llama.cpp meets a
        // near tie; after a tie either choice is right and the texts part.
        let agreed = ours
            .iter()
            .zip(&prompt.greedy)
            .take_while(|(a, b)| a == b)
            .count();
        let first_tie = prompt
            .greedy_margins
            .iter()
            .position(|&m| m < NEAR_TIE)
            .unwrap_or(prompt.greedy.len());
        eprintln!(
            "{:?}: {agreed} of {} greedy tokens agree; llama.cpp's first near tie at {first_tie}",
            prompt.text,
            ours.len()
        );
        assert!(agreed >= first_tie, "greedy continuation of {:?} diverged at {agreed} before any tie (first at {first_tie})", prompt.text);
    }
}
