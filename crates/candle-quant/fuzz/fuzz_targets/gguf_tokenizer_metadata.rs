//! Tokenizer metadata (`tokenizer.ggml.*`) from arbitrary files through the
//! typed accessors and GgufVocab: errors, never panics, and an accepted
//! vocabulary is internally consistent.
#![no_main]

use candle_quant::gguf::{GgufFile, GgufVocab, MetadataValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data) else {
        return;
    };
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.model",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.chat_template",
    ] {
        let _ = file.get_str_array(key);
        let _ = file.get_f32_array(key);
        let _ = file.get_i32_array(key);
        let _ = file.get_u32_array(key);
        let _ = file.get_str(key);
        let _ = file.get_u32(key);
        let _ = file.get_usize(key);
        if let Ok(array) = file.get_array(key) {
            assert_eq!(array.iter().count(), array.len());
        }
        // The bulk decoders must agree with element-by-element iteration.
        if let Ok(strings) = file.get_str_array(key) {
            let iterated: Vec<&str> = file
                .get_array(key)
                .unwrap()
                .iter()
                .map(|v| match v {
                    MetadataValue::String(s) => s,
                    other => panic!("string array yielded {other:?}"),
                })
                .collect();
            assert_eq!(strings, iterated);
        }
        if let Ok(floats) = file.get_f32_array(key) {
            let bits: Vec<u32> = floats.iter().map(|x| x.to_bits()).collect();
            let iterated: Vec<u32> = file
                .get_array(key)
                .unwrap()
                .iter()
                .map(|v| match v {
                    MetadataValue::F32(x) => x.to_bits(),
                    other => panic!("float32 array yielded {other:?}"),
                })
                .collect();
            assert_eq!(bits, iterated);
        }
    }
    if let Ok(vocab) = GgufVocab::from_gguf(&file) {
        let n = vocab.tokens.len();
        assert!(vocab.scores.as_ref().is_none_or(|s| s.len() == n));
        assert!(vocab.token_types.as_ref().is_none_or(|t| t.len() == n));
        for id in [
            vocab.bos_token_id,
            vocab.eos_token_id,
            vocab.unknown_token_id,
            vocab.padding_token_id,
        ]
        .into_iter()
        .flatten()
        {
            assert!((id as usize) < n);
        }
        let index: std::collections::HashMap<&str, usize> = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, i))
            .collect();
        assert!(index.len() <= n);
    }
});
