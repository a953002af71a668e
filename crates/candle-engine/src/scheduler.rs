//! Continuous batching: requests join and leave a running batch between
//! forward steps.
//!
//! Each [`Scheduler::step`] runs one flat [`Batch`]: one decode token for
//! every sequence that is generating, then prompt chunks of the sequences
//! still prefilling, oldest first, until the step's token budget is spent.
//! A request waits only for a free KV slot; a finished, cancelled or failed
//! one frees its slot at once. A free slot keeps its entries: a new request
//! whose prompt begins with the tokens it holds (the next turn of a chat)
//! continues from them instead of computing them again. Each request owns its sampler (seeded by the
//! request) and its stop strings, and every token's computation reads only
//! its own sequence's cache entries, so a request's output does not depend
//! on its slot or on what else runs beside it.

use crate::kv_cache::KvCache;
use crate::model::{Batch, Decoder};
use crate::perplexity::PositionRecord;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{TextStream, Tokenizer};
use crate::{Error, Result};
use std::collections::VecDeque;

/// What to generate for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Report each generated token's log-probability and those of this many
    /// most likely alternatives (`None`: report nothing).
    pub logprobs: Option<usize>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            logprobs: None,
        }
    }
}

/// A generated token's log-probability under the model (its logits before
/// temperature, penalties and truncation), with the most likely tokens'.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// Most likely first.
    pub top: Vec<(u32, f32)>,
}

/// Most alternatives a request may ask for per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_tokens` were generated.
    Length,
    /// A stop string appeared.
    Stop,
}

/// The outcome for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values were reused from an earlier
    /// request instead of computed.
    pub cached_tokens: usize,
}

/// Identifies a request for the lifetime of its scheduler.
pub type RequestId = u64;

/// What a step reports, per request, in the order it happened.
#[derive(Debug)]
pub enum StepEvent {
    /// The whole prompt is in the cache; the next events are generated text.
    PromptProcessed {
        id: RequestId,
        tokens: usize,
        cached: usize,
    },
    /// New text. Text that might be the beginning of a stop string is held
    /// back until it is known not to be, so nothing after a stop is sent.
    Text { id: RequestId, text: String },
    /// A token was generated, for a request that asked for log-probabilities;
    /// it comes before the token's text.
    Logprob {
        id: RequestId,
        logprob: TokenLogprob,
    },
    /// The request is done and its slot is free.
    Finished {
        id: RequestId,
        generation: Generation,
    },
    /// The request could not continue (the forward step failed); its slot is
    /// free.
    Failed { id: RequestId, error: String },
}

/// Settings of a [`Scheduler`].
#[derive(Clone, Copy, Debug)]
pub struct SchedulerOptions {
    /// Most tokens one forward step runs, decode and prompt tokens together:
    /// larger steps prefill faster, smaller ones keep the running streams'
    /// inter-token latency low while a long prompt arrives. At least the
    /// cache's slot count, so that every running sequence decodes each step.
    pub step_tokens: usize,
}

struct Sequence {
    id: RequestId,
    params: GenerationParams,
    sampler: Sampler,
    slot: Option<usize>,
    /// Prompt and generated tokens.
    history: Vec<u32>,
    prompt_tokens: usize,
    /// Tokens of `history` already in the cache.
    processed: usize,
    /// Prompt tokens found in the cache when the request got its slot.
    cached: usize,
    generated: Vec<u32>,
    stream: TextStream,
    /// Decoded text not yet emitted: it might be the start of a stop string.
    pending: String,
    text: String,
}

impl Sequence {
    fn prefilling(&self) -> bool {
        self.processed < self.prompt_tokens
    }
}

/// Runs many requests through one decoder and KV cache, one slot each.
pub struct Scheduler<'a> {
    decoder: &'a Decoder,
    tokenizer: &'a Tokenizer,
    cache: &'a mut KvCache,
    step_tokens: usize,
    next_id: RequestId,
    /// Requests waiting for a slot, oldest first.
    waiting: VecDeque<Sequence>,
    /// Requests holding a slot, oldest first.
    running: Vec<Sequence>,
    /// For each free slot, the tokens its cache entries hold (a finished
    /// request's prompt and output), which a new request whose prompt
    /// starts the same way continues from.
    held: Vec<Vec<u32>>,
}

impl<'a> Scheduler<'a> {
    pub fn new(
        decoder: &'a Decoder,
        tokenizer: &'a Tokenizer,
        cache: &'a mut KvCache,
        options: SchedulerOptions,
    ) -> Result<Self> {
        if options.step_tokens < cache.slots() {
            return Err(Error::InvalidBatch(format!(
                "a step budget of {} tokens cannot decode all {} slots at once; use at least {}",
                options.step_tokens,
                cache.slots(),
                cache.slots()
            )));
        }
        Ok(Self {
            held: vec![Vec::new(); cache.slots()],
            cache,
            decoder,
            tokenizer,
            step_tokens: options.step_tokens,
            next_id: 0,
            waiting: VecDeque::new(),
            running: Vec::new(),
        })
    }

    /// Queues a request; it joins the batch at the next step with a free
    /// slot. Fails, naming the problem, when the prompt is empty, a sampling
    /// parameter is invalid, or the prompt and `max_tokens` do not fit the
    /// context.
    pub fn add(&mut self, prompt: Vec<u32>, params: GenerationParams) -> Result<RequestId> {
        if prompt.is_empty() {
            return Err(Error::InvalidBatch("the prompt is empty".into()));
        }
        if let Some(&bad) = prompt
            .iter()
            .find(|&&t| t as usize >= self.decoder.config().vocab_size)
        {
            return Err(Error::InvalidBatch(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.decoder.config().vocab_size
            )));
        }
        // The last generated token is sampled but never written to the cache.
        let needed = prompt.len() + params.max_tokens.max(1) - 1;
        if needed > self.cache.max_context() {
            return Err(Error::ContextExceeded {
                needed,
                max_context: self.cache.max_context(),
            });
        }
        if params.logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
            return Err(Error::InvalidBatch(format!(
                "at most {MAX_TOP_LOGPROBS} alternatives per token can be reported"
            )));
        }
        let sampler = Sampler::new(params.sampling.clone())?;
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back(Sequence {
            id,
            params,
            sampler,
            slot: None,
            prompt_tokens: prompt.len(),
            history: prompt,
            processed: 0,
            cached: 0,
            generated: Vec::new(),
            stream: TextStream::default(),
            pending: String::new(),
            text: String::new(),
        });
        Ok(id)
    }

    /// Drops request `id`, freeing its slot at once. Returns whether it was
    /// still waiting or running.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            self.waiting.remove(i);
            return true;
        }
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let seq = self.running.remove(i);
            self.release(&seq);
            return true;
        }
        false
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Requests holding a slot.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Whether there is nothing to run.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Admits waiting requests into free slots, runs one forward step and
    /// returns what happened. Does nothing when idle.
    pub fn step(&mut self) -> Vec<StepEvent> {
        self.admit();
        let mut events = Vec::new();
        if self.running.is_empty() {
            return events;
        }
        let (batch, rows) = self.plan();
        let logits = self
            .decoder
            .forward(&batch, self.cache)
            .and_then(|l| Ok(l.to_vec2::<f32>()?));
        let logits = match logits {
            Ok(logits) => logits,
            Err(e) => {
                // The step's cache contents are unknown: fail its sequences.
                let error = e.to_string();
                let failed: Vec<RequestId> = rows.iter().map(|r| r.0).collect();
                let held = &mut self.held;
                self.running.retain(|s| {
                    let keep = !failed.contains(&s.id);
                    if !keep {
                        held[s.slot.expect("running sequences hold a slot")].clear();
                        events.push(StepEvent::Failed {
                            id: s.id,
                            error: error.clone(),
                        });
                    }
                    keep
                });
                return events;
            }
        };
        for (id, row) in rows {
            let i = self
                .running
                .iter()
                .position(|s| s.id == id)
                .expect("planned sequences are running");
            let seq = &mut self.running[i];
            if let Some(row) = row {
                if seq.generated.is_empty() {
                    events.push(StepEvent::PromptProcessed {
                        id,
                        tokens: seq.prompt_tokens,
                        cached: seq.cached,
                    });
                }
                match accept(seq, &logits[row], self.tokenizer, &mut events) {
                    Ok(Some(finish)) => {
                        let seq = self.running.remove(i);
                        self.release(&seq);
                        events.push(StepEvent::Finished {
                            id,
                            generation: Generation {
                                tokens: seq.generated,
                                text: seq.text,
                                finish,
                                prompt_tokens: seq.prompt_tokens,
                                cached_tokens: seq.cached,
                            },
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let seq = self.running.remove(i);
                        self.release(&seq);
                        events.push(StepEvent::Failed {
                            id,
                            error: e.to_string(),
                        });
                    }
                }
            }
        }
        events
    }

    /// Frees the slot of `seq`, remembering what its cache entries hold.
    fn release(&mut self, seq: &Sequence) {
        let slot = seq.slot.expect("running sequences hold a slot");
        self.held[slot].clear();
        self.held[slot].extend_from_slice(&seq.history[..seq.processed]);
    }

    /// Gives waiting requests the free slots, oldest first: to each the free
    /// slot holding the longest prefix of its prompt, which it then skips.
    fn admit(&mut self) {
        let slots = self.cache.slots();
        while self.running.len() < slots {
            let Some(mut seq) = self.waiting.pop_front() else {
                return;
            };
            let (slot, shared) = (0..slots)
                .filter(|s| self.running.iter().all(|r| r.slot != Some(*s)))
                .map(|s| {
                    let common = self.held[s]
                        .iter()
                        .zip(&seq.history)
                        .take_while(|(a, b)| a == b)
                        .count();
                    // The last prompt token always runs: its logits are
                    // the first sample's.
                    (s, common.min(seq.prompt_tokens - 1))
                })
                .max_by_key(|&(s, shared)| (shared, std::cmp::Reverse(s)))
                .expect("fewer sequences than slots");
            if shared > 0 && self.cache.truncate(slot, shared).is_ok() {
                seq.processed = shared;
                seq.cached = shared;
            } else {
                self.cache.clear(slot);
            }
            self.held[slot].clear();
            seq.slot = Some(slot);
            self.running.push(seq);
        }
    }

    /// The step's batch and, per sequence in it, the batch row of its
    /// next-token logits (when the step completes its prompt or decodes).
    fn plan(&mut self) -> (Batch, Vec<(RequestId, Option<usize>)>) {
        let mut batch = Batch::default();
        let mut rows = Vec::new();
        let mut push = |batch: &mut Batch, seq: &mut Sequence, end: usize| {
            let slot = seq.slot.expect("running sequences hold a slot");
            for position in seq.processed..end {
                batch.tokens.push(seq.history[position]);
                batch.positions.push(position);
                batch.slots.push(slot);
            }
            seq.processed = end;
            let row = (end == seq.history.len()).then(|| {
                batch.logits_for.push(batch.tokens.len() - 1);
                batch.logits_for.len() - 1
            });
            rows.push((seq.id, row));
        };
        // Generating sequences first: one token each keeps every stream
        // moving however long the prompts waiting beside them are.
        for seq in self.running.iter_mut().filter(|s| !s.prefilling()) {
            let end = seq.history.len();
            push(&mut batch, seq, end);
        }
        let per_sequence = self.cache.max_step_tokens();
        for seq in self.running.iter_mut().filter(|s| s.prefilling()) {
            let budget = self.step_tokens - batch.tokens.len();
            if budget == 0 {
                break;
            }
            let end = seq
                .prompt_tokens
                .min(seq.processed + budget.min(per_sequence));
            push(&mut batch, seq, end);
        }
        (batch, rows)
    }
}

/// Samples the next token of `seq` from `logits`, streams its text and
/// returns why the sequence finished, if it did.
fn accept(
    seq: &mut Sequence,
    logits: &[f32],
    tokenizer: &Tokenizer,
    events: &mut Vec<StepEvent>,
) -> Result<Option<FinishReason>> {
    if seq.params.max_tokens == 0 {
        return Ok(Some(FinishReason::Length));
    }
    let token = seq.sampler.sample(logits, &seq.history)?;
    if tokenizer.eos().contains(&token) {
        flush(seq, events);
        return Ok(Some(FinishReason::Eos));
    }
    if let Some(alternatives) = seq.params.logprobs {
        let record = PositionRecord::new(logits, token, alternatives);
        events.push(StepEvent::Logprob {
            id: seq.id,
            logprob: TokenLogprob {
                token,
                logprob: -record.nll,
                top: record.top,
            },
        });
    }
    seq.history.push(token);
    seq.generated.push(token);
    seq.pending.push_str(&seq.stream.push(tokenizer, token)?);
    let stop = &seq.params.stop;
    if let Some(cut) = stop
        .iter()
        .filter_map(|s| seq.pending.find(s.as_str()))
        .min()
    {
        seq.pending.truncate(cut);
        flush(seq, events);
        return Ok(Some(FinishReason::Stop));
    }
    if seq.generated.len() >= seq.params.max_tokens {
        flush(seq, events);
        return Ok(Some(FinishReason::Length));
    }
    // Emit everything that cannot be the beginning of a stop string.
    let keep = stop
        .iter()
        .flat_map(|s| {
            (1..s.len()).filter(|&n| s.is_char_boundary(n) && seq.pending.ends_with(&s[..n]))
        })
        .max()
        .unwrap_or(0);
    let emit = seq.pending.len() - keep;
    if emit > 0 {
        let text: String = seq.pending.drain(..emit).collect();
        emit_text(seq, text, events);
    }
    Ok(None)
}

fn flush(seq: &mut Sequence, events: &mut Vec<StepEvent>) {
    if !seq.pending.is_empty() {
        let text = std::mem::take(&mut seq.pending);
        emit_text(seq, text, events);
    }
}

fn emit_text(seq: &mut Sequence, text: String, events: &mut Vec<StepEvent>) {
    seq.text.push_str(&text);
    events.push(StepEvent::Text { id: seq.id, text });
}
