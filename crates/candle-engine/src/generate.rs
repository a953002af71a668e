//! Generating continuations of a fixed set of prompts to completion: the
//! [`Scheduler`] with every prompt added up front, one cache slot each.

use crate::kv_cache::KvCache;
use crate::model::Decoder;
pub use crate::scheduler::{FinishReason, Generation, GenerationParams};
use crate::scheduler::{Scheduler, SchedulerOptions, StepEvent};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// What the loop reports while it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// Every prompt has been processed; the next events are generated text.
    PromptProcessed { tokens: usize },
    /// New text of the sequence with this index in the request.
    Text { sequence: usize, text: &'a str },
}

/// Generates continuations of `prompts` (token ids) together, reporting
/// progress to `on_event`. Prompt `i` samples with seed
/// `params.sampling.seed + i`.
pub fn generate(
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    cache: &mut KvCache,
    prompts: &[Vec<u32>],
    params: &GenerationParams,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<Generation>> {
    if prompts.len() > cache.slots() {
        return Err(Error::InvalidBatch(format!(
            "{} prompts but the cache has {} slots",
            prompts.len(),
            cache.slots()
        )));
    }
    let options = SchedulerOptions {
        step_tokens: cache.max_step_tokens().max(cache.slots()),
    };
    let mut scheduler = Scheduler::new(decoder, tokenizer, cache, options)?;
    generate_with(&mut scheduler, prompts, params, on_event)
}

/// [`generate`] on a scheduler that lives longer than one call, so that a
/// prompt continuing an earlier one (the next turn of a chat) reuses the
/// cache entries that call left; `Generation::cached_tokens` says how many.
pub fn generate_with(
    scheduler: &mut Scheduler<'_>,
    prompts: &[Vec<u32>],
    params: &GenerationParams,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<Generation>> {
    let mut ids = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.iter().enumerate() {
        let mut params = params.clone();
        params.sampling.seed = params.sampling.seed.wrapping_add(i as u64);
        match scheduler.add(prompt.clone(), params) {
            Ok(id) => ids.push(id),
            Err(e) => {
                // The scheduler outlives this call: leave nothing of ours in it.
                ids.iter().for_each(|&id| {
                    scheduler.cancel(id);
                });
                return Err(match e {
                    Error::InvalidBatch(reason) => {
                        Error::InvalidBatch(format!("prompt {i}: {reason}"))
                    }
                    e => e,
                });
            }
        }
    }
    let index = |id| ids.iter().position(|&i| i == id).expect("our request");
    let mut results: Vec<Option<Generation>> = vec![None; prompts.len()];
    let (mut prompts_left, mut prompt_tokens) = (prompts.len(), 0);
    while !scheduler.is_idle() {
        for event in scheduler.step() {
            match event {
                StepEvent::PromptProcessed { tokens, .. } => {
                    prompt_tokens += tokens;
                    prompts_left -= 1;
                    if prompts_left == 0 {
                        on_event(Event::PromptProcessed {
                            tokens: prompt_tokens,
                        });
                    }
                }
                StepEvent::Text { id, text } => on_event(Event::Text {
                    sequence: index(id),
                    text: &text,
                }),
                StepEvent::Finished { id, generation } => results[index(id)] = Some(generation),
                StepEvent::Failed { error, .. } => {
                    ids.iter().for_each(|&id| {
                        scheduler.cancel(id);
                    });
                    return Err(Error::StepFailed(error));
                }
                StepEvent::Logprob { .. } => {}
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|g| g.expect("every request finishes or fails"))
        .collect())
}
