//! The OpenAI request shapes we accept, read field by field so that every
//! error names the field, and the error body the OpenAI clients expect.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use candle_engine::chat::Message;
use candle_engine::sampling::SamplingParams;
use serde_json::{json, Map, Value};

/// An error response: HTTP status and OpenAI-style body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
        }
    }

    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // A step takes well under a second; a slot frees soon.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// Fields both endpoints share.
#[derive(Debug)]
pub struct Common {
    pub model: String,
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    /// Log-probabilities of each token and of this many alternatives.
    pub logprobs: Option<usize>,
}

/// What the prompt is made of.
#[derive(Debug)]
pub enum Prompt {
    Chat(Vec<Message>),
    Text(String),
}

#[derive(Debug)]
pub struct Request {
    pub common: Common,
    pub prompt: Prompt,
}

/// Fields clients send that change nothing here.
const IGNORED: &[&str] = &["user", "metadata", "store", "service_tier"];

/// Fields we do not implement, and why they cannot be ignored.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("tools", "tool calls are not supported"),
    ("tool_choice", "tool calls are not supported"),
    ("functions", "function calls are not supported"),
    ("function_call", "function calls are not supported"),
    ("parallel_tool_calls", "tool calls are not supported"),
    ("response_format", "structured output is not supported"),
    ("logit_bias", "logit bias is not supported"),
    ("audio", "audio output is not supported"),
    ("modalities", "only text output is supported"),
    ("prediction", "predicted outputs are not supported"),
    ("reasoning_effort", "reasoning models are not supported"),
    ("web_search_options", "web search is not supported"),
    ("best_of", "best_of is not supported; use n"),
    ("echo", "echo is not supported"),
    ("suffix", "suffix (fill-in-the-middle) is not supported"),
];

/// Fields that are accepted only at their neutral value.
const NEUTRAL_PENALTIES: &[&str] = &["presence_penalty", "frequency_penalty"];

/// A request body's fields, taken one by one so that every error names its
/// field and whatever is left over can be refused as unknown.
pub struct Fields(pub Map<String, Value>);

impl Fields {
    /// The fields of a JSON object body.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        match value {
            Value::Object(map) => Ok(Self(map)),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "the body must be a JSON object",
            )),
        }
    }

    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name).filter(|v| !v.is_null())
    }

    fn number(&mut self, name: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
        let Some(v) = self.take(name) else {
            return Ok(None);
        };
        match v.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::invalid(
                name,
                format!("`{name}` must be a number in [{min}, {max}], got {v}"),
            )),
        }
    }

    fn integer(&mut self, name: &str, min: u64) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.take(name) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(x) if x >= min => Ok(Some(x)),
            _ => Err(ApiError::invalid(
                name,
                format!("`{name}` must be an integer >= {min}, got {v}"),
            )),
        }
    }

    /// A string field; `None` when absent or null.
    pub fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(ApiError::invalid(
                name,
                format!("`{name}` must be a string, got {v}"),
            )),
        }
    }

    pub fn required_string(&mut self, name: &str) -> Result<String, ApiError> {
        self.string(name)?
            .ok_or_else(|| ApiError::invalid(name, format!("`{name}` is required")))
    }

    /// Fails naming the first field nobody took.
    pub fn refuse_unknown(&self) -> Result<(), ApiError> {
        match self.0.keys().next() {
            Some(name) => Err(ApiError::invalid(
                name.clone(),
                format!("unknown field `{name}`"),
            )),
            None => Ok(()),
        }
    }

    pub fn boolean(&mut self, name: &str) -> Result<bool, ApiError> {
        self.boolean_or(name, false)
    }

    pub fn boolean_or(&mut self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.take(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(v) => Err(ApiError::invalid(
                name,
                format!("`{name}` must be a boolean, got {v}"),
            )),
        }
    }
}

/// Reads a chat (`chat == true`) or text completion request.
pub fn parse(body: &[u8], chat: bool) -> Result<Request, ApiError> {
    let mut f = Fields::parse(body)?;
    for &(name, why) in UNSUPPORTED {
        if f.0
            .get(name)
            .is_some_and(|v| !v.is_null() && *v != json!(false))
        {
            return Err(ApiError::invalid(name, format!("`{name}`: {why}")));
        }
        f.0.remove(name);
    }
    for &name in NEUTRAL_PENALTIES {
        if f.number(name, -2.0, 2.0)?.is_some_and(|x| x != 0.0) {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` is not supported; only 0 is accepted (use repetition_penalty)"),
            ));
        }
    }
    let model = f.required_string("model")?;
    let prompt = if chat {
        Prompt::Chat(messages(f.take("messages"))?)
    } else {
        Prompt::Text(text_prompt(f.take("prompt"))?)
    };
    let max_tokens = match (
        f.integer("max_tokens", 0)?,
        f.integer("max_completion_tokens", 0)?,
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "max_completion_tokens",
                "give `max_tokens` or `max_completion_tokens`, not both",
            ))
        }
        (a, b) => a.or(b).map(|n| n as usize),
    };
    let defaults = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: f.number("temperature", 0.0, 2.0)?.map_or(1.0, |x| x as f32),
        top_p: f
            .number("top_p", f64::MIN_POSITIVE, 1.0)?
            .map_or(1.0, |x| x as f32),
        top_k: f.integer("top_k", 0)?.map_or(0, |k| k as usize),
        min_p: f.number("min_p", 0.0, 0.999_999)?.map_or(0.0, |x| x as f32),
        repetition_penalty: f
            .number("repetition_penalty", f64::MIN_POSITIVE, 10.0)?
            .map_or(1.0, |x| x as f32),
        seed: match f.take("seed") {
            None => rand_seed(),
            Some(v) => v
                .as_i64()
                .map(|s| s as u64)
                .or_else(|| v.as_u64())
                .ok_or_else(|| {
                    ApiError::invalid("seed", format!("`seed` must be an integer, got {v}"))
                })?,
        },
        ..defaults
    };
    let stop = match f.take("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) if items.len() <= 4 => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                v => Err(ApiError::invalid(
                    "stop",
                    format!("`stop` entries must be strings, got {v}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(ApiError::invalid(
                "stop",
                format!("`stop` must be a string or an array of at most 4 strings, got {v}"),
            ))
        }
    };
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "`stop` strings must not be empty",
        ));
    }
    let n = f.integer("n", 1)?.map_or(1, |n| n as usize);
    if n > 16 {
        return Err(ApiError::invalid(
            "n",
            format!("`n` must be at most 16, got {n}"),
        ));
    }
    let logprobs = if chat {
        let wanted = f.boolean("logprobs")?;
        match f.integer("top_logprobs", 0)? {
            Some(k) if k > 20 => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    format!("`top_logprobs` must be at most 20, got {k}"),
                ))
            }
            Some(_) if !wanted => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "`top_logprobs` needs `logprobs: true`",
                ))
            }
            k => wanted.then(|| k.unwrap_or(0) as usize),
        }
    } else {
        match f.integer("logprobs", 0)? {
            Some(k) if k > 5 => {
                return Err(ApiError::invalid(
                    "logprobs",
                    format!("`logprobs` must be at most 5, got {k}"),
                ))
            }
            k => k.map(|k| k as usize),
        }
    };
    let stream = f.boolean("stream")?;
    let include_usage = match f.take("stream_options") {
        None => false,
        Some(Value::Object(mut o)) => {
            let usage = match o.remove("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => b,
                Some(v) => {
                    return Err(ApiError::invalid(
                        "stream_options.include_usage",
                        format!("`stream_options.include_usage` must be a boolean, got {v}"),
                    ))
                }
            };
            if let Some(k) = o.keys().next() {
                return Err(ApiError::invalid(
                    format!("stream_options.{k}"),
                    format!("`stream_options.{k}` is not supported"),
                ));
            }
            if !stream {
                return Err(ApiError::invalid(
                    "stream_options",
                    "`stream_options` is only allowed with `stream: true`",
                ));
            }
            usage
        }
        Some(v) => {
            return Err(ApiError::invalid(
                "stream_options",
                format!("`stream_options` must be an object, got {v}"),
            ))
        }
    };
    for name in IGNORED {
        f.0.remove(*name);
    }
    f.refuse_unknown()?;
    Ok(Request {
        common: Common {
            model,
            max_tokens,
            sampling,
            stop,
            n,
            stream,
            include_usage,
            logprobs,
        },
        prompt,
    })
}

/// A seed for requests that give none: their outputs differ from run to run,
/// as the OpenAI API's do.
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn messages(value: Option<Value>) -> Result<Vec<Message>, ApiError> {
    let Some(Value::Array(items)) = value else {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must be a non-empty array",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must be a non-empty array",
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| format!("messages[{i}].{name}");
            let Value::Object(mut m) = item else {
                return Err(ApiError::invalid(
                    format!("messages[{i}]"),
                    format!("`messages[{i}]` must be an object"),
                ));
            };
            let role = match m.remove("role") {
                Some(Value::String(r))
                    if ["system", "developer", "user", "assistant"].contains(&r.as_str()) =>
                {
                    if r == "developer" {
                        "system".to_string()
                    } else {
                        r
                    }
                }
                Some(v) => {
                    return Err(ApiError::invalid(
                        field("role"),
                        format!(
                            "`{}` must be system, developer, user or assistant, got {v}",
                            field("role")
                        ),
                    ))
                }
                None => {
                    return Err(ApiError::invalid(
                        field("role"),
                        format!("`{}` is required", field("role")),
                    ))
                }
            };
            let content = match m.remove("content") {
                Some(Value::String(s)) => s,
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.into_iter().enumerate() {
                        let name = format!("messages[{i}].content[{j}]");
                        match (
                            part.get("type").and_then(Value::as_str),
                            part.get("text").and_then(Value::as_str),
                        ) {
                            (Some("text"), Some(t)) => text.push_str(t),
                            (Some(kind), _) if kind != "text" => {
                                return Err(ApiError::invalid(
                                    format!("{name}.type"),
                                    format!(
                                        "`{name}.type` is `{kind}`; only text parts are supported"
                                    ),
                                ))
                            }
                            _ => {
                                return Err(ApiError::invalid(
                                    name.clone(),
                                    format!(
                                        "`{name}` must be {{\"type\": \"text\", \"text\": ...}}"
                                    ),
                                ))
                            }
                        }
                    }
                    text
                }
                Some(v) => {
                    return Err(ApiError::invalid(
                        field("content"),
                        format!(
                            "`{}` must be a string or an array of text parts, got {v}",
                            field("content")
                        ),
                    ))
                }
                None => {
                    return Err(ApiError::invalid(
                        field("content"),
                        format!("`{}` is required", field("content")),
                    ))
                }
            };
            m.remove("name");
            if let Some(k) = m.keys().next() {
                return Err(ApiError::invalid(
                    field(k),
                    format!("`{}` is not supported", field(k)),
                ));
            }
            Ok(Message { role, content })
        })
        .collect()
}

fn text_prompt(value: Option<Value>) -> Result<String, ApiError> {
    match value {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Array(mut items)) if items.len() == 1 && items[0].is_string() => {
            Ok(items.remove(0).as_str().unwrap_or_default().to_string())
        }
        Some(v) => Err(ApiError::invalid(
            "prompt",
            format!("`prompt` must be a string (or an array of one string), got {v}"),
        )),
        None => Err(ApiError::invalid("prompt", "`prompt` is required")),
    }
}
