//! Writer -> reader round trips, and agreement with gguf-py's writer.

use candle_core::{DType, Device, Tensor};
use candle_quant::gguf::{
    describe, GgmlType, GgufError, GgufFile, GgufVocab, GgufWriter, MetadataValue, Value, ValueType,
};
use proptest::prelude::*;

fn every_value_type() -> Vec<(&'static str, Value)> {
    vec![
        ("v.u8", Value::U8(250)),
        ("v.i8", Value::I8(-128)),
        ("v.u16", Value::U16(65535)),
        ("v.i16", Value::I16(-32768)),
        ("v.u32", Value::U32(u32::MAX)),
        ("v.i32", Value::I32(i32::MIN)),
        ("v.f32", Value::F32(-0.125)),
        ("v.bool", Value::Bool(true)),
        ("v.string", Value::from("héllo ✓")),
        ("v.u64", Value::U64(u64::MAX)),
        ("v.i64", Value::I64(i64::MIN)),
        ("v.f64", Value::F64(std::f64::consts::PI)),
        ("v.empty", Value::Array(ValueType::I32, vec![])),
        ("v.strings", Value::string_array(["a", "", "日本"])),
        (
            "v.bools",
            Value::array(ValueType::Bool, [true, false, true]),
        ),
        ("v.f64s", Value::array(ValueType::F64, [1.5f64, -0.0])),
        (
            "v.nested",
            Value::Array(
                ValueType::Array,
                vec![
                    Value::array(ValueType::U16, [1u16, 2]),
                    Value::Array(ValueType::U16, vec![]),
                ],
            ),
        ),
    ]
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn metadata_of_every_type_round_trips() {
    let mut writer = GgufWriter::new();
    for (key, value) in every_value_type() {
        writer.add_metadata(key, value).unwrap();
    }
    let file = GgufFile::from_vec(writer.to_bytes().unwrap()).unwrap();
    assert_eq!(file.version(), 3);
    let read: Vec<(String, Value)> = file
        .metadata()
        .map(|(k, v)| (k.to_owned(), v.to_owned_value()))
        .collect();
    let expected: Vec<(String, Value)> = every_value_type()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(read, expected);
}

#[test]
fn tensors_round_trip_aligned_and_zero_copy() {
    for alignment in [32u32, 64, 1] {
        let mut writer = GgufWriter::new();
        writer.add_metadata("general.alignment", alignment).unwrap();
        let f32_data = f32_bytes(&[1.0, -2.0, 3.5]);
        let q8_data: Vec<u8> = (0..34 * 3).map(|i| i as u8).collect();
        let q6k_data: Vec<u8> = (0..210).map(|i| (i * 7) as u8).collect();
        writer
            .add_tensor("a", GgmlType::F32, &[3], f32_data.as_slice())
            .unwrap();
        writer
            .add_tensor("b", GgmlType::Q8_0, &[32, 3], q8_data.clone())
            .unwrap();
        writer
            .add_tensor("c", GgmlType::Q6_K, &[256, 1, 1, 1], q6k_data.clone())
            .unwrap();
        let bytes = writer.to_bytes().unwrap();
        let file = GgufFile::from_bytes(&bytes).unwrap();
        assert_eq!(file.alignment(), u64::from(alignment));
        assert_eq!(file.data_offset() as u64 % u64::from(alignment), 0);
        for (name, data, dims) in [
            ("a", &f32_data, vec![3u64]),
            ("b", &q8_data, vec![32, 3]),
            ("c", &q6k_data, vec![256, 1, 1, 1]),
        ] {
            let t = file.tensor(name).unwrap();
            assert_eq!(t.data, data.as_slice(), "{name}");
            assert_eq!(t.info.dims, dims);
            assert_eq!(t.info.offset % u64::from(alignment), 0, "{name}");
            // Zero-copy: the slice points into the buffer the file was read from.
            let start = t.data.as_ptr() as usize - bytes.as_ptr() as usize;
            assert_eq!(start, file.data_offset() + t.info.offset as usize);
        }
    }
}

#[test]
fn mmap_and_buffer_agree() {
    let mut writer = GgufWriter::new();
    writer.add_metadata("general.name", "tiny").unwrap();
    writer
        .add_tensor(
            "w",
            GgmlType::F32,
            &[2, 2],
            f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
        )
        .unwrap();
    let path = std::env::temp_dir().join(format!("candle-quant-gguf-{}.gguf", std::process::id()));
    writer
        .write_to(std::fs::File::create(&path).unwrap())
        .unwrap();
    let mapped = GgufFile::open(&path).unwrap();
    let owned = GgufFile::from_vec(std::fs::read(&path).unwrap()).unwrap();
    assert!(mapped.is_memory_mapped());
    assert!(!owned.is_memory_mapped());
    assert_eq!(describe(&mapped), describe(&owned));
    assert_eq!(
        mapped.tensor("w").unwrap().data,
        owned.tensor("w").unwrap().data
    );
    drop(mapped);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let err = GgufFile::open("/nonexistent/model.gguf").err().unwrap();
    assert!(matches!(err, GgufError::Io { ref path, .. } if path == "/nonexistent/model.gguf"));
}

#[test]
fn candle_tensors_round_trip_in_their_dtype() {
    let device = Device::Cpu;
    let base = Tensor::arange(0f32, 24., &device)
        .unwrap()
        .affine(0.25, -3.0)
        .unwrap()
        .reshape((2, 3, 4))
        .unwrap();
    let mut writer = GgufWriter::new();
    for (name, dtype) in [
        ("f32", DType::F32),
        ("f16", DType::F16),
        ("bf16", DType::BF16),
    ] {
        writer
            .add_candle_tensor(name, &base.to_dtype(dtype).unwrap())
            .unwrap();
    }
    let file = GgufFile::from_vec(writer.to_bytes().unwrap()).unwrap();
    assert_eq!(file.tensor("f32").unwrap().info.dims, [4, 3, 2]);
    for (name, dtype) in [
        ("f32", DType::F32),
        ("f16", DType::F16),
        ("bf16", DType::BF16),
    ] {
        let read = file.tensor(name).unwrap().to_candle(&device).unwrap();
        assert_eq!(read.dtype(), dtype);
        assert_eq!(read.dims(), &[2, 3, 4]);
        // Values k/4 - 3 for k < 24 are exact in f16 and bf16, so the round
        // trip is bit-exact in every dtype.
        let back = read.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        assert_eq!(
            back.to_vec1::<f32>().unwrap(),
            base.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}

#[test]
fn quantized_tensor_to_candle_is_a_typed_error() {
    let mut writer = GgufWriter::new();
    writer
        .add_tensor("q", GgmlType::Q4_K, &[256], vec![0u8; 144])
        .unwrap();
    let file = GgufFile::from_vec(writer.to_bytes().unwrap()).unwrap();
    let err = file
        .tensor("q")
        .unwrap()
        .to_candle(&Device::Cpu)
        .unwrap_err();
    assert!(matches!(
        err,
        GgufError::UnsupportedConversion { ref tensor, ggml_type: "Q4_K" } if tensor == "q"
    ));
}

#[test]
fn typed_accessors_name_key_and_types() {
    let mut writer = GgufWriter::new();
    writer.add_metadata("llama.block_count", 30u32).unwrap();
    writer
        .add_metadata("llama.context_length", 8192u64)
        .unwrap();
    writer
        .add_metadata(
            "tokenizer.ggml.scores",
            Value::array(ValueType::F32, [0.5f32]),
        )
        .unwrap();
    writer.add_metadata("general.neg", -1i32).unwrap();
    let file = GgufFile::from_vec(writer.to_bytes().unwrap()).unwrap();

    assert_eq!(file.get_usize("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_usize("llama.context_length").unwrap(), 8192);
    assert_eq!(file.get_f32_array("tokenizer.ggml.scores").unwrap(), [0.5]);

    match file.get_u32("llama.context_length").unwrap_err() {
        GgufError::WrongType {
            key,
            expected,
            found,
        } => {
            assert_eq!(
                (key.as_str(), expected.as_str(), found.as_str()),
                ("llama.context_length", "uint32", "uint64")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    match file.get_str_array("tokenizer.ggml.scores").unwrap_err() {
        GgufError::WrongType {
            expected, found, ..
        } => {
            assert_eq!(
                (expected.as_str(), found.as_str()),
                ("array[string]", "array[float32; 1]")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        file.get_u32("llama.missing"),
        Err(GgufError::MissingKey { ref key }) if key == "llama.missing"
    ));
    assert!(matches!(
        file.get_usize("general.neg"),
        Err(GgufError::ValueOutOfRange {
            target: "usize",
            ..
        })
    ));
    assert!(matches!(
        file.tensor("nope"),
        Err(GgufError::MissingTensor { .. })
    ));
}

#[test]
fn writer_rejects_inconsistent_input() {
    let mut writer = GgufWriter::new();
    writer.add_metadata("k", 1u8).unwrap();
    assert!(matches!(
        writer.add_metadata("k", 2u8),
        Err(GgufError::InvalidWrite { .. })
    ));
    assert!(matches!(
        writer.add_metadata("mixed", Value::Array(ValueType::U8, vec![Value::U8(1), Value::I8(1)])),
        Err(GgufError::InvalidWrite { ref field, .. }) if field == "metadata \"mixed\"[1]"
    ));
    assert!(matches!(
        writer.add_metadata("general.alignment", 48u32),
        Err(GgufError::InvalidWrite { .. })
    ));
    assert!(matches!(
        writer.add_tensor("t", GgmlType::F32, &[4], vec![0u8; 15]),
        Err(GgufError::InvalidWrite { .. })
    ));
    assert!(matches!(
        writer.add_tensor("t", GgmlType::Q4_0, &[31], vec![0u8; 18]),
        Err(GgufError::RowNotBlockAligned { .. })
    ));
    assert!(matches!(
        writer.add_tensor("t", GgmlType::F32, &[1, 1, 1, 1, 1], vec![0u8; 4]),
        Err(GgufError::InvalidWrite { .. })
    ));
    writer
        .add_tensor("t", GgmlType::F32, &[1], vec![0u8; 4])
        .unwrap();
    assert!(matches!(
        writer.add_tensor("t", GgmlType::F32, &[1], vec![0u8; 4]),
        Err(GgufError::InvalidWrite { .. })
    ));
}

#[test]
fn vocab_checks_per_token_arrays_and_special_ids() {
    let build = |scores: usize, bos: u32| {
        let mut writer = GgufWriter::new();
        writer
            .add_metadata("tokenizer.ggml.model", "llama")
            .unwrap();
        writer
            .add_metadata(
                "tokenizer.ggml.tokens",
                Value::string_array(["<unk>", "a", "b"]),
            )
            .unwrap();
        writer
            .add_metadata(
                "tokenizer.ggml.scores",
                Value::array(ValueType::F32, vec![0f32; scores]),
            )
            .unwrap();
        writer
            .add_metadata("tokenizer.ggml.bos_token_id", bos)
            .unwrap();
        GgufFile::from_vec(writer.to_bytes().unwrap()).unwrap()
    };
    let good = build(3, 2);
    let vocab = GgufVocab::from_gguf(&good).unwrap();
    assert_eq!(vocab.model, "llama");
    assert_eq!(vocab.tokens, ["<unk>", "a", "b"]);
    assert_eq!(vocab.scores.as_deref(), Some(&[0.0f32; 3][..]));
    assert_eq!((vocab.bos_token_id, vocab.eos_token_id), (Some(2), None));

    let short_scores = build(2, 0);
    assert!(matches!(
        GgufVocab::from_gguf(&short_scores),
        Err(GgufError::InconsistentMetadata { ref key, .. }) if key == "tokenizer.ggml.scores"
    ));
    let bos_out_of_range = build(3, 3);
    assert!(matches!(
        GgufVocab::from_gguf(&bos_out_of_range),
        Err(GgufError::InconsistentMetadata { ref key, ref found, .. })
            if key == "tokenizer.ggml.bos_token_id" && found == "3"
    ));
}

fn reference_path(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf/reference")
        .join(name)
}

/// `gguf_py_writer.gguf` was written by gguf-py's GGUFWriter
/// (scripts/gguf_make_writer_reference.py): our reader must see the values
/// the script wrote, and our writer, fed the same entries, must produce the
/// same bytes.
#[test]
fn agrees_with_gguf_py_writer_byte_for_byte() {
    let reference = std::fs::read(reference_path("gguf_py_writer.gguf")).unwrap();
    let file = GgufFile::from_bytes(&reference).unwrap();
    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.get_u64("llama.context_length").unwrap(), 2048);
    assert_eq!(
        file.get_f32("llama.attention.layer_norm_rms_epsilon")
            .unwrap(),
        1e-5
    );
    assert_eq!(file.get_str("test.unicode").unwrap(), "héllo ✓ 日本");
    assert_eq!(
        file.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["<s>", "</s>", "▁hi", "日本"]
    );
    assert_eq!(
        file.get_f32_array("tokenizer.ggml.scores").unwrap(),
        [0.0, -1.0, -2.5, 3.25]
    );
    assert_eq!(
        file.get_i32_array("tokenizer.ggml.token_type").unwrap(),
        [3, 3, 1, 1]
    );
    assert!(matches!(file.get("test.int64"), Some(MetadataValue::I64(v)) if v == -(1 << 40)));

    let f32_weight = file
        .tensor("f32.weight")
        .unwrap()
        .to_candle(&Device::Cpu)
        .unwrap();
    let expected: Vec<Vec<f32>> = (0..3)
        .map(|r| (0..4).map(|c| (r * 4 + c) as f32 * 0.5 - 1.0).collect())
        .collect();
    assert_eq!(f32_weight.to_vec2::<f32>().unwrap(), expected);
    let q4 = file.tensor("q4.weight").unwrap();
    assert_eq!(q4.info.dims, [64, 1]);
    assert_eq!(q4.data, (0u8..36).collect::<Vec<_>>());

    let mut writer = GgufWriter::new();
    for (key, value) in file.metadata() {
        writer.add_metadata(key, value.to_owned_value()).unwrap();
    }
    for t in file.tensors() {
        writer
            .add_tensor(&t.info.name, t.info.ggml_type, &t.info.dims, t.data)
            .unwrap();
    }
    assert_eq!(writer.to_bytes().unwrap(), reference);
}

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i64>().prop_map(Value::I64),
        any::<bool>().prop_map(Value::Bool),
        // Finite floats only: NaN != NaN would defeat the equality check.
        (-1e30f32..1e30).prop_map(Value::F32),
        (-1e300f64..1e300).prop_map(Value::F64),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => arb_scalar(),
        1 => prop::collection::vec(any::<i32>(), 0..20)
            .prop_map(|v| Value::array(ValueType::I32, v)),
        1 => prop::collection::vec(".{0,6}", 0..10).prop_map(Value::string_array),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_files_round_trip(
        values in prop::collection::vec(arb_value(), 0..12),
        tensors in prop::collection::vec((1u64..5, 1u64..4, any::<bool>()), 0..6),
    ) {
        let mut writer = GgufWriter::new();
        for (i, v) in values.iter().enumerate() {
            writer.add_metadata(&format!("k{i}"), v.clone()).unwrap();
        }
        let mut expected_data = Vec::new();
        for (i, &(blocks, rows, quantized)) in tensors.iter().enumerate() {
            let (ty, row) = if quantized { (GgmlType::Q5_1, 32 * blocks) } else { (GgmlType::F16, blocks) };
            let size = ty.bytes_for(row * rows).unwrap() as usize;
            let data: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
            writer.add_tensor(&format!("t{i}"), ty, &[row, rows], data.clone()).unwrap();
            expected_data.push(data);
        }
        let bytes = writer.to_bytes().unwrap();
        let file = GgufFile::from_bytes(&bytes).unwrap();
        let read: Vec<Value> = file.metadata().map(|(_, v)| v.to_owned_value()).collect();
        prop_assert_eq!(read, values);
        let data: Vec<Vec<u8>> = file.tensors().map(|t| t.data.to_vec()).collect();
        prop_assert_eq!(data, expected_data);
    }

    /// Flipping any byte of a valid file yields a file or an error, never a
    /// panic, and an accepted file still hands out in-bounds tensor slices.
    #[test]
    fn corrupted_bytes_never_panic(position in 0usize..4096, byte in any::<u8>()) {
        let mut writer = GgufWriter::new();
        writer.add_metadata("tokenizer.ggml.tokens", Value::string_array(["a", "bb", "ccc"])).unwrap();
        writer.add_metadata("general.alignment", 32u32).unwrap();
        writer.add_tensor("w", GgmlType::Q4_0, &[32, 2], vec![7u8; 36]).unwrap();
        let mut bytes = writer.to_bytes().unwrap();
        let index = position % bytes.len();
        bytes[index] = byte;
        if let Ok(file) = GgufFile::from_bytes(&bytes) {
            for t in file.tensors() {
                prop_assert_eq!(t.data.len() as u64, t.info.size);
            }
            let _ = describe(&file);
        }
    }
}
