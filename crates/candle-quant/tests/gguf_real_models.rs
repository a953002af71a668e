//! The real model files (SmolLM2-135M Q4_1 and Gemma-3-270M Q4_K_M) open,
//! validate and describe, and our view of their metadata and tensor table
//! equals gguf-py's (dumped by scripts/gguf_dump_reference.py into
//! tests/fixtures/gguf/reference/).
//!
//! The models live outside the repository, in `$HANZO_CANDLE_MODELS`
//! (default `~/.cache/hanzo-candle/models`), where `scripts/fetch-models.sh`
//! puts them; `scripts/test.sh` runs it before the tests.

use std::path::PathBuf;

use candle_core::Device;
use candle_quant::gguf::{describe, GgmlType, GgufFile, GgufVocab, MetadataValue, ValueType};
use serde_json::Value as Json;

fn models_dir() -> PathBuf {
    std::env::var_os("HANZO_CANDLE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/hanzo-candle/models")
        })
}

fn reference(name: &str) -> Json {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf/reference")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn json_of(value: MetadataValue<'_>) -> Json {
    match value {
        MetadataValue::String(s) => Json::from(s),
        MetadataValue::Bool(b) => Json::from(b),
        // JSON holds the f32 widened to f64 by gguf-py; widening ours the
        // same way makes the comparison exact.
        MetadataValue::F32(x) => Json::from(f64::from(x)),
        MetadataValue::F64(x) => Json::from(x),
        other => match other.as_i128() {
            Some(i) => {
                Json::from(i64::try_from(i).expect("integer metadata fits i64 in these files"))
            }
            None => panic!("unexpected nested array"),
        },
    }
}

fn as_f64(value: MetadataValue<'_>) -> f64 {
    match value {
        MetadataValue::F32(x) => f64::from(x),
        MetadataValue::F64(x) => x,
        other => other.as_i128().expect("numeric array") as f64,
    }
}

fn check_model(file_name: &str, reference_name: &str) {
    let path = models_dir().join(file_name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    let file = GgufFile::open(&path).unwrap();
    let expected = reference(reference_name);
    assert_eq!(
        file.file_len() as u64,
        expected["file_len"].as_u64().unwrap()
    );
    assert_eq!(
        u64::from(file.version()),
        expected["version"].as_u64().unwrap()
    );
    assert_eq!(file.alignment(), expected["alignment"].as_u64().unwrap());
    assert_eq!(
        file.data_offset() as u64,
        expected["data_offset"].as_u64().unwrap()
    );

    let expected_meta = expected["metadata"].as_object().unwrap();
    let keys: Vec<&str> = file.metadata().map(|(k, _)| k).collect();
    let expected_keys: Vec<&str> = expected_meta.keys().map(String::as_str).collect();
    let mut sorted_keys = keys.clone();
    sorted_keys.sort_unstable();
    assert_eq!(sorted_keys, expected_keys, "metadata keys");

    for (key, value) in file.metadata() {
        let want = &expected_meta[key];
        match value {
            MetadataValue::Array(array) => {
                assert_eq!(want["type"], "array", "{key}");
                assert_eq!(array.element_type().name(), want["element_type"], "{key}");
                assert_eq!(array.len() as u64, want["len"].as_u64().unwrap(), "{key}");
                let head: Vec<Json> = array.iter().take(5).map(json_of).collect();
                assert_eq!(Json::from(head), want["head"], "{key} head");
                if let Some(last) = array.iter().last() {
                    assert_eq!(json_of(last), want["last"], "{key} last");
                }
                if array.element_type() == ValueType::String {
                    let bytes: usize = file
                        .get_str_array(key)
                        .unwrap()
                        .iter()
                        .map(|s| s.len())
                        .sum();
                    assert_eq!(bytes as u64, want["utf8_bytes"].as_u64().unwrap(), "{key}");
                } else if array.element_type() != ValueType::Bool {
                    // The same in-order f64 sum the script computes, so the
                    // comparison is exact (no tolerance needed).
                    let sum = array.iter().fold(0.0f64, |acc, v| acc + as_f64(v));
                    assert_eq!(sum, want["sum"].as_f64().unwrap(), "{key} sum");
                }
            }
            scalar => {
                assert_eq!(scalar.value_type().name(), want["type"], "{key}");
                assert_eq!(json_of(scalar), want["value"], "{key}");
            }
        }
    }

    let expected_tensors = expected["tensors"].as_array().unwrap();
    assert_eq!(file.tensor_infos().len(), expected_tensors.len());
    for (info, want) in file.tensor_infos().iter().zip(expected_tensors) {
        assert_eq!(info.name, want["name"].as_str().unwrap());
        assert_eq!(
            u64::from(info.ggml_type.id()),
            want["type_id"].as_u64().unwrap(),
            "{}",
            info.name
        );
        assert_eq!(info.ggml_type.name(), want["type_name"], "{}", info.name);
        let dims: Vec<u64> = want["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(info.dims, dims, "{}", info.name);
        assert_eq!(
            info.size,
            want["n_bytes"].as_u64().unwrap(),
            "{}",
            info.name
        );
        assert_eq!(
            file.data_offset() as u64 + info.offset,
            want["data_offset"].as_u64().unwrap(),
            "{}",
            info.name
        );
    }

    let text = describe(&file);
    assert!(text.contains("tokenizer.ggml.tokens: array[string;"));
    assert!(text.contains("more)"), "long arrays must be summarised");
    for info in file.tensor_infos() {
        assert!(text.contains(&info.name));
    }
    // The full vocabulary would be megabytes; the summary stays small.
    assert!(text.len() < 64 * 1024, "describe() is {} bytes", text.len());

    let vocab = GgufVocab::from_gguf(&file).unwrap();
    let tokens = &expected_meta["tokenizer.ggml.tokens"];
    assert_eq!(vocab.tokens.len() as u64, tokens["len"].as_u64().unwrap());
    assert_eq!(Json::from(vocab.tokens[..5].to_vec()), tokens["head"]);

    // Norm weights are F32 in both files and load as candle tensors.
    let norm = file.tensor("output_norm.weight").unwrap();
    assert_eq!(norm.info.ggml_type, GgmlType::F32);
    let tensor = norm.to_candle(&Device::Cpu).unwrap();
    assert_eq!(tensor.dims(), &[norm.info.dims[0] as usize]);
}

#[test]
fn smollm2_q4_1_matches_gguf_py() {
    check_model(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct.Q4_1.json",
    );
}

#[test]
fn gemma3_q4_k_m_matches_gguf_py() {
    check_model("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m.json");
}

/// Our block sizes agree with gguf-py's GGML_QUANT_SIZES for every type both
/// know, except Q8_1: gguf-py still lists its old 40-byte layout (f32 d and
/// s), while ggml's block_q8_1 has been two f16 plus 32 int8 = 36 bytes since
/// 2023. Q8_1 is an activation format that never appears in files.
#[test]
fn ggml_type_sizes_match_gguf_py() {
    let expected = reference("ggml_type_sizes.json");
    let mut compared = 0;
    for (name, want) in expected["types"].as_object().unwrap() {
        let id = want["id"].as_u64().unwrap() as u32;
        let Ok(ty) = GgmlType::from_id(id) else {
            continue;
        };
        assert_eq!(ty.name(), name);
        assert_eq!(
            ty.block_size(),
            want["block_size"].as_u64().unwrap(),
            "{name}"
        );
        if ty == GgmlType::Q8_1 {
            assert_eq!(
                (ty.block_bytes(), want["block_bytes"].as_u64().unwrap()),
                (36, 40)
            );
        } else {
            assert_eq!(
                ty.block_bytes(),
                want["block_bytes"].as_u64().unwrap(),
                "{name}"
            );
        }
        compared += 1;
    }
    assert_eq!(
        compared,
        GgmlType::ALL.len(),
        "every type we know is in gguf-py's table"
    );
}
