//! Encoders against sentence-transformers and `transformers` (PyTorch, f32):
//! the fixtures and the tiny random models under `fixtures/encoders/` come
//! from `scripts/gen_encoder_fixtures.py`; the real all-MiniLM-L6-v2 from
//! `scripts/fetch-models.sh minilm` (which `scripts/test.sh` runs first).
//!
//! Tolerance: 1e-4 absolute on every value. Both sides compute in f32 with
//! different summation orders (packed rows and our attention here, MKL/oneDNN
//! in PyTorch); over a few layers of LayerNorm-ed states of size ~1 that
//! leaves differences around 1e-6, so 1e-4 has room while any real mistake
//! (a wrong position, a missing bias, tanh instead of erf GELU) moves values
//! by far more.

use candle_engine::encoder::{is_encoder, EncoderFamily, Model, Pooling};
use candle_engine::{Embedder, Reranker};
use serde_json::Value;
use std::path::{Path, PathBuf};

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders")
}

fn reference(name: &str) -> Value {
    let path = fixtures().join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("HANZO_CANDLE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/hanzo-candle/models")
        })
        .join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-models.sh minilm",
        dir.display()
    );
    dir
}

/// all-MiniLM-L6-v2 against sentence-transformers' `encode`: cosine ≥
/// 0.99999 and max |diff| ≤ 1e-4 per vector, including texts cut at 256
/// tokens (reported as truncated), emoji, CJK and Cyrillic, and the empty
/// string.
#[test]
fn minilm_matches_sentence_transformers() {
    let reference = reference("minilm");
    let embedder = Embedder::load(&minilm_dir()).unwrap();
    assert_eq!(embedder.dimension(), 384);
    let pooling = embedder.pooling();
    assert_eq!(pooling.pooling, Pooling::Mean);
    assert!(pooling.normalize);
    assert_eq!(
        pooling.max_seq_length as u64,
        reference["max_seq_length"].as_u64().unwrap()
    );
    let items = reference["items"].as_array().unwrap();
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let ours = embedder.embed_detailed(&texts).unwrap();
    for (item, got) in items.iter().zip(&ours) {
        let want = floats(&item["embedding"]);
        let (cos, diff) = (cosine(&got.vector, &want), max_diff(&got.vector, &want));
        assert!(
            cos >= 0.99999 && diff <= TOLERANCE,
            "{:?}: cosine {cos}, max diff {diff}",
            item["text"]
        );
        assert_eq!(got.tokens as u64, item["tokens"].as_u64().unwrap());
        assert_eq!(got.truncated, item["truncated"].as_bool().unwrap());
    }
    assert!(ours.iter().any(|e| e.truncated));
}

/// A text gets the same vector whatever it is batched with (packing keeps
/// texts apart; only the matmul's row blocking can differ).
#[test]
fn a_batch_gives_each_text_its_own_embedding() {
    let embedder = Embedder::load(&minilm_dir()).unwrap();
    let texts = [
        "short",
        "a somewhat longer sentence with more words in it",
        "",
        "the middle one 🍕",
    ];
    let batch = embedder.embed(&texts).unwrap();
    for (text, together) in texts.iter().zip(&batch) {
        let alone = embedder.embed(&[text]).unwrap().remove(0);
        let diff = max_diff(&alone, together);
        assert!(diff <= 1e-6, "{text:?}: {diff}");
    }
}

fn check_tiny(name: &str, pooling: Pooling, normalized: bool) {
    let reference = reference(name);
    let dir = fixtures().join(name);
    assert!(is_encoder(&dir).unwrap());
    assert!(!Model::load(&dir).unwrap().has_classifier_head());
    let embedder = Embedder::load(&dir).unwrap();
    assert_eq!(embedder.pooling().pooling, pooling);
    assert_eq!(embedder.pooling().normalize, normalized);
    let h = embedder.dimension();
    let key = match pooling {
        Pooling::Mean => "mean",
        Pooling::Cls => "cls",
        Pooling::LastToken => "last",
    };
    for (i, item) in reference["items"].as_array().unwrap().iter().enumerate() {
        let text = item["text"].as_str().unwrap();
        let hidden = embedder.hidden_states(text).unwrap();
        let want = floats(&item["hidden"]);
        assert_eq!(hidden.len(), want.len(), "{name} {text:?}: token count");
        let diff = max_diff(&hidden, &want);
        assert!(diff <= TOLERANCE, "{name} {text:?}: hidden states {diff}");
        let got = embedder.embed_detailed(&[text]).unwrap().remove(0);
        assert_eq!(got.tokens * h, want.len());
        assert_eq!(got.truncated, item["truncated"].as_bool().unwrap());
        let pooled = match reference.get("pipeline") {
            Some(pipeline) => floats(&pipeline[i]),
            None => floats(&item[key]),
        };
        let diff = max_diff(&got.vector, &pooled);
        assert!(diff <= TOLERANCE, "{name} {text:?}: pooled {diff}");
    }
}

/// No sentence-transformers files: the documented default, mean pooling
/// without normalisation.
#[test]
fn tiny_bert_matches_transformers() {
    check_tiny("bert", Pooling::Mean, false);
}

/// CLS pooling and Normalize from its sentence-transformers files.
#[test]
fn tiny_roberta_matches_transformers() {
    check_tiny("roberta", Pooling::Cls, true);
}

/// A `max_seq_length` of 12 cuts the longer texts, as transformers'
/// tokenizer does with `truncation=True`.
#[test]
fn tiny_xlm_roberta_matches_transformers() {
    check_tiny("xlm-roberta", Pooling::Mean, false);
}

/// The largest difference between `reranker`'s scores and transformers'
/// over the reference `name`'s (query, documents) cases.
fn worst_score_difference(reranker: &Reranker, name: &str) -> f32 {
    let mut worst = 0f32;
    for case in reference(name)["rerank"].as_array().unwrap() {
        let query = case["query"].as_str().unwrap();
        let docs: Vec<&str> = case["docs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        let got: Vec<f32> = reranker
            .score(query, &docs)
            .unwrap()
            .iter()
            .map(|s| s.score)
            .collect();
        worst = worst.max(max_diff(&got, &floats(&case["scores"])));
    }
    worst
}

/// A cross-encoder's scores from `file` (its directory or GGUF file)
/// against transformers'.
fn check_reranker(name: &str, file: &str) {
    let path = fixtures().join(file);
    assert!(Model::load(&path).unwrap().has_classifier_head());
    let diff = worst_score_difference(&Reranker::load(&path).unwrap(), name);
    assert!(diff <= TOLERANCE, "{file}: {diff}");
}

#[test]
fn tiny_bert_cross_encoder_scores_match_transformers() {
    check_reranker("bert-reranker", "bert-reranker");
}

#[test]
fn tiny_xlm_roberta_cross_encoder_scores_match_transformers() {
    check_reranker("xlm-roberta-reranker", "xlm-roberta-reranker");
}

#[test]
fn bad_input_is_reported() {
    let dir = fixtures().join("bert");
    let embedder = Embedder::load(&dir).unwrap();
    let err = embedder.embed(&[]).unwrap_err().to_string();
    assert!(err.contains("no texts"), "{err}");
    let err = embedder.embed_tokens(&[vec![1, 100_000]]).unwrap_err();
    assert!(err.to_string().contains("word_embeddings"), "{err}");
    // An embedding model is not a reranker.
    let err = Reranker::load(&dir).err().unwrap().to_string();
    assert!(err.contains("not a reranker"), "{err}");
    let err = Embedder::load(&dir.join("missing"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    // A decoder directory is refused by name.
    let decoder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families/qwen2");
    assert!(!is_encoder(&decoder).unwrap());
    let err = Embedder::load(&decoder).err().unwrap().to_string();
    assert!(err.contains("qwen2") && err.contains("bert"), "{err}");
}

/// llama.cpp's `convert_hf_to_gguf.py` conversion (f32) of a tiny model:
/// its vocabulary rebuilt into the family's tokenizer gives transformers'
/// tokens (a wrong id puts a different random embedding row in the states),
/// and the states and pooled vectors match transformers within the same
/// 1e-4. Like llama.cpp, a GGUF embedder normalises by default. The file
/// keeps no sentence-transformers `max_seq_length` (its limit is the
/// position table), so texts the reference cut are left out.
fn check_gguf(name: &str, family: EncoderFamily, pooling: Pooling) {
    let reference = reference(name);
    let path = fixtures().join(format!("{name}.gguf"));
    assert!(is_encoder(&path).unwrap());
    let mut embedder = Embedder::load(&path).unwrap();
    assert_eq!(embedder.config().family, family);
    assert_eq!(embedder.pooling().pooling, pooling);
    assert!(embedder.pooling().normalize);
    let key = match pooling {
        Pooling::Mean => "mean",
        Pooling::Cls => "cls",
        Pooling::LastToken => "last",
    };
    let items = uncut_items(&reference);
    assert!(items.len() >= 2, "{name}: only {} texts fit", items.len());
    for item in items {
        let text = item["text"].as_str().unwrap();
        let diff = state_difference(&embedder, name, item);
        assert!(diff <= TOLERANCE, "{name} {text:?}: hidden states {diff}");
        let pooled = floats(&item[key]);
        embedder.set_normalize(false);
        let got = embedder.embed(&[text]).unwrap().remove(0);
        let diff = max_diff(&got, &pooled);
        assert!(diff <= TOLERANCE, "{name} {text:?}: pooled {diff}");
        embedder.set_normalize(true);
        let got = embedder.embed(&[text]).unwrap().remove(0);
        let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt();
        let normalized: Vec<f32> = pooled.iter().map(|v| v / norm).collect();
        let diff = max_diff(&got, &normalized);
        assert!(diff <= TOLERANCE, "{name} {text:?}: normalized {diff}");
    }
}

/// The reference's items whose text no limit cut.
fn uncut_items(reference: &Value) -> Vec<&Value> {
    reference["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| !item["truncated"].as_bool().unwrap())
        .collect()
}

/// The largest difference between `embedder`'s states for the text of
/// `item` and transformers', once the token counts agree.
fn state_difference(embedder: &Embedder, name: &str, item: &Value) -> f32 {
    let text = item["text"].as_str().unwrap();
    let hidden = embedder.hidden_states(text).unwrap();
    let want = floats(&item["hidden"]);
    assert_eq!(hidden.len(), want.len(), "{name} {text:?}: token count");
    max_diff(&hidden, &want)
}

/// BERT: the WordPiece vocabulary (`▁` marks word starts in the file).
#[test]
fn tiny_bert_gguf_matches_transformers() {
    check_gguf("bert", EncoderFamily::Bert, Pooling::Mean);
}

/// RoBERTa: byte-level BPE (`tokenizer.ggml.model = gpt2`, pre-tokenizer
/// `roberta-bpe`), positions renumbered from 0 by the converter, CLS
/// pooling from its sentence-transformers files.
#[test]
fn tiny_roberta_gguf_matches_transformers() {
    check_gguf("roberta", EncoderFamily::Roberta, Pooling::Cls);
}

/// XLM-RoBERTa: SentencePiece's unigram model (`t5`) with its precompiled
/// normalisation map, converted from `sentencepiece.bpe.model` as XLM-R,
/// BGE-M3 and multilingual E5 ship it.
#[test]
fn tiny_xlm_roberta_gguf_matches_transformers() {
    check_gguf("xlm-roberta", EncoderFamily::XlmRoberta, Pooling::Mean);
}

/// An XLM-R cross-encoder (bge-reranker-v2-m3's shape) through the
/// converter: `classifier.dense` / `out_proj` become `cls` / `cls.output`.
#[test]
fn tiny_xlm_roberta_cross_encoder_gguf_scores_match_transformers() {
    check_reranker("xlm-roberta-reranker", "xlm-roberta-reranker.gguf");
}

/// Our converter (`hanzo-candle quantize`) on the real model: Q8_0 and
/// Q4_K_M files in llama.cpp's `bert` layout, against sentence-transformers'
/// f32 vectors. The thresholds are quality floors (the measured cosines are
/// printed), not exactness: quantization changes the weights, and our
/// kernels (like llama.cpp's) also round every matmul's input to 8 bits.
#[test]
fn quantized_minilm_stays_close_to_sentence_transformers() {
    use candle_engine::convert::quantize_encoder_dir;
    use candle_quant::preset::Preset;
    let reference = reference("minilm");
    let items = reference["items"].as_array().unwrap();
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let dir = std::env::temp_dir().join(format!("hanzo-encoder-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (preset, floor) in [(Preset::Q8_0, 0.998), (Preset::Q4KM, 0.95)] {
        let out = dir.join(format!("minilm-{preset}.gguf"));
        quantize_encoder_dir(&minilm_dir(), preset, &out, |_| {}).unwrap();
        let embedder = Embedder::load(&out).unwrap();
        assert_eq!(embedder.pooling().pooling, Pooling::Mean);
        // The GGUF file's limit is the position table (512), not
        // sentence-transformers' 256: compare the texts both see whole.
        let mut worst = 1.0f64;
        for (item, got) in items.iter().zip(embedder.embed(&texts).unwrap()) {
            if item["truncated"].as_bool().unwrap() {
                continue;
            }
            worst = worst.min(cosine(&got, &floats(&item["embedding"])));
        }
        eprintln!("{preset}: worst cosine to sentence-transformers f32 {worst:.6}");
        assert!(worst >= floor, "{preset}: {worst}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A cross-encoder through `hanzo-candle quantize` (Q8_0): its head is
/// carried as llama.cpp's `cls` / `cls.output` with the rank pooling type,
/// and the file loads as a reranker whose scores stay within 0.03 of
/// transformers' f32 scores (scores -0.6 to -0.85, 0.04 to 0.24 apart
/// between a query's documents). Q8_0 rounds every weight and every matmul
/// input to 8 bits (relative error ≤ 1/254 per value), compounding through
/// two layers and the head of a random model with wide weights (std 0.2):
/// two draws of the fixture moved scores by 0.0065 and 0.0138 at most, while
/// a dropped pooler or a wrong head moves them by far more than 0.03.
#[test]
fn quantized_cross_encoder_scores_stay_close_to_transformers() {
    use candle_engine::convert::quantize_encoder_dir;
    use candle_quant::preset::Preset;
    let name = "bert-reranker";
    let dir = std::env::temp_dir().join(format!("hanzo-reranker-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("reranker-q8_0.gguf");
    quantize_encoder_dir(&fixtures().join(name), Preset::Q8_0, &out, |_| {}).unwrap();
    assert!(Model::load(&out).unwrap().has_classifier_head());
    let worst = worst_score_difference(&Reranker::load(&out).unwrap(), name);
    eprintln!("Q8_0 cross-encoder: worst score difference to transformers {worst:.5}");
    assert!(worst <= 0.03, "{worst}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `hanzo-candle quantize` on the tiny RoBERTa, XLM-R and XLM-R
/// cross-encoder writes the vocabulary, special tokens, context length,
/// pooling and position table llama.cpp's own converter writes (compared
/// key by key with its f32 files; one deliberate difference: from a
/// `sentencepiece.bpe.model` llama.cpp puts a placeholder where XLM-R's
/// `<mask>` is, we keep `<mask>`). The Q8_0 file's states stay within 0.25
/// of transformers' f32 states: they are LayerNorm-ed (~1 in size) and the
/// tiny random weights are wide (std 0.2), so Q8_0's 8-bit weights and
/// matmul inputs move them by 0.07 on the tiny BERT's file (whose path the
/// f32 tests check exactly) and 0.11 on RoBERTa's, while a wrong token or a
/// shifted position moves them by ~1.
#[test]
fn quantized_roberta_family_files_match_llama_cpp_conversion() {
    use candle_engine::convert::quantize_encoder_dir;
    use candle_quant::gguf::{GgufFile, MetadataValue};
    use candle_quant::preset::Preset;
    let dir = std::env::temp_dir().join(format!("hanzo-roberta-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let same_keys = [
        "bert.context_length",
        "bert.pooling_type",
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.precompiled_charsmap",
        "tokenizer.ggml.add_space_prefix",
        "tokenizer.ggml.remove_extra_whitespaces",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.seperator_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.token_type_count",
    ];
    // A value as text, leaving out the element at `mask` of arrays.
    let shown = |v: Option<MetadataValue<'_>>, mask: Option<usize>| match v {
        Some(MetadataValue::Array(a)) => {
            let mut items: Vec<String> = a.iter().map(|v| format!("{v:?}")).collect();
            if let Some(mask) = mask.filter(|&m| m < items.len()) {
                items.remove(mask);
            }
            items.join(",")
        }
        other => format!("{other:?}"),
    };
    for name in ["roberta", "xlm-roberta", "xlm-roberta-reranker"] {
        let out = dir.join(format!("{name}-q8_0.gguf"));
        quantize_encoder_dir(&fixtures().join(name), Preset::Q8_0, &out, |_| {}).unwrap();
        let ours = GgufFile::open(&out).unwrap();
        let llama = GgufFile::open(fixtures().join(format!("{name}.gguf"))).unwrap();
        let mask = match name.starts_with("xlm") {
            true => Some(ours.get_usize("tokenizer.ggml.mask_token_id").unwrap()),
            false => None,
        };
        for key in same_keys {
            // The reranker: llama.cpp leaves its pooling to the caller, we
            // write `rank`.
            if name.ends_with("reranker") && key == "bert.pooling_type" {
                continue;
            }
            let (a, b) = (shown(ours.get(key), mask), shown(llama.get(key), mask));
            assert_eq!(a, b, "{name}: {key}");
        }
        let rows = |f: &GgufFile<'_>| {
            f.tensor("position_embd.weight")
                .unwrap()
                .info
                .shape()
                .to_vec()
        };
        assert_eq!(rows(&ours), rows(&llama), "{name}: position table");
        if name.ends_with("reranker") {
            assert!(Model::load(&out).unwrap().has_classifier_head());
            continue;
        }
        let mut embedder = Embedder::load(&out).unwrap();
        embedder.set_normalize(false);
        let reference = reference(name);
        let worst = uncut_items(&reference)
            .into_iter()
            .map(|item| state_difference(&embedder, name, item))
            .fold(0f32, f32::max);
        eprintln!("{name} Q8_0: worst state difference to transformers {worst:.4}");
        assert!(worst <= 0.25, "{name}: {worst}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
