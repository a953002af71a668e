//! Issue 4's safetensors evidence on the real SmolLM2-135M-Instruct: the
//! Q4_1 GGUF is turned into an f32 Hugging Face directory by
//! `convert::gguf_to_hf_dir` (dequantized, query/key permutation undone),
//! loaded through the Hugging Face path of `Model::load`, and its logits are
//! compared with `transformers` on the same f32 weights
//! (`scripts/gen_transformers_fixtures.py`, which dequantizes with gguf-py).
//! The directory is then quantized back with `convert::quantize_hf_dir`
//! (what `hanzo-candle quantize` runs) to q8_0 and q4_k_m, and rounded to
//! an f16 directory, which is compared with transformers on the same f16
//! weights (`gen_transformers_fixtures.py --f16`).
//!
//! The model comes from `scripts/fetch-models.sh` into
//! `$HANZO_CANDLE_MODELS`, default `~/.cache/hanzo-candle/models`. The f32
//! directory (~540 MB) and the f16 one (~270 MB) are written once per run
//! of this test binary under the target directory's tmp folder.

mod common;

use candle_engine::convert::{gguf_to_hf_dir, quantize_hf_dir};
use candle_engine::generate::{generate, GenerationParams};
use candle_engine::kv_cache::{CacheOptions, KvCache, KvPrecision};
use candle_engine::loader::Model;
use candle_engine::{Backend, Batch};
use candle_quant::gguf::{GgmlType, GgufFile};
use candle_quant::preset::Preset;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(serde::Deserialize)]
struct Reference {
    prompts: Vec<Prompt>,
}

#[derive(serde::Deserialize)]
struct Prompt {
    ids: Vec<u32>,
    positions: Vec<Position>,
    last_row_stride: usize,
    last_row: Vec<f64>,
    greedy: Vec<u32>,
    greedy_margins: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct Position {
    ids: Vec<u32>,
    logits: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct TokenizerCases {
    tokenizer: Vec<TokenizerCase>,
}

#[derive(serde::Deserialize)]
struct TokenizerCase {
    text: String,
    ids: Vec<u32>,
}

/// A fixture file; `name` is relative to `tests/fixtures/smollm2`.
fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/smollm2")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn reference() -> Reference {
    serde_json::from_str(&fixture("transformers.json")).unwrap()
}

/// transformers on the f32 weights rounded to f16, computing in f32.
fn reference_f16() -> Reference {
    serde_json::from_str(&fixture("transformers-f16.json")).unwrap()
}

fn gguf_path() -> PathBuf {
    common::real_model_path("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2")
}

fn work_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("safetensors_real");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The f32 directory, written once per test binary (the tests share it).
fn f32_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = work_dir().join("smollm2-f32");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        gguf_to_hf_dir(&gguf_path(), &dir).unwrap();
        dir
    })
}

/// The f32 directory with every tensor rounded to f16 (to nearest, ties to
/// even, as PyTorch's `.half()`): a Hugging Face f16 checkpoint of the
/// model. Written once per test binary.
fn f16_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = work_dir().join("smollm2-f16");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(f32_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x != "safetensors") {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let file = std::fs::File::open(f32_dir().join("model.safetensors")).unwrap();
        // SAFETY: the test wrote the file and nothing changes it while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&map).unwrap();
        let halves: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
                let bytes = view
                    .data()
                    .chunks_exact(4)
                    .flat_map(|c| {
                        let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        half::f16::from_f32(v).to_le_bytes()
                    })
                    .collect();
                (name, view.shape().to_vec(), bytes)
            })
            .collect();
        let views = halves.iter().map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), bytes)
                    .unwrap();
            (name.as_str(), view)
        });
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
        dir
    })
}

fn quantized(preset: Preset) -> PathBuf {
    let out = work_dir().join(format!("smollm2.{preset}.gguf"));
    let mut seen = 0;
    quantize_hf_dir(f32_dir(), preset, &out, |p| {
        seen += 1;
        assert_eq!(p.index, seen);
    })
    .unwrap();
    assert_eq!(seen, 272, "30 layers x 9 tensors, embedding, output norm");
    out
}

/// A one-sequence f32 cache for `model`'s backend, as transformers keeps.
fn f32_cache(model: &Model) -> KvCache {
    model
        .decoder
        .new_cache(CacheOptions {
            slots: 1,
            max_context: Some(64),
            max_step_tokens: 64,
            precision: KvPrecision::F32,
        })
        .unwrap()
}

/// Logits at every position of each reference prompt (the f32 and f16
/// fixtures share their prompts).
fn logits(model: &Model) -> Vec<Vec<Vec<f32>>> {
    logits_of(model, &reference())
}

/// Logits at every position of each of `reference`'s prompts.
fn logits_of(model: &Model, reference: &Reference) -> Vec<Vec<Vec<f32>>> {
    reference
        .prompts
        .iter()
        .map(|p| {
            let mut cache = f32_cache(model);
            model
                .decoder
                .forward(&Batch::single(0, 0, &p.ids), &mut cache)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        })
        .collect()
}

/// How far our logits are from the transformers ones over every stored
/// reference logit (the top 16 at every position and a spread sample of
/// the last row).
struct Comparison {
    /// Largest |ours - transformers|.
    raw: f64,
    /// For the top 16 of every position: |ours - transformers| after
    /// subtracting, on each side, the logit of the position's top reference
    /// token. This is what softmax sees (it ignores a common shift of a
    /// row), where the probability mass is.
    shifted_top: f64,
    /// The same over the sample of the last row: the tail, where logits
    /// 20-30 below the top carry no probability.
    shifted_tail: f64,
    top1_agree: usize,
    positions: usize,
}

fn compare(reference: &Reference, ours: &[Vec<Vec<f32>>]) -> Comparison {
    let mut c = Comparison {
        raw: 0.0,
        shifted_top: 0.0,
        shifted_tail: 0.0,
        top1_agree: 0,
        positions: 0,
    };
    // Returns |shifted difference| and records the raw one.
    let mut check = |row: &[f32], top: u32, top_want: f64, id: usize, want: f64| {
        let got = row[id] as f64;
        c.raw = c.raw.max((got - want).abs());
        ((got - row[top as usize] as f64) - (want - top_want)).abs()
    };
    let (mut shifted_top, mut shifted_tail) = (0f64, 0f64);
    for (prompt, rows) in reference.prompts.iter().zip(ours) {
        for (pos, row) in prompt.positions.iter().zip(rows) {
            for (&id, &want) in pos.ids.iter().zip(&pos.logits) {
                shifted_top =
                    shifted_top.max(check(row, pos.ids[0], pos.logits[0], id as usize, want));
            }
        }
        let (last, last_pos) = (rows.last().unwrap(), prompt.positions.last().unwrap());
        for (k, &want) in prompt.last_row.iter().enumerate() {
            let id = k * prompt.last_row_stride;
            shifted_tail =
                shifted_tail.max(check(last, last_pos.ids[0], last_pos.logits[0], id, want));
        }
    }
    c.shifted_top = shifted_top;
    c.shifted_tail = shifted_tail;
    for (prompt, rows) in reference.prompts.iter().zip(ours) {
        for (pos, row) in prompt.positions.iter().zip(rows) {
            let top = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            c.top1_agree += usize::from(top as u32 == pos.ids[0]);
            c.positions += 1;
        }
    }
    c
}

/// The exact reference of the GGUF itself (`Decoder::into_exact`: its
/// weights dequantized to f32, f32 activations, f32 KV cache) against the
/// same transformers run as the f32 directory: both compute on the same
/// dequantized weights.
#[test]
fn smollm2_exact_reference_matches_transformers_within_1e_4() {
    let mut model = Model::load(&gguf_path(), Some(64)).unwrap();
    model.decoder = model.decoder.into_exact().unwrap();
    let c = compare(&reference(), &logits(&model));
    eprintln!(
        "exact reference vs transformers: max |logit diff| {:.2e}",
        c.raw
    );
    // Same f32 weights and f32 arithmetic on both sides; only the order of
    // summation in matmuls, norms and softmax differs, which over 30 layers
    // moves logits of magnitude ~20 by a few 1e-6 relative. 1e-4 is far
    // below any real error (a wrong weight, permutation or rounding step
    // moves logits by > 1e-2).
    assert!(c.raw < 1e-4, "max |logit diff| {}", c.raw);
}

/// The same check on Gemma-3-270M Q4_K_M: its Q4_K, Q5_0, Q6_K and Q8_0
/// weights dequantized, against transformers' `Gemma3ForCausalLM` on the
/// weights gguf-py dequantizes (`gen_transformers_fixtures.py --gemma3`).
/// The 1e-4 bound applies to what the distribution depends on: each logit
/// relative to its row's top logit (a log-probability ratio; softmax ignores
/// a shift common to the row).
#[test]
fn gemma3_exact_reference_matches_transformers_log_probabilities_within_1e_4() {
    let reference: Reference =
        serde_json::from_str(&fixture("../gemma3/transformers.json")).unwrap();
    let mut model = Model::load(
        &common::real_model_path("gemma-3-270m-q4_k_m.gguf", "gemma3"),
        Some(64),
    )
    .unwrap();
    model.decoder = model.decoder.into_exact().unwrap();
    let c = compare(&reference, &logits_of(&model, &reference));
    eprintln!(
        "gemma3 exact reference vs transformers: max |logit diff| {:.2e} (relative to the top logit: top 16 {:.2e}, last-row sample {:.2e}), top-1 {}/{}",
        c.raw, c.shifted_top, c.shifted_tail, c.top1_agree, c.positions
    );
    // Same f32 weights and arithmetic in another order. Gemma's logits
    // reach 66 (SmolLM2's 38) after a residual stream scaled up by
    // sqrt(640) through 18 layers of four norms each, so the summation order
    // moves whole rows by up to 2.2e-4 (3.4e-6 of the largest logit), a
    // shift the final norm's scale spreads over the row alike; relative to
    // the top logit the differences stay at 6.3e-5 at most. Any wrong
    // weight, norm offset or rounding step moves log-probability ratios by
    // more than 1e-2. The raw bound (8e-6 of the largest logit) catches an
    // error common to the whole row, which the ratios cannot see.
    assert!(
        c.shifted_top < 1e-4,
        "top-16 log-probability ratios differ by {}",
        c.shifted_top
    );
    assert!(
        c.shifted_tail < 1e-4,
        "last-row log-probability ratios differ by {}",
        c.shifted_tail
    );
    assert!(c.raw < 5e-4, "max |logit diff| {}", c.raw);
    assert_eq!(c.top1_agree, c.positions);
}

#[test]
fn f32_safetensors_dir_matches_transformers_logits_within_1e_3() {
    for backend in [Backend::Native, common::tensor_backend()] {
        let model = Model::load_on(f32_dir(), Some(512), backend).unwrap();
        check_f32_logits(&model);
    }
}

fn check_f32_logits(model: &Model) {
    let c = compare(&reference(), &logits(model));
    eprintln!(
        "f32 dir vs transformers on {:?}: max |logit diff| {:.2e}, top-1 {}/{}",
        model.decoder.backend(),
        c.raw,
        c.top1_agree,
        c.positions
    );
    // Same f32 weights, same f32 arithmetic; only the summation order of
    // the matmuls, softmax and norms differs. Over 30 layers that moves
    // logits of magnitude ~20 by ~1e-5 relative (measured: see the report
    // above); 1e-3 is the bound issue 4 sets and leaves room for other
    // BLAS orderings while still catching any wrong weight, permutation or
    // hyper-parameter, each of which moves logits by > 0.1.
    assert!(c.raw < 1e-3, "max |logit diff| {}", c.raw);
    assert_eq!(c.top1_agree, c.positions);
}

/// The f16 directory runs on our F16 kernels, straight from the mapping
/// (f16 weights, f32 activations and sums), and must meet the f32
/// directory's bound against transformers on the same f16 weights: the
/// arithmetic is again f32 on identical weights in another order.
#[test]
fn f16_safetensors_dir_matches_transformers_on_f16_weights_within_1e_3() {
    let model = Model::load_on(f16_dir(), Some(512), Backend::Native).unwrap();
    let c = compare(&reference_f16(), &logits(&model));
    eprintln!(
        "f16 dir vs transformers on f16 weights: max |logit diff| {:.2e}, top-1 {}/{}",
        c.raw, c.top1_agree, c.positions
    );
    assert!(c.raw < 1e-3, "max |logit diff| {}", c.raw);
    assert_eq!(c.top1_agree, c.positions);
}

#[test]
fn f32_dir_greedy_continuations_equal_transformers() {
    // Logits within 1e-3 of transformers' (the test above) decide every step
    // the same way wherever transformers' two best logits are more than
    // 2e-3 apart; on these 160 steps the closest call is 6.5e-3, so the
    // continuations must be identical, token for token, through 32 steps of
    // KV-cached decoding, on both backends.
    for backend in [Backend::Native, common::tensor_backend()] {
        let model = Model::load_on(f32_dir(), Some(512), backend).unwrap();
        for prompt in reference().prompts {
            let closest = prompt
                .greedy_margins
                .iter()
                .fold(f64::INFINITY, |m, &g| m.min(g));
            assert!(closest > 2e-3, "the fixture has a near tie ({closest})");
            let mut cache = f32_cache(&model);
            let ours = common::greedy_continuation(
                &model.decoder,
                &mut cache,
                &prompt.ids,
                prompt.greedy.len(),
            );
            assert_eq!(
                ours,
                prompt.greedy,
                "continuation of {:?} on {:?}",
                prompt.ids,
                model.decoder.backend()
            );
        }
    }
}

#[test]
fn f32_dir_keeps_the_tokenizer_and_chat_template() {
    let model = Model::load(f32_dir(), Some(512)).unwrap();
    let cases: TokenizerCases = serde_json::from_str(&fixture("llamacpp.json")).unwrap();
    for case in cases.tokenizer {
        assert_eq!(
            model.tokenizer.encode(&case.text, false).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
    }
    let original = GgufFile::open(gguf_path()).unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f32_dir().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["chat_template"].as_str().unwrap(),
        original.get_str("tokenizer.chat_template").unwrap()
    );
    assert!(
        model.tokenizer.eos().contains(&2),
        "<|im_end|> (id 2) ends a turn"
    );
}

#[test]
fn q8_0_quantized_dir_stays_close_to_f32_and_keeps_metadata() {
    let path = quantized(Preset::Q8_0);
    let file = GgufFile::open(&path).unwrap();
    let original = GgufFile::open(gguf_path()).unwrap();
    for key in [
        "general.architecture",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.chat_template",
    ] {
        assert_eq!(
            file.get_str(key).unwrap(),
            original.get_str(key).unwrap(),
            "{key}"
        );
    }
    for key in [
        "llama.block_count",
        "llama.context_length",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.dimension_count",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
    ] {
        assert_eq!(
            file.get_u32(key).unwrap(),
            original.get_u32(key).unwrap(),
            "{key}"
        );
    }
    assert_eq!(
        file.get_str_array("tokenizer.ggml.tokens").unwrap(),
        original.get_str_array("tokenizer.ggml.tokens").unwrap()
    );
    assert_eq!(
        file.get_str_array("tokenizer.ggml.merges").unwrap(),
        original.get_str_array("tokenizer.ggml.merges").unwrap()
    );
    assert_eq!(
        file.get_i32_array("tokenizer.ggml.token_type").unwrap(),
        original.get_i32_array("tokenizer.ggml.token_type").unwrap()
    );
    assert!(file
        .tensors()
        .filter(|t| t.info.shape().len() == 2)
        .all(|t| t.info.ggml_type == GgmlType::Q8_0));

    let model = Model::load(&path, Some(512)).unwrap();
    let c = compare(&reference(), &logits(&model));
    eprintln!(
        "q8_0 vs transformers f32: max |logit diff| {:.3}, shift-free top-16 {:.3}, tail {:.3}, top-1 {}/{}",
        c.raw, c.shifted_top, c.shifted_tail, c.top1_agree, c.positions
    );
    // Q8_0 stores each weight to within half a step of its block's
    // absmax/127, and the engine also rounds activations to 8 bits for the
    // dot products (as llama.cpp does). Measured: 0.70 on the top-16
    // logits, shift removed (raw 1.4, most of it a common shift of the
    // row), top-1 31/33, where logits span ~30. 1.0 leaves room for other
    // kernels' summation order; a lost permutation or wrong scale moves
    // logits by several units and breaks the top-1 agreement.
    assert!(
        c.shifted_top < 1.0,
        "shift-free top-16 |logit diff| {}",
        c.shifted_top
    );
    assert!(
        c.top1_agree * 10 >= c.positions * 9,
        "top-1 agreement {}/{}",
        c.top1_agree,
        c.positions
    );
}

#[test]
fn q4_k_m_quantized_dir_follows_the_mixture_loads_and_generates() {
    let path = quantized(Preset::Q4KM);
    let file = GgufFile::open(&path).unwrap();
    let ty = |name: &str| file.tensor(name).unwrap().info.ggml_type;
    // Rows of 576 cannot hold 256-value super-blocks, so llama.cpp's
    // fallbacks apply: Q4_K -> Q5_0, Q6_K -> Q8_0; ffn_down's rows are
    // 1536 = 6 x 256 long and keep K-quants.
    assert_eq!(ty("token_embd.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.4.attn_q.weight"), GgmlType::Q5_0);
    assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.4.attn_v.weight"), GgmlType::Q5_0);
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q6_K);
    assert_eq!(ty("blk.4.ffn_down.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.4.ffn_norm.weight"), GgmlType::F32);
    assert_eq!(file.get_u32("general.file_type").unwrap(), 15);

    let model = Model::load(&path, Some(512)).unwrap();
    let ours = logits(&model);
    if let Some(dump) = std::env::var_os("HANZO_CANDLE_DUMP_LOGITS") {
        // For scripts/gen_transformers_fixtures.py --llamacpp ... --ours.
        std::fs::write(dump, serde_json::json!({ "prompts": ours }).to_string()).unwrap();
        eprintln!("q4_k_m file for the llama.cpp check: {}", path.display());
    }
    let c = compare(&reference(), &ours);
    eprintln!(
        "q4_k_m vs transformers f32: max |logit diff| {:.3}, shift-free top-16 {:.3}, tail {:.3}, top-1 {}/{}",
        c.raw, c.shifted_top, c.shifted_tail, c.top1_agree, c.positions
    );
    let (agree, total) = (c.top1_agree, c.positions);
    // 4- and 5-bit weights move logits by around a unit; the top choice
    // must still mostly agree with the f32 model (3 in 4 positions: the
    // prompts' early positions are near ties).
    assert!(agree * 4 >= total * 3, "top-1 agreement {agree}/{total}");

    let prompt = model
        .tokenizer
        .encode("The capital of France is", false)
        .unwrap();
    let mut cache = f32_cache(&model);
    let params = GenerationParams {
        max_tokens: 8,
        ..GenerationParams::default()
    };
    let out = generate(
        &model.decoder,
        &model.tokenizer,
        &mut cache,
        &[prompt],
        &params,
        &mut |_| {},
    )
    .unwrap();
    eprintln!("q4_k_m greedy: {:?}", out[0].text);
    assert!(!out[0].tokens.is_empty());
    assert!(out[0].text.contains("Paris"), "{:?}", out[0].text);
}
