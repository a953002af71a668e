//! The option objects JavaScript passes, read strictly: an unknown or
//! mistyped field is an error naming it, never silently ignored.

use candle_engine::chat::Message;
use candle_engine::sampling::SamplingParams;
use candle_engine::scheduler::GenerationParams;
use serde::Deserialize;
use wasm_bindgen::{JsCast, JsError, JsValue};

/// Reads `value` as `T`, whose fields are `fields`. serde-wasm-bindgen
/// looks up only the fields it knows, so unknown ones are refused here.
fn read<T: for<'de> Deserialize<'de> + Default>(
    what: &str,
    fields: &[&str],
    value: Option<JsValue>,
) -> Result<T, JsError> {
    let value = match value {
        Some(v) if !(v.is_undefined() || v.is_null()) => v,
        _ => return Ok(T::default()),
    };
    if let Some(object) = value.dyn_ref::<js_sys::Object>() {
        for key in js_sys::Object::keys(object) {
            let key = key.as_string().unwrap_or_default();
            if !fields.contains(&key.as_str()) {
                return Err(JsError::new(&format!(
                    "invalid {what}: unknown field `{key}`; expected one of {}",
                    fields.join(", ")
                )));
            }
        }
    }
    serde_wasm_bindgen::from_value(value).map_err(|e| JsError::new(&format!("invalid {what}: {e}")))
}

/// `new Model(bytes, options)`.
#[derive(Default, Deserialize)]
pub struct LoadOptions {
    pub context: Option<usize>,
}

impl LoadOptions {
    pub fn from_js(value: Option<JsValue>) -> Result<Self, JsError> {
        read("load options", &["context"], value)
    }
}

/// `generate(tokens, options)`: HIP-19's names; absent fields keep the
/// engine's defaults (greedy, 128 tokens).
#[derive(Default, Deserialize)]
pub struct GenerateOptions {
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    repeat_last_n: Option<usize>,
    seed: Option<u64>,
    stop: Option<Vec<String>>,
    logprobs: Option<usize>,
}

impl GenerateOptions {
    /// The engine's parameters; their values are checked when the
    /// generation starts.
    pub fn from_js(value: Option<JsValue>) -> Result<GenerationParams, JsError> {
        let o: Self = read(
            "generate options",
            &[
                "max_tokens",
                "temperature",
                "top_p",
                "top_k",
                "min_p",
                "repetition_penalty",
                "repeat_last_n",
                "seed",
                "stop",
                "logprobs",
            ],
            value,
        )?;
        let defaults = GenerationParams::default();
        let s = SamplingParams::default();
        Ok(GenerationParams {
            max_tokens: o.max_tokens.unwrap_or(defaults.max_tokens),
            sampling: SamplingParams {
                temperature: o.temperature.unwrap_or(s.temperature),
                top_k: o.top_k.unwrap_or(s.top_k),
                top_p: o.top_p.unwrap_or(s.top_p),
                min_p: o.min_p.unwrap_or(s.min_p),
                repetition_penalty: o.repetition_penalty.unwrap_or(s.repetition_penalty),
                repeat_last_n: o.repeat_last_n.unwrap_or(s.repeat_last_n),
                seed: o.seed.unwrap_or(s.seed),
            },
            stop: o.stop.unwrap_or_default(),
            logprobs: o.logprobs,
        })
    }
}

/// One `{role, content}` message of `chat(messages)`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    role: String,
    content: String,
}

impl ChatMessage {
    pub fn list_from_js(value: JsValue) -> Result<Vec<Message>, JsError> {
        let list: Vec<Self> = serde_wasm_bindgen::from_value(value).map_err(|e| {
            JsError::new(&format!(
                "invalid chat messages (expected [{{role, content}}, ...]): {e}"
            ))
        })?;
        if list.is_empty() {
            return Err(JsError::new("chat needs at least one message"));
        }
        Ok(list
            .iter()
            .map(|m| Message::new(&m.role, &m.content))
            .collect())
    }
}
