//! `@hanzoai/candle-wasm`: the Hanzo Candle engine compiled to
//! `wasm32-unknown-unknown`, with HIP-19's JavaScript API.
//!
//! ```js
//! import init, { Model } from '@hanzoai/candle-wasm';
//! await init();
//! const model = new Model(new Uint8Array(await (await fetch(url)).arrayBuffer()));
//! const output = model.generate(model.encode("The capital of France is"), { max_tokens: 32 });
//! console.log(model.decode(output));
//! ```
//!
//! Every failure reaches JavaScript as an `Error` whose message names what
//! was wrong; nothing traps.

mod buffer;
mod options;
pub mod session;

pub use buffer::{BufferError, ChunkedBuffer};

use candle_engine::scheduler::{FinishReason, Generation, RequestId};
use options::{ChatMessage, GenerateOptions, LoadOptions};
use session::{Session, Step};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
export interface LoadOptions {
  /** KV cache positions (default: the trained context, at most 4096). */
  context?: number;
}
export interface GenerateOptions {
  /** Most tokens to generate (default 128). */
  max_tokens?: number;
  /** 0 (the default) is greedy decoding. */
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  repetition_penalty?: number;
  repeat_last_n?: number;
  seed?: number;
  /** Generation ends before the first of these strings. */
  stop?: string[];
  /** Report each generated token's log-probability and this many most
   * likely alternatives (0 to 20) in the stream's steps. */
  logprobs?: number;
}
export interface ChatMessage { role: string; content: string; }
export interface ModelInfo {
  architecture: string;
  context: number;
  trained_context: number;
  vocab_size: number;
  layers: number;
  hidden_size: number;
  has_chat_template: boolean;
  bos: number | null;
  eos: number[];
  kv_cache_bytes: number;
}
export interface StreamStep {
  done: boolean;
  text: string;
  /** True on the step that finished the prompt and sampled the first token. */
  prompt_processed: boolean;
  /** The step's token, when the options asked for `logprobs`. */
  logprobs: TokenLogprob[];
}
export interface TokenLogprob {
  token: number;
  logprob: number;
  /** [token, logprob] pairs, most likely first. */
  top: [number, number][];
}
export interface GenerationResult {
  tokens: Uint32Array;
  text: string;
  finish_reason: "eos" | "length" | "stop" | "cancelled";
  prompt_tokens: number;
  cached_tokens: number;
}
"#;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(typescript_type = "LoadOptions")]
    pub type JsLoadOptions;
    #[wasm_bindgen(typescript_type = "GenerateOptions")]
    pub type JsGenerateOptions;
    #[wasm_bindgen(typescript_type = "ChatMessage[]")]
    pub type JsChatMessages;
    #[wasm_bindgen(typescript_type = "ModelInfo")]
    pub type JsModelInfo;
    #[wasm_bindgen(typescript_type = "StreamStep")]
    pub type JsStreamStep;
    #[wasm_bindgen(typescript_type = "GenerationResult | undefined")]
    pub type JsGenerationResult;
}

fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_error)
}

type Shared = Rc<RefCell<Session>>;

fn borrow(session: &Shared) -> Result<std::cell::RefMut<'_, Session>, JsError> {
    session
        .try_borrow_mut()
        .map_err(|_| JsError::new("the model is busy with another call"))
}

/// A loaded GGUF model: tokenizer, chat template, weights and KV cache.
#[wasm_bindgen]
pub struct Model {
    session: Shared,
}

#[wasm_bindgen]
impl Model {
    /// Loads a GGUF file from its bytes (copied once into wasm memory; for
    /// large files use `ModelLoader`, which never holds them twice).
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: Vec<u8>, options: Option<JsLoadOptions>) -> Result<Model, JsError> {
        let options = LoadOptions::from_js(options.map(JsValue::from))?;
        Self::load(bytes, options)
    }

    fn load(bytes: Vec<u8>, options: LoadOptions) -> Result<Model, JsError> {
        let session = Session::load(bytes, options.context).map_err(js_error)?;
        Ok(Model {
            session: Rc::new(RefCell::new(session)),
        })
    }

    /// Architecture, context, vocabulary and chat template of the model.
    #[wasm_bindgen(getter)]
    pub fn info(&self) -> Result<JsModelInfo, JsError> {
        Ok(to_js(&borrow(&self.session)?.info())?.unchecked_into())
    }

    /// Token ids of `text`, with the BOS token the model asks for unless
    /// `add_special` is false.
    pub fn encode(&self, text: &str, add_special: Option<bool>) -> Result<Vec<u32>, JsError> {
        borrow(&self.session)?
            .model()
            .tokenizer
            .encode(text, add_special.unwrap_or(true))
            .map_err(js_error)
    }

    /// The text of `ids`, without special tokens unless `skip_special` is
    /// false.
    pub fn decode(&self, ids: Vec<u32>, skip_special: Option<bool>) -> Result<String, JsError> {
        borrow(&self.session)?
            .model()
            .tokenizer
            .decode(&ids, skip_special.unwrap_or(true))
            .map_err(js_error)
    }

    /// Generates after `tokens` and returns the new token ids (without the
    /// end-of-sequence token).
    pub fn generate(
        &self,
        tokens: Vec<u32>,
        options: Option<JsGenerateOptions>,
    ) -> Result<Vec<u32>, JsError> {
        let params = GenerateOptions::from_js(options.map(JsValue::from))?;
        let mut session = borrow(&self.session)?;
        let id = session.start(tokens, params).map_err(js_error)?;
        let generation = session.finish(id).map_err(js_error)?;
        Ok(generation.map(|g| g.tokens).unwrap_or_default())
    }

    /// A generation after `tokens` to run step by step: call `next()` until
    /// it reports `done`, or `cancel()` between steps.
    pub fn stream(
        &self,
        tokens: Vec<u32>,
        options: Option<JsGenerateOptions>,
    ) -> Result<TokenStream, JsError> {
        let params = GenerateOptions::from_js(options.map(JsValue::from))?;
        let id = borrow(&self.session)?
            .start(tokens, params)
            .map_err(js_error)?;
        Ok(TokenStream {
            session: Rc::downgrade(&self.session),
            id,
            outcome: None,
        })
    }

    /// The assistant's reply to `messages` (`{role, content}` objects),
    /// prompted with the model's own chat template.
    pub fn chat(
        &self,
        messages: JsChatMessages,
        options: Option<JsGenerateOptions>,
    ) -> Result<String, JsError> {
        let stream = self.chat_stream(messages, options)?;
        let mut session = borrow(&self.session)?;
        let generation = session.finish(stream.id).map_err(js_error)?;
        Ok(generation.map(|g| g.text).unwrap_or_default())
    }

    /// [`Model::chat`] step by step, as [`Model::stream`].
    #[wasm_bindgen(js_name = chatStream)]
    pub fn chat_stream(
        &self,
        messages: JsChatMessages,
        options: Option<JsGenerateOptions>,
    ) -> Result<TokenStream, JsError> {
        let messages = ChatMessage::list_from_js(messages.into())?;
        let prompt = borrow(&self.session)?
            .chat_prompt(&messages)
            .map_err(js_error)?;
        self.stream(prompt, options)
    }
}

/// A running generation. `next()` runs one forward step; streams are
/// cancelled by `cancel()`, by starting another generation on the same
/// model, or by freeing the model.
#[wasm_bindgen]
pub struct TokenStream {
    session: Weak<RefCell<Session>>,
    id: RequestId,
    /// Set once the stream is done.
    outcome: Option<Outcome>,
}

enum Outcome {
    Finished(Generation),
    Cancelled,
}

#[wasm_bindgen]
impl TokenStream {
    /// One step: `{done, text, prompt_processed, logprobs}` with the text that
    /// became final in it (empty while the prompt is processed; the last
    /// step, `done`, may still bring text).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<JsStreamStep, JsError> {
        #[derive(serde::Serialize)]
        struct StepOut<'a> {
            done: bool,
            text: &'a str,
            prompt_processed: bool,
            logprobs: Vec<LogprobOut<'a>>,
        }
        #[derive(serde::Serialize)]
        struct LogprobOut<'a> {
            token: u32,
            logprob: f32,
            top: &'a [(u32, f32)],
        }
        if self.outcome.is_some() {
            return Ok(to_js(&StepOut {
                done: true,
                text: "",
                prompt_processed: false,
                logprobs: Vec::new(),
            })?
            .unchecked_into());
        }
        let session = self
            .session
            .upgrade()
            .ok_or_else(|| JsError::new("the model of this stream was freed"))?;
        let step = borrow(&session)?.step(self.id).map_err(js_error)?;
        let (done, text, prompt_processed, logprobs) = match step {
            Step::Text {
                text,
                prompt_processed,
                logprobs,
            } => (false, text, prompt_processed, logprobs),
            Step::Done {
                text,
                logprobs,
                generation,
            } => {
                self.outcome = Some(Outcome::Finished(generation));
                (true, text, false, logprobs)
            }
            Step::Cancelled => {
                self.outcome = Some(Outcome::Cancelled);
                (true, String::new(), false, Vec::new())
            }
        };
        Ok(to_js(&StepOut {
            done,
            text: &text,
            prompt_processed,
            logprobs: logprobs
                .iter()
                .map(|l| LogprobOut {
                    token: l.token,
                    logprob: l.logprob,
                    top: &l.top,
                })
                .collect(),
        })?
        .unchecked_into())
    }

    /// Stops the generation between tokens.
    pub fn cancel(&mut self) {
        if self.outcome.is_none() {
            if let Some(session) = self.session.upgrade() {
                if let Ok(mut session) = session.try_borrow_mut() {
                    session.cancel(self.id);
                }
            }
            self.outcome = Some(Outcome::Cancelled);
        }
    }

    /// After `done`: the whole generation (for a cancelled one, empty with
    /// `finish_reason: "cancelled"`); before, `undefined`.
    #[wasm_bindgen(getter)]
    pub fn result(&self) -> Result<JsGenerationResult, JsError> {
        #[derive(serde::Serialize)]
        struct ResultOut<'a> {
            text: &'a str,
            finish_reason: &'a str,
            prompt_tokens: usize,
            cached_tokens: usize,
        }
        let (out, tokens) = match &self.outcome {
            None => return Ok(JsValue::UNDEFINED.unchecked_into()),
            Some(Outcome::Cancelled) => (
                ResultOut {
                    text: "",
                    finish_reason: "cancelled",
                    prompt_tokens: 0,
                    cached_tokens: 0,
                },
                &[][..],
            ),
            Some(Outcome::Finished(g)) => (
                ResultOut {
                    text: &g.text,
                    finish_reason: match g.finish {
                        FinishReason::Eos => "eos",
                        FinishReason::Length => "length",
                        FinishReason::Stop => "stop",
                    },
                    prompt_tokens: g.prompt_tokens,
                    cached_tokens: g.cached_tokens,
                },
                &g.tokens[..],
            ),
        };
        let out = to_js(&out)?;
        let tokens = js_sys::Uint32Array::from(tokens);
        js_sys::Reflect::set(&out, &"tokens".into(), &tokens)
            .map_err(|_| JsError::new("cannot build the generation result"))?;
        Ok(out.unchecked_into())
    }
}

/// Loads a model arriving in chunks into one buffer reserved for its size:
/// `new ModelLoader(total)`, `push(chunk)` for each chunk, `finish()`.
#[wasm_bindgen]
pub struct ModelLoader {
    buffer: Option<ChunkedBuffer>,
}

#[wasm_bindgen]
impl ModelLoader {
    /// Reserves `total_bytes` of wasm memory, or fails naming the size.
    #[wasm_bindgen(constructor)]
    pub fn new(total_bytes: f64) -> Result<ModelLoader, JsError> {
        if !(total_bytes.is_finite() && total_bytes >= 0.0 && total_bytes <= usize::MAX as f64)
            || total_bytes.fract() != 0.0
        {
            return Err(JsError::new(&format!(
                "total_bytes must be a whole number of bytes that fits wasm32 memory, got {total_bytes}"
            )));
        }
        let buffer = ChunkedBuffer::new(total_bytes as usize).map_err(js_error)?;
        Ok(ModelLoader {
            buffer: Some(buffer),
        })
    }

    fn buffer(&mut self) -> Result<&mut ChunkedBuffer, JsError> {
        self.buffer
            .as_mut()
            .ok_or_else(|| JsError::new("this loader has already finished"))
    }

    /// Appends the next chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), JsError> {
        self.buffer()?.push(chunk).map_err(js_error)
    }

    /// Bytes received so far.
    #[wasm_bindgen(getter)]
    pub fn received(&self) -> f64 {
        self.buffer.as_ref().map_or(0.0, |b| b.received() as f64)
    }

    /// The model, once every announced byte has arrived.
    pub fn finish(&mut self, options: Option<JsLoadOptions>) -> Result<Model, JsError> {
        let options = LoadOptions::from_js(options.map(JsValue::from))?;
        let buffer = self
            .buffer
            .take()
            .ok_or_else(|| JsError::new("this loader has already finished"))?;
        Model::load(buffer.finish().map_err(js_error)?, options)
    }
}
