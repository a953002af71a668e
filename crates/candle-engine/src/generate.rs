//! The generation loop: prefill the prompt in chunks, then decode one token
//! per step, sampling, detokenizing and streaming text until an end token,
//! a stop string or the token budget. Several prompts can run together as
//! one flat batch per step.

use crate::kv_cache::KvCache;
use crate::model::{Batch, Decoder};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{TextStream, Tokenizer};
use crate::{Error, Result};

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends before the first occurrence of any of these strings.
    pub stop: Vec<String>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_tokens` were generated.
    Length,
    /// A stop string appeared.
    Stop,
}

/// What the loop reports while it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// The prompt has been processed; the next events are generated text.
    PromptProcessed { tokens: usize },
    /// New text of the sequence with this index in the request.
    Text { sequence: usize, text: &'a str },
}

/// The outcome for one sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
}

struct Sequence {
    slot: usize,
    sampler: Sampler,
    history: Vec<u32>,
    generated: Vec<u32>,
    stream: TextStream,
    /// Decoded text not yet emitted: it might be the start of a stop string.
    pending: String,
    text: String,
    finish: Option<FinishReason>,
    prompt_tokens: usize,
}

/// Generates continuations of `prompts` (token ids) together, each in its
/// own cache slot (`0..prompts.len()`), reporting progress to `on_event`.
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
    let mut sequences = Vec::with_capacity(prompts.len());
    for (slot, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            return Err(Error::InvalidBatch(format!("prompt {slot} is empty")));
        }
        cache.clear(slot);
        cache.check_room(slot, prompt.len() + params.max_tokens.max(1) - 1)?;
        let mut sampling = params.sampling.clone();
        sampling.seed = sampling.seed.wrapping_add(slot as u64);
        sequences.push(Sequence {
            slot,
            sampler: Sampler::new(sampling)?,
            history: prompt.clone(),
            generated: Vec::new(),
            stream: TextStream::default(),
            pending: String::new(),
            text: String::new(),
            finish: None,
            prompt_tokens: prompt.len(),
        });
    }

    // Prefill: each prompt in chunks; only the last chunk asks for logits.
    let step = cache.max_step_tokens();
    let mut last_logits = vec![Vec::new(); sequences.len()];
    for (i, seq) in sequences.iter().enumerate() {
        let prompt = &seq.history;
        for start in (0..prompt.len()).step_by(step) {
            let end = (start + step).min(prompt.len());
            let mut batch = Batch::single(seq.slot, start, &prompt[start..end]);
            batch.logits_for = if end == prompt.len() {
                vec![end - start - 1]
            } else {
                vec![]
            };
            let logits = decoder.forward(&batch, cache)?;
            if end == prompt.len() {
                last_logits[i] = logits.squeeze(0)?.to_vec1::<f32>()?;
            }
        }
    }
    on_event(Event::PromptProcessed {
        tokens: sequences.iter().map(|s| s.prompt_tokens).sum(),
    });

    for (i, seq) in sequences.iter_mut().enumerate() {
        accept(seq, i, &last_logits[i], tokenizer, params, on_event)?;
    }
    loop {
        let active: Vec<usize> = (0..sequences.len())
            .filter(|&i| sequences[i].finish.is_none())
            .collect();
        if active.is_empty() {
            break;
        }
        let mut batch = Batch::default();
        for (row, &i) in active.iter().enumerate() {
            let seq = &sequences[i];
            batch
                .tokens
                .push(*seq.history.last().expect("history holds the prompt"));
            batch.positions.push(seq.history.len() - 1);
            batch.slots.push(seq.slot);
            batch.logits_for.push(row);
        }
        let logits = decoder.forward(&batch, cache)?.to_vec2::<f32>()?;
        for (row, &i) in active.iter().enumerate() {
            accept(
                &mut sequences[i],
                i,
                &logits[row],
                tokenizer,
                params,
                on_event,
            )?;
        }
    }
    Ok(sequences
        .into_iter()
        .map(|s| Generation {
            tokens: s.generated,
            text: s.text,
            finish: s.finish.unwrap_or(FinishReason::Length),
            prompt_tokens: s.prompt_tokens,
        })
        .collect())
}

/// Samples the next token of `seq` from `logits`, streams its text and
/// decides whether the sequence is finished.
fn accept(
    seq: &mut Sequence,
    index: usize,
    logits: &[f32],
    tokenizer: &Tokenizer,
    params: &GenerationParams,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<()> {
    if params.max_tokens == 0 {
        seq.finish = Some(FinishReason::Length);
        return Ok(());
    }
    let token = seq.sampler.sample(logits, &seq.history)?;
    if tokenizer.eos().contains(&token) {
        seq.finish = Some(FinishReason::Eos);
        flush(seq, index, on_event);
        return Ok(());
    }
    seq.history.push(token);
    seq.generated.push(token);
    seq.pending.push_str(&seq.stream.push(tokenizer, token)?);
    if let Some(cut) = params
        .stop
        .iter()
        .filter_map(|s| seq.pending.find(s.as_str()))
        .min()
    {
        seq.pending.truncate(cut);
        seq.finish = Some(FinishReason::Stop);
        flush(seq, index, on_event);
        return Ok(());
    }
    if seq.generated.len() >= params.max_tokens {
        seq.finish = Some(FinishReason::Length);
        flush(seq, index, on_event);
        return Ok(());
    }
    // Emit everything that cannot be the beginning of a stop string.
    let keep = params
        .stop
        .iter()
        .flat_map(|s| {
            (1..s.len()).filter(|&n| s.is_char_boundary(n) && seq.pending.ends_with(&s[..n]))
        })
        .max()
        .unwrap_or(0);
    let emit = seq.pending.len() - keep;
    if emit > 0 {
        let text: String = seq.pending.drain(..emit).collect();
        seq.text.push_str(&text);
        on_event(Event::Text {
            sequence: index,
            text: &text,
        });
    }
    Ok(())
}

fn flush(seq: &mut Sequence, index: usize, on_event: &mut dyn FnMut(Event<'_>)) {
    if !seq.pending.is_empty() {
        let text = std::mem::take(&mut seq.pending);
        seq.text.push_str(&text);
        on_event(Event::Text {
            sequence: index,
            text: &text,
        });
    }
}
