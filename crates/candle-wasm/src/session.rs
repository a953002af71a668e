//! One loaded model with its KV cache and a scheduler that outlives single
//! calls, so that generation can be driven one step at a time from
//! JavaScript (streaming, aborting between tokens) and a chat's next turn
//! continues from the cache entries its previous turn left.

use candle_engine::chat::Message;
use candle_engine::gguf::GgufModel;
use candle_engine::loader::Model;
use candle_engine::scheduler::{
    Generation, GenerationParams, RequestId, Scheduler, SchedulerOptions, StepEvent, TokenLogprob,
};
use candle_engine::{CacheOptions, Error, KvCache, KvPrecision};
use candle_quant::gguf::GgufFile;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;

/// The engine's errors, boxed: they only travel on to JavaScript as text.
pub type Result<T> = std::result::Result<T, Box<Error>>;

/// Prompt tokens one forward step takes: the activations of a step grow
/// with it, and wasm32 memory is scarce.
const STEP_TOKENS: usize = 256;

/// What a loaded model is, for the page to show.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Info {
    /// `general.architecture`.
    pub architecture: String,
    /// The context this model was loaded for (KV cache positions).
    pub context: usize,
    /// The context the model was trained for.
    pub trained_context: usize,
    pub vocab_size: usize,
    pub layers: usize,
    pub hidden_size: usize,
    /// Whether the GGUF has its own `tokenizer.chat_template`.
    pub has_chat_template: bool,
    pub bos: Option<u32>,
    /// Tokens that end a generation (the file's EOS and end-of-turn tokens).
    pub eos: Vec<u32>,
    /// Bytes of the f16 KV cache.
    pub kv_cache_bytes: usize,
}

/// The outcome of one [`Session::step`].
#[derive(Debug)]
pub enum Step {
    /// New text; empty while the prompt is still being processed or while
    /// text that may begin a stop string is held back. `prompt_processed`
    /// marks the step that finished the prompt (and sampled the first
    /// token), where prefill ends and decoding begins.
    /// `logprobs`: the step's token, when the generation asked for them.
    Text {
        text: String,
        prompt_processed: bool,
        logprobs: Vec<TokenLogprob>,
    },
    /// The generation ended; `text` is what the last step added (the last
    /// token's text, or held-back text that turned out not to be a stop).
    Done {
        text: String,
        logprobs: Vec<TokenLogprob>,
        generation: Generation,
    },
    /// The generation was cancelled, or replaced by a newer one.
    Cancelled,
}

/// What the scheduler borrows: kept at a fixed heap address for the
/// scheduler's whole life.
struct Parts {
    model: Model,
    cache: KvCache,
}

/// A model, its cache and the scheduler running over them. One generation
/// runs at a time; starting another cancels the one before.
pub struct Session {
    /// Borrows `parts`; dropped before them (see `Drop`).
    scheduler: ManuallyDrop<Scheduler<'static>>,
    parts: NonNull<Parts>,
    architecture: String,
    active: Option<RequestId>,
}

impl Session {
    /// Validates and loads a GGUF file held in `bytes` (kept, not copied:
    /// the weights are used where they lie) for up to `context` positions
    /// (default: the engine's, the trained context capped at 4096).
    pub fn load(bytes: Vec<u8>, context: Option<usize>) -> Result<Self> {
        let file = GgufModel::new(GgufFile::from_vec(bytes).map_err(Error::from)?);
        let architecture = file
            .file()
            .get_str("general.architecture")
            .map_err(Error::from)?
            .to_string();
        let model = Model::from_gguf(file, context)?;
        let cache = model.decoder.new_cache(CacheOptions {
            slots: 1,
            max_context: None,
            max_step_tokens: STEP_TOKENS,
            precision: KvPrecision::F16,
        })?;
        let parts = NonNull::from(Box::leak(Box::new(Parts { model, cache })));
        // SAFETY: `parts` is a live heap allocation that is neither moved nor
        // freed before `Drop` has dropped the scheduler; the scheduler holds
        // the only mutable reference to the cache, and the session only ever
        // takes shared references to `model` beside it.
        let (model, cache): (&'static Model, &'static mut KvCache) =
            unsafe { (&(*parts.as_ptr()).model, &mut (*parts.as_ptr()).cache) };
        let scheduler = Scheduler::new(
            &model.decoder,
            &model.tokenizer,
            cache,
            SchedulerOptions {
                step_tokens: STEP_TOKENS,
            },
        );
        let scheduler = match scheduler {
            Ok(scheduler) => scheduler,
            Err(e) => {
                // SAFETY: nothing borrows `parts` any more.
                drop(unsafe { Box::from_raw(parts.as_ptr()) });
                return Err(e.into());
            }
        };
        Ok(Self {
            scheduler: ManuallyDrop::new(scheduler),
            parts,
            architecture,
            active: None,
        })
    }

    pub fn model(&self) -> &Model {
        // SAFETY: see `load`; `model` is only ever shared.
        unsafe { &(*self.parts.as_ptr()).model }
    }

    fn scheduler(&mut self) -> &mut Scheduler<'static> {
        &mut self.scheduler
    }

    pub fn info(&self) -> Info {
        let model = self.model();
        let config = model.decoder.config();
        let per_position = config.num_layers * 2 * config.num_kv_heads * config.head_dim * 2;
        Info {
            architecture: self.architecture.clone(),
            context: model.max_context,
            trained_context: config.max_position_embeddings,
            vocab_size: config.vocab_size,
            layers: config.num_layers,
            hidden_size: config.hidden_size,
            has_chat_template: model.chat.is_model_template,
            bos: model.tokenizer.bos(),
            eos: model.tokenizer.eos().to_vec(),
            kv_cache_bytes: per_position * model.max_context,
        }
    }

    /// The prompt tokens for a chat, rendered with the model's template
    /// (or the engine's fallback when the file has none).
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let model = self.model();
        let text = model.chat.render(messages, true)?;
        Ok(model.tokenizer.encode(&text, true)?)
    }

    /// Starts generating after `prompt`, cancelling any generation still
    /// running. Fails, naming the problem, for an empty prompt, a token
    /// outside the vocabulary, a prompt and `max_tokens` beyond the context
    /// or an invalid sampling parameter.
    pub fn start(&mut self, prompt: Vec<u32>, params: GenerationParams) -> Result<RequestId> {
        if let Some(previous) = self.active.take() {
            self.scheduler().cancel(previous);
        }
        let id = self.scheduler().add(prompt, params)?;
        self.active = Some(id);
        Ok(id)
    }

    /// Runs one forward step of generation `id`: a prompt chunk, or one
    /// new token.
    pub fn step(&mut self, id: RequestId) -> Result<Step> {
        if self.active != Some(id) {
            return Ok(Step::Cancelled);
        }
        let mut text = String::new();
        let mut prompt_processed = false;
        let mut logprobs = Vec::new();
        for event in self.scheduler().step() {
            match event {
                StepEvent::Text { text: piece, .. } => text.push_str(&piece),
                StepEvent::PromptProcessed { .. } => prompt_processed = true,
                StepEvent::Logprob { logprob, .. } => logprobs.push(logprob),
                StepEvent::Finished { generation, .. } => {
                    self.active = None;
                    return Ok(Step::Done {
                        text,
                        logprobs,
                        generation,
                    });
                }
                StepEvent::Failed { error, .. } => {
                    self.active = None;
                    return Err(Error::StepFailed(error).into());
                }
            }
        }
        Ok(Step::Text {
            text,
            prompt_processed,
            logprobs,
        })
    }

    /// Runs generation `id` to its end.
    pub fn finish(&mut self, id: RequestId) -> Result<Option<Generation>> {
        loop {
            match self.step(id)? {
                Step::Text { .. } => {}
                Step::Done { generation, .. } => return Ok(Some(generation)),
                Step::Cancelled => return Ok(None),
            }
        }
    }

    /// Stops generation `id` between tokens; its cache entries stay for a
    /// next prompt that starts the same way.
    pub fn cancel(&mut self, id: RequestId) {
        if self.active == Some(id) {
            self.active = None;
            self.scheduler().cancel(id);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the scheduler is dropped once, here, and then nothing
        // borrows `parts` any more.
        unsafe {
            ManuallyDrop::drop(&mut self.scheduler);
            drop(Box::from_raw(self.parts.as_ptr()));
        }
    }
}
