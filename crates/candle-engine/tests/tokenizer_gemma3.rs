//! The SentencePiece tokenizer of the real Gemma-3-270M Q4_K_M GGUF against
//! llama.cpp, and the chat layouts against transformers' Jinja rendering:
//! `scripts/gen_tokenizer_fixtures.py` ran llama-cpp-python and transformers
//! on the same file and wrote `tests/fixtures/gemma3/tokenizer.json`.
//!
//! The model comes from `scripts/fetch-models.sh` (which `scripts/test.sh`
//! runs first) into `$HANZO_CANDLE_MODELS`, default
//! `~/.cache/hanzo-candle/models`. Every comparison is exact: token ids and
//! text either match or they do not.

mod common;

use candle_engine::chat::{ChatTemplate, Message};
use candle_engine::gguf::GgufModel;
use candle_engine::tokenizer::{GgufTokenizerOptions, GgufTokenizerSpec, TextStream, Tokenizer};
use candle_quant::gguf::{GgufFile, GgufVocab};
use std::path::PathBuf;

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
    space_prefix_cases: Vec<Case>,
    chat: Vec<Chat>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_with_bos: Vec<u32>,
    detokenized: String,
    detokenized_without_special: String,
    detokenized_with_bos_without_special: String,
}

#[derive(serde::Deserialize)]
struct Chat {
    template: String,
    source: String,
    bos_token: String,
    eos_token: String,
    messages: Vec<Message>,
    rendered: String,
}

/// Gemma's BOS id (`tokenizer.ggml.bos_token_id`).
const BOS: u32 = 2;

fn reference() -> Reference {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3/tokenizer.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn open() -> GgufModel {
    GgufModel::new(
        GgufFile::open(common::real_model_path(
            "gemma-3-270m-q4_k_m.gguf",
            "gemma3",
        ))
        .unwrap(),
    )
}

/// Checks `tokenizer` against llama.cpp on every case, both directions.
fn assert_matches_llama_cpp(tokenizer: &Tokenizer, cases: &[Case]) {
    for case in cases {
        let ids = tokenizer.encode(&case.text, false).unwrap();
        assert_eq!(ids, case.ids, "encoding {:?}", case.text);
        // llama.cpp puts a second BOS before text that starts with one
        // (and warns); the engine adds it only once.
        let expected_with_bos = match case.ids_with_bos.as_slice() {
            [BOS, BOS, rest @ ..] => [&[BOS], rest].concat(),
            ids => ids.to_vec(),
        };
        assert_eq!(
            tokenizer.encode(&case.text, true).unwrap(),
            expected_with_bos,
            "encoding {:?} with BOS",
            case.text
        );
        assert_eq!(
            tokenizer.decode(&case.ids, false).unwrap(),
            case.detokenized,
            "decoding {:?}",
            case.text
        );
        assert_eq!(
            tokenizer.decode(&case.ids, true).unwrap(),
            case.detokenized_without_special,
            "decoding {:?} without special tokens",
            case.text
        );
        assert_eq!(
            tokenizer.decode(&case.ids_with_bos, true).unwrap(),
            case.detokenized_with_bos_without_special,
            "decoding {:?} with BOS, without special tokens",
            case.text
        );
    }
}

#[test]
fn gemma3_tokenizer_matches_llama_cpp_both_ways() {
    let tokenizer = open().tokenizer().unwrap();
    assert_eq!(tokenizer.vocab_size(), 262_144);
    assert_eq!(tokenizer.bos(), Some(BOS));
    assert_matches_llama_cpp(&tokenizer, &reference().cases);
}

#[test]
fn with_a_space_prefix_it_matches_llama_cpp_on_the_flipped_file() {
    // The script flipped `tokenizer.ggml.add_space_prefix` in a copy of the
    // file (llama-2-style vocabularies set it); the same vocabulary with the
    // flag set must tokenize as llama.cpp did that copy.
    let model = open();
    let file = model.file();
    let vocab = GgufVocab::from_gguf(file).unwrap();
    let spec = GgufTokenizerSpec {
        model: vocab.model,
        tokens: vocab.tokens,
        token_types: vocab.token_types.unwrap(),
        bos: vocab.bos_token_id,
        eos: vocab.eos_token_id,
        add_bos: true,
        ..GgufTokenizerSpec::default()
    };
    let options = GgufTokenizerOptions {
        scores: vocab.scores.unwrap(),
        add_eos: false,
        add_space_prefix: Some(true),
    };
    let tokenizer = Tokenizer::from_gguf_with(&spec, &options).unwrap();
    assert_matches_llama_cpp(&tokenizer, &reference().space_prefix_cases);
}

#[test]
fn streaming_reassembles_byte_tokens_into_the_detokenized_text() {
    let tokenizer = open().tokenizer().unwrap();
    for case in reference().cases {
        let mut stream = TextStream::default();
        let mut text = String::new();
        for &id in &case.ids {
            let piece = stream.push(&tokenizer, id).unwrap();
            // Held-back bytes never leak out as replacement characters.
            assert!(!piece.contains('\u{FFFD}'), "{:?}", case.text);
            text.push_str(&piece);
        }
        assert_eq!(text, case.detokenized_without_special, "{:?}", case.text);
    }
}

#[test]
fn end_of_turn_and_turn_markers_are_single_special_tokens() {
    let tokenizer = open().tokenizer().unwrap();
    // The loader adds `<end_of_turn>` to the ids that end a generation by
    // looking it up by text.
    assert_eq!(tokenizer.token_to_id("<end_of_turn>"), Some(106));
    assert_eq!(tokenizer.token_to_id("<start_of_turn>"), Some(105));
    assert_eq!(tokenizer.eos(), &[1]);
    assert_eq!(tokenizer.id_to_token(106).as_deref(), Some("<end_of_turn>"));
    assert_eq!(
        tokenizer.decode(&[106], true).unwrap(),
        "",
        "control tokens stay out of streamed text"
    );
}

#[test]
fn chat_layouts_render_as_transformers_does() {
    let tokenizer = open().tokenizer().unwrap();
    // The Gemma file embeds no template: the fallback is chosen from its
    // vocabulary.
    assert_eq!(open().chat_template().unwrap(), None);
    let gemma = ChatTemplate::for_tokenizer(None, &tokenizer).unwrap();
    let chats = reference().chat;
    assert!(chats.iter().any(|c| c.template == "gemma3_fallback"));
    for chat in &chats {
        let template =
            ChatTemplate::new(Some(&chat.source), &chat.bos_token, &chat.eos_token).unwrap();
        assert_eq!(
            template.render(&chat.messages, true).unwrap(),
            chat.rendered,
            "{} template through minijinja",
            chat.template
        );
        if chat.template == "gemma3_fallback" {
            // The script checked this layout against llama.cpp's built-in
            // `gemma` chat format.
            assert!(!gemma.is_model_template);
            assert_eq!(gemma.render(&chat.messages, true).unwrap(), chat.rendered);
        }
    }
    // The rendered prompt starts with `<bos>` as text; encoding it with
    // special tokens keeps a single BOS, as llama.cpp's chat path does.
    let prompt = gemma.render(&[Message::new("user", "Hi")], true).unwrap();
    let ids = tokenizer.encode(&prompt, true).unwrap();
    assert_eq!(&ids[..3], &[BOS, 105, 2364]);
    assert_eq!(ids.iter().filter(|&&id| id == BOS).count(), 1);
}
