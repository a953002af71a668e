//! Every decoder family against Hugging Face transformers: tiny random
//! models (`scripts/gen_family_fixtures.py`) loaded from their Hugging Face
//! directory, and the GGUF files llama.cpp's own `convert_hf_to_gguf.py`
//! made of them, must both reproduce transformers' logits for a prefill
//! followed by token-by-token decoding through the KV cache, on both
//! backends (our CPU kernels, and the tensor path that CUDA and Metal use,
//! here on the CPU device).

mod common;

use candle_core::Device;
use candle_engine::gguf::GgufModel;
use candle_engine::kv_cache::{CacheOptions, KvPrecision};
use candle_engine::weights::{SafetensorsDir, WeightSource};
use candle_engine::{Backend, Batch, Decoder, DecoderConfig, Error, Family};
use candle_quant::gguf::{GgufFile, GgufWriter};
use std::path::{Path, PathBuf};

const FAMILIES: [&str; 5] = ["qwen2", "qwen3", "gemma2", "gemma3", "phi3"];
const MAX_CONTEXT: usize = 64;

/// Logits here are O(1-10) (Gemma 2's are capped at 2.5); both sides run
/// f32 arithmetic over at most 64-term dot products in different orders,
/// which leaves errors of ~1e-6, so 1e-4 absolute has two orders of margin
/// yet catches any wrong rotation, window, norm or scale (those move logits
/// by > 1e-2).
const TOLERANCE: f32 = 1e-4;

fn families_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families")
}

/// A family's Hugging Face directory.
fn fixture_dir(family: &str) -> PathBuf {
    families_dir().join(family)
}

struct Reference {
    tokens: Vec<u32>,
    prompt_len: usize,
    logits: Vec<Vec<f32>>,
}

/// transformers' logits for the fixture directory.
fn reference(family: &str) -> Reference {
    load_reference(&format!("{family}-reference.safetensors"))
}

fn load_reference(file: &str) -> Reference {
    let path = families_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: run scripts/gen_family_fixtures.py",
        path.display()
    );
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    Reference {
        tokens: tensors["tokens"]
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&t| t as u32)
            .collect(),
        prompt_len: tensors["prompt_len"].to_scalar::<i64>().unwrap() as usize,
        logits: tensors["logits"].to_vec2::<f32>().unwrap(),
    }
}

fn hf_config(family: &str) -> DecoderConfig {
    let json = std::fs::read_to_string(fixture_dir(family).join("config.json")).unwrap();
    DecoderConfig::from_hf_json(&json).unwrap()
}

/// Prefills the prompt in chunks of `step` tokens (a cache sized for
/// `step`-token steps), then feeds the rest one token at a time, and returns
/// the logits of every position.
fn run(decoder: &Decoder, reference: &Reference, step: usize) -> Vec<Vec<f32>> {
    let mut cache = decoder
        .new_cache(CacheOptions {
            slots: 1,
            max_context: Some(MAX_CONTEXT),
            max_step_tokens: step,
            precision: KvPrecision::F32,
        })
        .unwrap();
    let prompt = &reference.tokens[..reference.prompt_len];
    let mut rows = Vec::new();
    for start in (0..prompt.len()).step_by(step) {
        let chunk = &prompt[start..(start + step).min(prompt.len())];
        let logits = decoder
            .forward(&Batch::single(0, start, chunk), &mut cache)
            .unwrap();
        rows.extend(logits.to_vec2::<f32>().unwrap());
    }
    for (p, &t) in reference.tokens.iter().enumerate().skip(prompt.len()) {
        let logits = decoder
            .forward(&Batch::single(0, p, &[t]), &mut cache)
            .unwrap();
        rows.push(logits.to_vec2::<f32>().unwrap().remove(0));
    }
    rows
}

fn max_diff(got: &[Vec<f32>], expected: &[Vec<f32>]) -> f32 {
    assert_eq!(got.len(), expected.len());
    got.iter()
        .zip(expected)
        .flat_map(|(g, e)| {
            assert_eq!(g.len(), e.len());
            g.iter().zip(e).map(|(a, b)| (a - b).abs())
        })
        .fold(0.0, f32::max)
}

fn families_and_backends() -> impl Iterator<Item = (&'static str, Backend)> {
    FAMILIES.into_iter().flat_map(|family| {
        [Backend::Native, common::tensor_backend()]
            .into_iter()
            .map(move |backend| (family, backend))
    })
}

fn check(family: &str, decoder: &Decoder, reference: &Reference) {
    // The whole prompt in one step.
    let diff = max_diff(&run(decoder, reference, 16), &reference.logits);
    eprintln!("{family} on {:?}: max |diff| {diff:.2e}", decoder.backend());
    assert!(
        diff < TOLERANCE,
        "{family} on {:?}: max |diff| {diff}",
        decoder.backend()
    );
}

#[test]
fn hf_directories_match_transformers() {
    for (family, backend) in families_and_backends() {
        let dir = fixture_dir(family);
        let source = SafetensorsDir::open(&dir).unwrap();
        let decoder = Decoder::load_on(hf_config(family), &source, MAX_CONTEXT, backend).unwrap();
        check(family, &decoder, &reference(family));
    }
}

#[test]
fn sliding_windows_wrap_their_ring_on_both_backends() {
    // Two-token steps give the window-4 layers a ring of 4 + 2 entries,
    // which the 13 tokens go round twice.
    for (family, backend) in families_and_backends().filter(|(f, _)| f.starts_with("gemma")) {
        let source = SafetensorsDir::open(&fixture_dir(family)).unwrap();
        let decoder = Decoder::load_on(hf_config(family), &source, MAX_CONTEXT, backend).unwrap();
        let reference = reference(family);
        assert!(reference.tokens.len() > 2 * (4 + 2));
        let diff = max_diff(&run(&decoder, &reference, 2), &reference.logits);
        assert!(
            diff < TOLERANCE,
            "{family} on {:?}: max |diff| {diff}",
            decoder.backend()
        );
    }
}

#[test]
fn hf_configs_express_the_family_differences() {
    let qwen2 = hf_config("qwen2");
    assert_eq!(qwen2.family, Family::Qwen2);
    assert!(qwen2.qkv_bias && !qwen2.qk_norm);
    let qwen3 = hf_config("qwen3");
    assert!(qwen3.qk_norm && !qwen3.qkv_bias);
    let gemma2 = hf_config("gemma2");
    assert_eq!(gemma2.layer_windows, vec![Some(4), None]);
    assert_eq!(gemma2.attn_logit_softcap, Some(1.5));
    assert_eq!(gemma2.final_logit_softcap, Some(2.5));
    assert_eq!(gemma2.embedding_scale, Some(8.0));
    assert_eq!(gemma2.norm_weight_offset, 1.0);
    let gemma3 = hf_config("gemma3");
    assert_eq!(
        gemma3.layer_windows,
        [[Some(4); 5].as_slice(), &[None]].concat()
    );
    assert_eq!(gemma3.head_dim, 24);
    assert_eq!(gemma3.rope_linear_factor, 4.0);
    assert_eq!(gemma3.sliding_rope_theta, Some(10_000.0));
    assert_eq!(gemma3.attention_scale, 20f32.powf(-0.5));
    let phi3 = hf_config("phi3");
    assert!(!phi3.tie_word_embeddings && phi3.layer_windows == vec![None, None]);
}

/// `<family>.gguf`, made from the fixture directory by llama.cpp's own
/// `convert_hf_to_gguf.py` (`scripts/gen_family_fixtures.py`).
fn open_gguf(family: &str) -> GgufModel {
    let path = families_dir().join(format!("{family}.gguf"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/gen_family_fixtures.py",
        path.display()
    );
    GgufModel::new(GgufFile::open(&path).unwrap())
}

/// What transformers computes for the model a family's GGUF file describes.
/// llama.cpp scales Gemma's queries by 1/sqrt(head_dim) and the converter
/// drops `query_pre_attn_scalar`, which the Gemma fixtures set to something
/// else (so that the Hugging Face path is tested on it): their GGUF
/// reference is transformers on the same weights with the scalar at
/// head_dim.
fn gguf_reference(family: &str) -> Reference {
    if family.starts_with("gemma") {
        load_reference(&format!("{family}-gguf-reference.safetensors"))
    } else {
        reference(family)
    }
}

#[test]
fn gguf_conversions_match_transformers() {
    for (family, backend) in families_and_backends() {
        let model = open_gguf(family);
        let config = model.config().unwrap();
        let hf = hf_config(family);
        assert_eq!(config.family, hf.family, "{family}");
        assert_eq!(config.layer_windows, hf.layer_windows, "{family}");
        let decoder = Decoder::load_on(config, &model, MAX_CONTEXT, backend).unwrap();
        check(family, &decoder, &gguf_reference(family));
    }
}

#[test]
fn phi3_gguf_keeps_fused_tensors_and_checks_their_rows() {
    use candle_engine::weights::{LayerTensor, TensorName};
    let model = open_gguf("phi3");
    let layer_0 = |part| TensorName::Layer(0, part);
    let has = |part| model.find(layer_0(part), Family::Phi3).unwrap().is_some();
    assert!(has(LayerTensor::FusedQkv));
    assert!(!has(LayerTensor::Query));
    // A config whose heads do not add up to the fused rows is refused with
    // the tensor's name and both shapes.
    let mut config = model.config().unwrap();
    config.num_kv_heads = 1;
    let err = Decoder::load(config, &model, MAX_CONTEXT).err().unwrap();
    assert!(matches!(err, Error::TensorShape { .. }), "{err}");
    assert!(err.to_string().contains("blk.0.attn_qkv.weight"), "{err}");
}

#[test]
fn unsupported_architectures_list_the_supported_ones() {
    let json = r#"{"model_type": "falcon", "architectures": ["FalconForCausalLM"],
        "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2}"#;
    let err = DecoderConfig::from_hf_json(json).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedArchitecture { .. }),
        "{err}"
    );
    let message = err.to_string();
    for family in [
        "falcon", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "llama",
    ] {
        assert!(message.contains(family), "{message}");
    }
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "mamba").unwrap();
    let err = GgufModel::new(GgufFile::from_vec(w.to_bytes().unwrap()).unwrap())
        .config()
        .unwrap_err();
    assert!(err.to_string().contains("mamba") && err.to_string().contains("gemma3"));
}

#[test]
fn bad_family_parameters_are_named_errors() {
    let base = std::fs::read_to_string(fixture_dir("gemma3").join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&base).unwrap();
    json["rope_parameters"]["full_attention"]["rope_type"] = "yarn".into();
    let err = DecoderConfig::from_hf_json(&json.to_string()).unwrap_err();
    assert!(err.to_string().contains("yarn"), "{err}");

    let mut json: serde_json::Value = serde_json::from_str(&base).unwrap();
    json["layer_types"] = serde_json::json!(["sliding_attention"]);
    let err = DecoderConfig::from_hf_json(&json.to_string()).unwrap_err();
    assert!(err.to_string().contains("layer_types"), "{err}");

    let mut json: serde_json::Value = serde_json::from_str(&base).unwrap();
    json["hidden_activation"] = "relu".into();
    let err = DecoderConfig::from_hf_json(&json.to_string()).unwrap_err();
    assert!(err.to_string().contains("relu"), "{err}");
}

#[test]
fn a_missing_family_tensor_is_named() {
    let dir = std::env::temp_dir().join(format!("hanzo-families-{}-qwen3", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(fixture_dir("qwen3").join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = tensors
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "model.layers.1.self_attn.k_norm.weight")
        .collect();
    safetensors::serialize_to_file(kept, None, &dir.join("model.safetensors")).unwrap();
    let source = SafetensorsDir::open(Path::new(&dir)).unwrap();
    let err = Decoder::load(hf_config("qwen3"), &source, MAX_CONTEXT)
        .err()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        err.to_string()
            .contains("model.layers.1.self_attn.k_norm.weight"),
        "{err}"
    );
}
