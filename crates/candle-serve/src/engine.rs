//! The engine thread: the only place forward passes run (the kernels' pool
//! runs one job at a time). It owns the decoder, the KV cache and the
//! scheduler; HTTP handlers reach it through a bounded channel and get each
//! request's events back on a channel of their own.

use crate::metrics::Metrics;
use candle_engine::kv_cache::{CacheOptions, KvPrecision};
use candle_engine::scheduler::{
    Generation, GenerationParams, RequestId, Scheduler, SchedulerOptions, StepEvent, TokenLogprob,
};
use candle_engine::tokenizer::Tokenizer;
use candle_engine::Decoder;
use std::collections::HashMap;
use tokio::sync::mpsc;

/// What the engine tells a request, tagged with its choice index.
#[derive(Debug)]
pub enum Update {
    /// A token was generated, for a request that asked for log-probabilities.
    Logprob(TokenLogprob),
    Text(String),
    Done(Generation),
    /// The request could not run; the message says why.
    Failed(String),
}

/// One choice of a request: its prompt, parameters and where its updates go.
pub struct Submission {
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
    pub choice: usize,
    pub updates: mpsc::UnboundedSender<(usize, Update)>,
}

/// Sizes of the engine.
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    pub slots: usize,
    pub max_context: usize,
    /// Tokens of one forward step (decode and prompt tokens together).
    pub step_tokens: usize,
    pub precision: KvPrecision,
}

/// Where the engine reports what it did.
pub struct Reporting<'a> {
    pub metrics: &'a Metrics,
    pub model: &'a str,
}

struct Running {
    choice: usize,
    updates: mpsc::UnboundedSender<(usize, Update)>,
}

/// Runs requests from `submissions` until every sender is gone.
pub fn run(
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    options: EngineOptions,
    mut submissions: mpsc::Receiver<Submission>,
    reporting: Reporting<'_>,
) -> anyhow::Result<()> {
    let Reporting { metrics, model } = reporting;
    let mut cache = decoder.new_cache(CacheOptions {
        slots: options.slots,
        max_context: Some(options.max_context),
        max_step_tokens: options.step_tokens,
        precision: options.precision,
    })?;
    cache.commit_memory();
    let scheduler_options = SchedulerOptions {
        step_tokens: options.step_tokens,
    };
    let mut scheduler = Scheduler::new(decoder, tokenizer, &mut cache, scheduler_options)?;
    let mut running: HashMap<RequestId, Running> = HashMap::new();
    metrics.occupancy(model, options.slots, 0, 0);
    loop {
        // Block only when there is nothing to compute.
        if scheduler.is_idle() {
            match submissions.blocking_recv() {
                Some(s) => submit(&mut scheduler, &mut running, s),
                None => return Ok(()),
            }
        }
        while let Ok(s) = submissions.try_recv() {
            submit(&mut scheduler, &mut running, s);
        }
        // A client that went away frees its slot before the step runs.
        running.retain(|&id, r| {
            let gone = r.updates.is_closed();
            if gone {
                scheduler.cancel(id);
            }
            !gone
        });
        for event in scheduler.step() {
            let (id, update) = match event {
                StepEvent::PromptProcessed { tokens, cached, .. } => {
                    metrics.prompt_processed(model, tokens, cached);
                    continue;
                }
                StepEvent::Finished { id, generation } => {
                    metrics.generated(model, generation.tokens.len());
                    (id, Update::Done(generation))
                }
                StepEvent::Text { id, text } => (id, Update::Text(text)),
                StepEvent::Logprob { id, logprob } => (id, Update::Logprob(logprob)),
                StepEvent::Failed { id, error } => (id, Update::Failed(error)),
            };
            let finished = matches!(update, Update::Done(_) | Update::Failed(_));
            let sent = running
                .get(&id)
                .is_some_and(|r| r.updates.send((r.choice, update)).is_ok());
            if finished || !sent {
                running.remove(&id);
                if !sent {
                    scheduler.cancel(id);
                }
            }
        }
        metrics.occupancy(
            model,
            options.slots,
            scheduler.running(),
            scheduler.waiting() + submissions.len(),
        );
    }
}

fn submit(scheduler: &mut Scheduler<'_>, running: &mut HashMap<RequestId, Running>, s: Submission) {
    match scheduler.add(s.prompt, s.params) {
        Ok(id) => {
            running.insert(
                id,
                Running {
                    choice: s.choice,
                    updates: s.updates,
                },
            );
        }
        Err(e) => {
            let _ = s.updates.send((s.choice, Update::Failed(e.to_string())));
        }
    }
}
