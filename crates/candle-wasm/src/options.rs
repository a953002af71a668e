//! The option objects JavaScript passes, read strictly: an unknown or
//! mistyped field is an error naming it, never silently ignored.

use candle_engine::chat::Message;
use candle_engine::sampling::SamplingParams;
use candle_engine::scheduler::GenerationParams;
use serde::Deserialize;
use wasm_bindgen::{JsError, JsValue};

fn read<T: for<'de> Deserialize<'de> + Default>(
    what: &str,
    value: Option<JsValue>,
) -> Result<T, JsError> {
    match value {
        None => Ok(T::default()),
        Some(v) if v.is_undefined() || v.is_null() => Ok(T::default()),
        Some(v) => serde_wasm_bindgen::from_value(v)
            .map_err(|e| JsError::new(&format!("invalid {what}: {e}"))),
    }
}

/// `new Model(bytes, options)`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadOptions {
    pub context: Option<usize>,
}

impl LoadOptions {
    pub fn from_js(value: Option<JsValue>) -> Result<Self, JsError> {
        read("load options", value)
    }
}

/// `generate(tokens, options)`: HIP-19's names; absent fields keep the
/// engine's defaults (greedy, 128 tokens).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

impl GenerateOptions {
    /// The engine's parameters; their values are checked when the
    /// generation starts.
    pub fn from_js(value: Option<JsValue>) -> Result<GenerationParams, JsError> {
        let o: Self = read("generate options", value)?;
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
