//! The JavaScript API in headless Chromium (`wasm-bindgen-test`; run by
//! scripts/test.sh through `wasm-bindgen-test-runner` and chromedriver), on
//! the tiny model of `common`, whose greedy output is known by construction.

#![cfg(target_arch = "wasm32")]

mod common;

use candle_wasm::{Model, ModelLoader};
use common::{byte, tiny_gguf, BOS, CONTEXT};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn options(json: &str) -> Option<JsValue> {
    Some(js_sys::JSON::parse(json).unwrap())
}

fn load() -> Model {
    Model::new(tiny_gguf("llama"), None).unwrap_or_else(|e| panic!("{:?}", JsValue::from(e)))
}

/// The message of the JavaScript `Error` a call failed with.
#[track_caller]
fn error_message<T>(result: Result<T, wasm_bindgen::JsError>) -> String {
    let Err(error) = result else {
        panic!("expected an error");
    };
    let error: js_sys::Error = JsValue::from(error)
        .dyn_into()
        .expect("failures are JavaScript Error objects");
    error.message().into()
}

fn generate(model: &Model, tokens: Vec<u32>, json: &str) -> Vec<u32> {
    model
        .generate(tokens, options(json).map(JsCast::unchecked_into))
        .unwrap_or_else(|e| panic!("{:?}", JsValue::from(e)))
}

#[wasm_bindgen_test]
fn loads_and_reports_what_the_file_says() {
    let info = load().info().unwrap();
    let get = |key: &str| js_sys::Reflect::get(&info, &key.into()).unwrap();
    assert_eq!(get("architecture"), "llama");
    assert_eq!(get("context").as_f64(), Some(CONTEXT as f64));
    assert_eq!(get("layers").as_f64(), Some(2.0));
    assert_eq!(get("has_chat_template"), true);
}

#[wasm_bindgen_test]
fn encode_decode_round_trip() {
    let model = load();
    let text = "hello,wasm!é";
    let ids = model.encode(text, None).unwrap();
    // SentencePiece byte fallback: a BOS, then one token per UTF-8 byte
    // (spaces would become the bytes of its space marker, U+2581).
    let expected: Vec<u32> = std::iter::once(BOS).chain(text.bytes().map(byte)).collect();
    assert_eq!(ids, expected);
    assert_eq!(model.decode(ids, None).unwrap(), text);
}

#[wasm_bindgen_test]
fn greedy_generation_follows_the_constructed_successors() {
    let model = load();
    let out = generate(
        &model,
        model.encode("abc", None).unwrap(),
        r#"{"max_tokens": 5}"#,
    );
    assert_eq!(model.decode(out, None).unwrap(), "defgh");
    // From "x": "y", "z", then the end-of-sequence token, which is not returned.
    let out = generate(
        &model,
        model.encode("x", None).unwrap(),
        r#"{"max_tokens": 10}"#,
    );
    assert_eq!(out, vec![byte(b'y'), byte(b'z')]);
    // A stop string cuts the text before it.
    let stream = model
        .stream(
            model.encode("a", None).unwrap(),
            options(r#"{"max_tokens": 20, "stop": ["f"]}"#).map(JsCast::unchecked_into),
        )
        .unwrap();
    let (text, result) = drain(stream);
    assert_eq!(text, "bcde");
    assert_eq!(field(&result, "finish_reason"), "stop");
    // The step that reaches max_tokens still streams its token's text.
    let stream = model
        .stream(
            model.encode("a", None).unwrap(),
            options(r#"{"max_tokens": 3}"#).map(JsCast::unchecked_into),
        )
        .unwrap();
    let (text, result) = drain(stream);
    assert_eq!(text, "bcd");
    assert_eq!(field(&result, "text"), "bcd");
    assert_eq!(field(&result, "finish_reason"), "length");
}

#[wasm_bindgen_test]
fn steps_report_log_probabilities_when_asked() {
    let model = load();
    let mut stream = model
        .stream(
            model.encode("a", None).unwrap(),
            options(r#"{"max_tokens": 2, "logprobs": 2}"#).map(JsCast::unchecked_into),
        )
        .unwrap();
    let step: JsValue = stream.next().unwrap().into();
    let logprobs: js_sys::Array = field(&step, "logprobs").dyn_into().unwrap();
    assert_eq!(logprobs.length(), 1);
    let entry = logprobs.get(0);
    assert_eq!(field(&entry, "token").as_f64(), Some(byte(b'b') as f64));
    // The successor's logit leads every other by about 17, so its
    // probability is within vocab * e^-17 (< 1e-4) of 1.
    let logprob = field(&entry, "logprob").as_f64().unwrap();
    assert!(logprob <= 0.0 && logprob > -1e-4, "{logprob}");
    let top: js_sys::Array = field(&entry, "top").dyn_into().unwrap();
    assert_eq!(top.length(), 2);
    let best: js_sys::Array = top.get(0).dyn_into().unwrap();
    assert_eq!(best.get(0).as_f64(), Some(byte(b'b') as f64));
    assert_eq!(best.get(1).as_f64(), Some(logprob));
    let runner_up: js_sys::Array = top.get(1).dyn_into().unwrap();
    assert!(runner_up.get(1).as_f64().unwrap() < -10.0);
    // Without the option the list is empty.
    let mut plain = model
        .stream(model.encode("a", None).unwrap(), None)
        .unwrap();
    let step: JsValue = plain.next().unwrap().into();
    assert_eq!(
        field(&step, "logprobs")
            .dyn_into::<js_sys::Array>()
            .unwrap()
            .length(),
        0
    );
}

fn field(object: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(object, &key.into()).unwrap()
}

/// Steps `stream` to its end: the streamed text and the result.
fn drain(mut stream: candle_wasm::TokenStream) -> (String, JsValue) {
    let mut text = String::new();
    loop {
        let step: JsValue = stream.next().unwrap().into();
        text.push_str(&field(&step, "text").as_string().unwrap());
        if field(&step, "done") == true {
            return (text, stream.result().unwrap().into());
        }
    }
}

#[wasm_bindgen_test]
fn streams_token_by_token_and_aborts_between_tokens() {
    let model = load();
    let prompt = model.encode("a", None).unwrap();
    let mut stream = model
        .stream(
            prompt.clone(),
            options(r#"{"max_tokens": 10}"#).map(JsCast::unchecked_into),
        )
        .unwrap();
    let mut pieces = Vec::new();
    for i in 0..3 {
        let step: JsValue = stream.next().unwrap().into();
        assert_eq!(field(&step, "done"), false);
        // The one-token prompt is processed in the first step, which also
        // samples the first token.
        assert_eq!(field(&step, "prompt_processed"), i == 0);
        pieces.push(field(&step, "text").as_string().unwrap());
    }
    assert_eq!(pieces, ["b", "c", "d"]);
    assert!(JsValue::from(stream.result().unwrap()).is_undefined());
    stream.cancel();
    let step: JsValue = stream.next().unwrap().into();
    assert_eq!(field(&step, "done"), true);
    assert_eq!(
        field(&stream.result().unwrap().into(), "finish_reason"),
        "cancelled"
    );

    // The model is free for the next generation, and a stream superseded
    // by a newer one ends as cancelled.
    let mut first = model.stream(prompt.clone(), None).unwrap();
    let (text, result) = drain(model.stream(prompt, None).unwrap());
    assert_eq!(text, "bcdefghijklmnopqrstuvwxyz");
    assert_eq!(field(&result, "finish_reason"), "eos");
    assert_eq!(field(&first.next().unwrap().into(), "done"), true);
    assert_eq!(
        field(&first.result().unwrap().into(), "finish_reason"),
        "cancelled"
    );
}

#[wasm_bindgen_test]
fn chat_uses_the_files_template() {
    let model = load();
    let messages = js_sys::JSON::parse(r#"[{"role": "user", "content": "hi"}]"#).unwrap();
    // The template's prompt ends with "assistant\n"; after a newline the
    // model says the alphabet and stops.
    let reply = model.chat(messages.clone().unchecked_into(), None).unwrap();
    assert_eq!(reply, "abcdefghijklmnopqrstuvwxyz");
    let bad = js_sys::JSON::parse(r#"[{"role": "user"}]"#).unwrap();
    assert!(error_message(model.chat(bad.unchecked_into(), None)).contains("content"));
}

#[wasm_bindgen_test]
fn chunked_loading_gives_the_same_model() {
    let bytes = tiny_gguf("llama");
    let mut loader = ModelLoader::new(bytes.len() as f64).unwrap();
    for chunk in bytes.chunks(1000) {
        loader.push(chunk).unwrap();
    }
    assert_eq!(loader.received(), bytes.len() as f64);
    let model = loader.finish(None).unwrap();
    let out = generate(
        &model,
        model.encode("abc", None).unwrap(),
        r#"{"max_tokens": 3}"#,
    );
    assert_eq!(model.decode(out, None).unwrap(), "def");
    assert!(error_message(loader.finish(None)).contains("already finished"));

    let mut loader = ModelLoader::new(10.0).unwrap();
    assert!(error_message(loader.push(&[0; 11])).contains("11 bytes pushed"));
    loader.push(&[0; 4]).unwrap();
    assert!(error_message(loader.finish(None)).contains("after 4 of the 10"));
    assert!(error_message(ModelLoader::new(-1.0)).contains("total_bytes"));
    assert!(error_message(ModelLoader::new(1e12)).contains("total_bytes"));
}

#[wasm_bindgen_test]
fn bad_input_is_a_javascript_error() {
    let bytes = tiny_gguf("llama");
    let message = error_message(Model::new(bytes[..bytes.len() / 2].to_vec(), None));
    assert!(
        message.contains("gguf:") && message.contains("outside the"),
        "{message}"
    );
    let message = error_message(Model::new(b"not a model at all".to_vec(), None));
    assert!(
        message.contains("magic") || message.contains("GGUF"),
        "{message}"
    );
    let message = error_message(Model::new(tiny_gguf("mamba"), None));
    assert!(
        message.contains("unsupported architecture `mamba`"),
        "{message}"
    );
    let message = error_message(Model::new(
        tiny_gguf("llama"),
        options(r#"{"context": 100000}"#).map(JsCast::unchecked_into),
    ));
    assert!(message.contains("requested context 100000"), "{message}");
    let message = error_message(Model::new(
        tiny_gguf("llama"),
        options(r#"{"contxt": 10}"#).map(JsCast::unchecked_into),
    ));
    assert!(message.contains("contxt"), "{message}");

    let model = load();
    let long = model.encode(&"a".repeat(CONTEXT + 10), None).unwrap();
    let message = error_message(model.generate(long, None));
    assert!(message.contains("context holds 256"), "{message}");
    let message = error_message(model.generate(vec![], None));
    assert!(message.contains("prompt is empty"), "{message}");
    let message = error_message(model.generate(vec![100_000], None));
    assert!(message.contains("outside the vocabulary"), "{message}");
    let message = error_message(model.generate(
        vec![BOS],
        options(r#"{"temperature": -1}"#).map(JsCast::unchecked_into),
    ));
    assert!(message.contains("temperature"), "{message}");
    let message = error_message(model.generate(
        vec![BOS],
        options(r#"{"max_token": 5}"#).map(JsCast::unchecked_into),
    ));
    assert!(message.contains("max_token"), "{message}");
    let message = error_message(model.generate(
        vec![BOS],
        options(r#"{"logprobs": 21}"#).map(JsCast::unchecked_into),
    ));
    assert!(message.contains("at most 20 alternatives"), "{message}");
    // After all of that the model still works.
    let out = generate(&model, vec![BOS, byte(b'q')], r#"{"max_tokens": 2}"#);
    assert_eq!(model.decode(out, None).unwrap(), "rs");
}
