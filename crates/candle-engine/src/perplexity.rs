//! Perplexity and KL-divergence with the method of llama.cpp's
//! `llama-perplexity`, so that figures compare with the ones the field
//! publishes: the text's tokens are cut into non-overlapping chunks of `ctx`
//! tokens, each chunk is run from an empty cache with its first token
//! replaced by BOS (when the tokenizer adds one), and only the second half
//! of each chunk is scored (positions `ctx/2 .. ctx-2` predict the tokens
//! after them), so that every scored token has at least `ctx/2` tokens of
//! context.
//!
//! A run can keep, for every scored position, what a later comparison needs
//! ([`SavedLogits`]: the top-k log-probabilities, the probability mass of
//! the rest and the log-probability of the true next token); a run against
//! such a base then reports KL-divergence, top-1 agreement and the Δp
//! statistics llama.cpp prints ([`KldStats`]). File access stays with the
//! caller: this module reads and writes through `std::io` streams.

use crate::kv_cache::KvCache;
use crate::model::{Batch, Decoder};
use crate::{Error, Result};
use std::io::{Read, Write};

/// What a perplexity run is asked to do.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Evaluate at most this many chunks (default: all whole chunks).
    pub max_chunks: Option<usize>,
    /// Written over each chunk's first token, when the model adds a BOS.
    pub bos: Option<u32>,
    /// Log-probabilities kept per position when saving logits.
    pub top_k: usize,
}

/// The first position of a chunk whose logits are scored.
pub fn first_scored(ctx: usize) -> usize {
    ctx / 2
}

/// Scored positions per chunk.
pub fn scored_per_chunk(ctx: usize) -> usize {
    ctx - 1 - first_scored(ctx)
}

/// The number of chunks `settings` evaluates over `n_tokens` tokens, or an
/// error naming why the text cannot be measured.
pub fn chunk_count(n_tokens: usize, settings: &Settings) -> Result<usize> {
    let ctx = settings.ctx;
    if ctx < 4 {
        return Err(Error::Perplexity(format!(
            "the context must be at least 4 tokens (half of it is scored), got {ctx}"
        )));
    }
    if n_tokens < 2 * ctx {
        return Err(Error::Perplexity(format!(
            "the text tokenizes to {n_tokens} tokens; a context of {ctx} needs at least {} (two chunks); \
             use a longer text or a smaller --ctx",
            2 * ctx
        )));
    }
    let whole = n_tokens / ctx;
    match settings.max_chunks {
        Some(0) => Err(Error::Perplexity("--chunks must be at least 1".into())),
        Some(k) => Ok(k.min(whole)),
        None => Ok(whole),
    }
}

/// Produces the logits of a chunk's scored positions.
pub trait ChunkScorer {
    /// The vocabulary size: the length of every row.
    fn vocab_size(&self) -> usize;

    /// Runs `input` (one chunk, BOS already in place) from an empty
    /// context and calls `row(i, logits)` for positions
    /// `i = first .. input.len() - 1` in order, `logits` being `[vocab]`.
    fn score(
        &mut self,
        input: &[u32],
        first: usize,
        row: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()>;
}

/// A [`ChunkScorer`] over a decoder and its one-slot cache (of at least
/// `ctx` positions): the chunk goes through in forward steps of the cache's
/// step size, asking only for the scored rows.
pub struct DecoderScorer<'a> {
    pub decoder: &'a Decoder,
    pub cache: &'a mut KvCache,
}

impl ChunkScorer for DecoderScorer<'_> {
    fn vocab_size(&self) -> usize {
        self.decoder.config().vocab_size
    }

    fn score(
        &mut self,
        input: &[u32],
        first: usize,
        row: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        self.cache.clear(0);
        let vocab = self.vocab_size();
        let step = self.cache.max_step_tokens();
        let last = input.len() - 1;
        let mut start = 0;
        while start < last {
            let end = (start + step).min(last);
            let mut batch = Batch::single(0, start, &input[start..end]);
            batch.logits_for = (first.max(start)..end).map(|p| p - start).collect();
            let logits = self.decoder.forward(&batch, self.cache)?;
            let values = logits.flatten_all()?.to_vec1::<f32>()?;
            for (k, &offset) in batch.logits_for.iter().enumerate() {
                row(start + offset, &values[k * vocab..(k + 1) * vocab])?;
            }
            start = end;
        }
        Ok(())
    }
}

/// `log Σ exp(logits)` in f64, shifted by the maximum.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln()
}

/// The index of the largest logit (the first one on ties, as llama.cpp).
fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// Mean and standard error of the mean from running sums, as llama.cpp's
/// `mean_and_uncertainty` (no error below 11 values).
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count == 0 {
        return (0.0, 0.0);
    }
    let n = count as f64;
    let mean = sum / n;
    let var = sum2 / n - mean * mean;
    let err = if var > 0.0 && count > 10 {
        (var / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, err)
}

/// Running negative log-likelihoods of the scored tokens.
#[derive(Clone, Debug, Default)]
pub struct PerplexityStats {
    sum: f64,
    sum2: f64,
    count: usize,
}

impl PerplexityStats {
    pub fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum2 += nll * nll;
        self.count += 1;
    }

    /// Tokens scored so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// `exp(mean nll)`.
    pub fn ppl(&self) -> f64 {
        (self.sum / self.count.max(1) as f64).exp()
    }

    /// The standard error of the perplexity, `ppl * sqrt(var(nll) / (n-1))`
    /// (the error of the mean nll carried through `exp`), as llama.cpp's
    /// final estimate; 0 with fewer than two tokens.
    pub fn ppl_stderr(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum2 / n - mean * mean;
        if var > 0.0 {
            self.ppl() * (var / (n - 1.0)).sqrt()
        } else {
            0.0
        }
    }
}

/// What a comparison needs of one scored position of the base run.
#[derive(Clone, Debug, PartialEq)]
pub struct PositionRecord {
    /// `-log p(next token)`.
    pub nll: f32,
    /// The probability mass outside `top` (computed without cancellation).
    pub rest: f32,
    /// The `top_k` most likely tokens with their log-probabilities, most
    /// likely first.
    pub top: Vec<(u32, f32)>,
}

impl PositionRecord {
    /// The record of `logits` (`[vocab]`) predicting `next`.
    pub fn new(logits: &[f32], next: u32, top_k: usize) -> Self {
        let lse = log_sum_exp(logits);
        let k = top_k.min(logits.len());
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        if k < order.len() {
            order.select_nth_unstable_by(k, |&a, &b| {
                logits[b as usize].total_cmp(&logits[a as usize])
            });
            order.truncate(k);
        }
        order.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        let mut in_top = vec![false; logits.len()];
        order.iter().for_each(|&i| in_top[i as usize] = true);
        let rest: f64 = logits
            .iter()
            .zip(&in_top)
            .filter(|(_, &t)| !t)
            .map(|(&l, _)| (l as f64 - lse).exp())
            .sum();
        Self {
            nll: (lse - logits[next as usize] as f64) as f32,
            rest: rest as f32,
            top: order
                .into_iter()
                .map(|i| (i, (logits[i as usize] as f64 - lse) as f32))
                .collect(),
        }
    }
}

/// KL-divergence of one position, `KL(base ‖ current)`, from the base's
/// record and the current logits. Over the record's top-k tokens it is
/// exact; the rest of the vocabulary counts as one outcome of probability
/// `rest` (base) against the current run's mass outside the same tokens.
/// By the log-sum inequality that term never exceeds the true remainder, so
/// the result is a lower bound of the full-vocabulary value, equal to it
/// when the top-k holds the whole vocabulary or both runs distribute the
/// rest alike.
fn position_kld(base: &PositionRecord, logits: &[f32], lse: f64) -> f64 {
    let mut kld = 0.0;
    let mut top_q = 0.0;
    for &(id, log_p) in &base.top {
        let log_p = log_p as f64;
        let log_q = logits[id as usize] as f64 - lse;
        top_q += log_q.exp();
        kld += log_p.exp() * (log_p - log_q);
    }
    let rest = base.rest as f64;
    if rest > 0.0 {
        let rest_q = (1.0 - top_q).max(f64::MIN_POSITIVE);
        kld += rest * (rest / rest_q).ln();
    }
    kld
}

/// Running comparison of a run with a base run over the same tokens.
#[derive(Clone, Debug, Default)]
pub struct KldStats {
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_nll_nll_base: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_p_diff: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    same_top: usize,
    sum_rest: f64,
    klds: Vec<f64>,
    p_diffs: Vec<f64>,
}

/// A value with its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub stderr: f64,
}

/// The figures llama.cpp's `--kl-divergence` prints.
#[derive(Clone, Debug)]
pub struct KldSummary {
    pub count: usize,
    pub ppl: Estimate,
    pub ppl_base: Estimate,
    /// Correlation of the per-token log-likelihoods of the two runs.
    pub ln_ppl_correlation: f64,
    pub ln_ppl_ratio: Estimate,
    pub ppl_ratio: Estimate,
    pub ppl_diff: Estimate,
    pub kld: Estimate,
    /// (percentile in [0, 1], KLD), from the maximum down to the minimum.
    pub kld_percentiles: Vec<(f64, f64)>,
    /// Mean of `p(next) - p_base(next)`.
    pub p_diff: Estimate,
    /// (percentile in [0, 1], Δp), from the maximum down to the minimum.
    pub p_diff_percentiles: Vec<(f64, f64)>,
    pub p_diff_rms: Estimate,
    /// Share of positions whose most likely token is the base's.
    pub same_top: Estimate,
    /// Mean base probability outside its saved top-k: the KLD misses this
    /// share of the divergence of the two runs' tails (see
    /// docs/PERPLEXITY.md).
    pub rest: f64,
}

const KLD_PERCENTILES: [f64; 11] = [
    1.0, 0.999, 0.99, 0.95, 0.90, 0.5, 0.10, 0.05, 0.01, 0.001, 0.0,
];
const P_DIFF_PERCENTILES: [f64; 13] = [
    1.0, 0.999, 0.99, 0.95, 0.90, 0.75, 0.5, 0.25, 0.10, 0.05, 0.01, 0.001, 0.0,
];

/// Linear interpolation between the closest ranks of sorted `values`.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let p = fraction * (sorted.len() - 1) as f64;
    let i = p.floor() as usize;
    let next = sorted[(i + 1).min(sorted.len() - 1)];
    (1.0 - (p - i as f64)) * sorted[i] + (p - i as f64) * next
}

impl KldStats {
    /// Adds one position: `logits` (`[vocab]`) predicting `next`, against
    /// the base's record of the same position. Returns its KL-divergence.
    pub fn add(&mut self, base: &PositionRecord, logits: &[f32], next: u32) -> f64 {
        let lse = log_sum_exp(logits);
        let nll = lse - logits[next as usize] as f64;
        let nll_base = base.nll as f64;
        self.sum_nll += nll;
        self.sum_nll2 += nll * nll;
        self.sum_nll_base += nll_base;
        self.sum_nll_base2 += nll_base * nll_base;
        self.sum_nll_nll_base += nll * nll_base;
        let kld = position_kld(base, logits, lse);
        self.sum_rest += base.rest as f64;
        self.sum_kld += kld;
        self.sum_kld2 += kld * kld;
        if base.top.first().map(|&(id, _)| id as usize) == Some(argmax(logits)) {
            self.same_top += 1;
        }
        let p_diff = (-nll).exp() - (-nll_base).exp();
        self.sum_p_diff += p_diff;
        self.sum_p_diff2 += p_diff * p_diff;
        self.sum_p_diff4 += p_diff.powi(4);
        self.klds.push(kld);
        self.p_diffs.push(p_diff);
        kld
    }

    /// Positions compared so far.
    pub fn count(&self) -> usize {
        self.klds.len()
    }

    /// Mean KL-divergence so far.
    pub fn mean_kld(&self) -> f64 {
        self.sum_kld / self.count().max(1) as f64
    }

    /// The full statistics; `None` before any position.
    pub fn summary(&self) -> Option<KldSummary> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let n = count as f64;
        let log_ppl = mean_and_uncertainty(self.sum_nll, self.sum_nll2, count);
        let log_ppl_base = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, count);
        let covariance = if count < 10 {
            0.0
        } else {
            (self.sum_nll_nll_base / n - (self.sum_nll / n) * (self.sum_nll_base / n)) / (n - 1.0)
        };
        let exp_estimate = |(mean, err): (f64, f64)| Estimate {
            value: mean.exp(),
            stderr: mean.exp() * err,
        };
        let ppl = exp_estimate(log_ppl);
        let ppl_base = exp_estimate(log_ppl_base);
        let ratio_err = (log_ppl.1.powi(2) + log_ppl_base.1.powi(2) - 2.0 * covariance)
            .max(0.0)
            .sqrt();
        let ln_ppl_ratio = Estimate {
            value: log_ppl.0 - log_ppl_base.0,
            stderr: ratio_err,
        };
        let ppl_cov = ppl.value * ppl_base.value * covariance;
        let estimate = |(value, stderr): (f64, f64)| Estimate { value, stderr };
        let mut klds = self.klds.clone();
        klds.sort_by(f64::total_cmp);
        let mut p_diffs = self.p_diffs.clone();
        p_diffs.sort_by(f64::total_cmp);
        let mse = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, count);
        let rms = mse.0.sqrt();
        let same = self.same_top as f64 / n;
        Some(KldSummary {
            count,
            ppl,
            ppl_base,
            ln_ppl_correlation: covariance / (log_ppl.1 * log_ppl_base.1),
            ln_ppl_ratio,
            ppl_ratio: exp_estimate((ln_ppl_ratio.value, ln_ppl_ratio.stderr)),
            ppl_diff: Estimate {
                value: ppl.value - ppl_base.value,
                stderr: (ppl.stderr.powi(2) + ppl_base.stderr.powi(2) - 2.0 * ppl_cov)
                    .max(0.0)
                    .sqrt(),
            },
            kld: estimate(mean_and_uncertainty(self.sum_kld, self.sum_kld2, count)),
            kld_percentiles: KLD_PERCENTILES
                .iter()
                .map(|&f| (f, percentile(&klds, f)))
                .collect(),
            p_diff: estimate(mean_and_uncertainty(
                self.sum_p_diff,
                self.sum_p_diff2,
                count,
            )),
            p_diff_percentiles: P_DIFF_PERCENTILES
                .iter()
                .map(|&f| (f, percentile(&p_diffs, f)))
                .collect(),
            p_diff_rms: Estimate {
                value: rms,
                stderr: if rms > 0.0 { 0.5 / rms * mse.1 } else { 0.0 },
            },
            same_top: Estimate {
                value: same,
                stderr: if count > 1 {
                    (same * (1.0 - same) / (n - 1.0)).sqrt()
                } else {
                    0.0
                },
            },
            rest: self.sum_rest / n,
        })
    }
}

/// The saved side of a comparison: the tokens of a run and, for every
/// scored position, its [`PositionRecord`]. Layout in docs/PERPLEXITY.md.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedLogits {
    pub ctx: usize,
    pub vocab: usize,
    pub top_k: usize,
    /// `chunks * ctx` tokens, as tokenized (before BOS is written over the
    /// first token of each chunk).
    pub tokens: Vec<u32>,
    /// `chunks * scored_per_chunk(ctx)` records, chunk by chunk.
    pub positions: Vec<PositionRecord>,
}

const MAGIC: &[u8; 8] = b"HCPPLLOG";
const VERSION: u32 = 1;

fn format_error(what: impl std::fmt::Display) -> Error {
    Error::Perplexity(format!("saved logits: {what}"))
}

impl SavedLogits {
    pub fn chunks(&self) -> usize {
        self.tokens.len() / self.ctx
    }

    /// Writes the file format (little-endian throughout).
    pub fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(28 + 4 * self.tokens.len());
        bytes.extend_from_slice(MAGIC);
        for v in [
            VERSION,
            self.ctx as u32,
            self.vocab as u32,
            self.chunks() as u32,
        ] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&(self.top_k as u32).to_le_bytes());
        self.tokens
            .iter()
            .for_each(|t| bytes.extend_from_slice(&t.to_le_bytes()));
        out.write_all(&bytes)?;
        for record in &self.positions {
            bytes.clear();
            bytes.extend_from_slice(&record.nll.to_le_bytes());
            bytes.extend_from_slice(&record.rest.to_le_bytes());
            for &(id, log_p) in &record.top {
                bytes.extend_from_slice(&id.to_le_bytes());
                bytes.extend_from_slice(&log_p.to_le_bytes());
            }
            out.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Reads and validates the file format.
    pub fn read_from(input: &mut dyn Read) -> Result<Self> {
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|e| format_error(format!("reading the header: {e}")))?;
        if &magic != MAGIC {
            return Err(format_error(
                "not a file written by `hanzo-candle perplexity --save-logits` (bad magic)",
            ));
        }
        let mut word = |what: &str| -> Result<u32> {
            let mut b = [0u8; 4];
            input
                .read_exact(&mut b)
                .map_err(|e| format_error(format!("reading {what}: {e}")))?;
            Ok(u32::from_le_bytes(b))
        };
        let version = word("the version")?;
        if version != VERSION {
            return Err(format_error(format!(
                "format version {version}, this build reads version {VERSION}"
            )));
        }
        let ctx = word("the context")? as usize;
        let vocab = word("the vocabulary size")? as usize;
        let chunks = word("the chunk count")? as usize;
        let top_k = word("top_k")? as usize;
        if ctx < 4 || vocab == 0 || chunks == 0 || top_k == 0 || top_k > vocab {
            return Err(format_error(format!(
                "implausible header: ctx {ctx}, vocab {vocab}, chunks {chunks}, top_k {top_k}"
            )));
        }
        // Bounds every allocation below by what the stream really holds.
        let mut read_exactly = |len: usize, what: &str| -> Result<Vec<u8>> {
            let mut buf = Vec::new();
            input
                .take(len as u64)
                .read_to_end(&mut buf)
                .map_err(|e| format_error(format!("reading {what}: {e}")))?;
            if buf.len() != len {
                return Err(format_error(format!(
                    "the file ends inside {what} ({} of {len} bytes)",
                    buf.len()
                )));
            }
            Ok(buf)
        };
        let n_tokens = chunks
            .checked_mul(ctx)
            .ok_or_else(|| format_error("token count overflows"))?;
        let tokens: Vec<u32> = read_exactly(4 * n_tokens, "the tokens")?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(format_error(format!(
                "token {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let n_positions = chunks * scored_per_chunk(ctx);
        let record_bytes = 8 + 8 * top_k;
        let mut positions = Vec::with_capacity(n_positions.min(1 << 16));
        for index in 0..n_positions {
            let bytes = read_exactly(record_bytes, &format!("position record {index}"))?;
            let f = |at: usize| {
                f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
            };
            let u = |at: usize| {
                u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
            };
            let top: Vec<(u32, f32)> = (0..top_k).map(|j| (u(8 + 8 * j), f(12 + 8 * j))).collect();
            if let Some(&(bad, _)) = top.iter().find(|(id, _)| *id as usize >= vocab) {
                return Err(format_error(format!(
                    "position record {index} names token {bad}, outside the vocabulary of {vocab}"
                )));
            }
            positions.push(PositionRecord {
                nll: f(0),
                rest: f(4),
                top,
            });
        }
        let mut extra = [0u8; 1];
        if input.read(&mut extra).map_err(format_error)? != 0 {
            return Err(format_error(
                "trailing bytes after the last position record",
            ));
        }
        Ok(Self {
            ctx,
            vocab,
            top_k,
            tokens,
            positions,
        })
    }

    /// Fails unless a run of `ctx` and `vocab` over `tokens` measures the
    /// same positions as this base.
    pub fn check_compatible(&self, tokens: &[u32], ctx: usize, vocab: usize) -> Result<()> {
        if vocab != self.vocab {
            return Err(Error::Perplexity(format!(
                "the base logits have a vocabulary of {} tokens, the model {vocab}; \
                 compare runs of models with the same tokenizer",
                self.vocab
            )));
        }
        if ctx != self.ctx {
            return Err(Error::Perplexity(format!(
                "the base logits were computed with --ctx {}, this run uses {ctx}",
                self.ctx
            )));
        }
        let n = self.tokens.len();
        if tokens.len() < n {
            return Err(Error::Perplexity(format!(
                "the base logits cover {n} tokens but the text has only {}",
                tokens.len()
            )));
        }
        if let Some(i) = (0..n).find(|&i| tokens[i] != self.tokens[i]) {
            return Err(Error::Perplexity(format!(
                "the text's tokens differ from the base logits' at token {i} ({} vs {}); \
                 use the same text and tokenizer as the base run",
                tokens[i], self.tokens[i]
            )));
        }
        Ok(())
    }
}

/// Progress after each chunk.
#[derive(Clone, Debug)]
pub struct ChunkProgress {
    /// 1-based.
    pub chunk: usize,
    pub chunks: usize,
    /// Perplexity over the chunks so far.
    pub ppl: f64,
    /// Mean KL-divergence so far, when comparing with a base.
    pub kld: Option<f64>,
}

/// The results of [`evaluate`].
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub perplexity: PerplexityStats,
    /// With `save`: this run's records, for a later comparison.
    pub saved: Option<SavedLogits>,
    /// With a base: the comparison.
    pub kld: Option<KldStats>,
}

/// Runs `scorer` over the chunks of `tokens` as [`Settings`] asks; with
/// `save` it keeps the records of every scored position, with `base` it
/// compares every position with the base's (whose tokens must be
/// `tokens`' prefix, see [`SavedLogits::check_compatible`]; a base fixes
/// the chunk count to its own).
pub fn evaluate(
    tokens: &[u32],
    settings: &Settings,
    scorer: &mut dyn ChunkScorer,
    save: bool,
    base: Option<&SavedLogits>,
    progress: &mut dyn FnMut(&ChunkProgress),
) -> Result<Evaluation> {
    let ctx = settings.ctx;
    let vocab = scorer.vocab_size();
    let chunks = match base {
        Some(base) => {
            base.check_compatible(tokens, ctx, vocab)?;
            base.chunks()
        }
        None => chunk_count(tokens.len(), settings)?,
    };
    if save && (settings.top_k == 0 || settings.top_k > vocab) {
        return Err(Error::Perplexity(format!(
            "top-k for saved logits must be in 1..={vocab}, got {}",
            settings.top_k
        )));
    }
    let first = first_scored(ctx);
    let mut perplexity = PerplexityStats::default();
    let mut kld = base.map(|_| KldStats::default());
    let mut records = Vec::new();
    for chunk in 0..chunks {
        let original = &tokens[chunk * ctx..(chunk + 1) * ctx];
        let mut input = original.to_vec();
        if let Some(bos) = settings.bos {
            input[0] = bos;
        }
        let before = perplexity.count();
        let mut row = |position: usize, logits: &[f32]| -> Result<()> {
            if !(first..ctx - 1).contains(&position) {
                return Err(Error::Perplexity(format!(
                    "the scorer returned position {position}; scored are {first}..{}",
                    ctx - 1
                )));
            }
            if logits.len() != vocab {
                return Err(Error::Perplexity(format!(
                    "the scorer returned {} logits for a vocabulary of {vocab}",
                    logits.len()
                )));
            }
            let next = original[position + 1];
            if next as usize >= vocab {
                return Err(Error::Perplexity(format!(
                    "token {next} is outside the vocabulary of {vocab}"
                )));
            }
            let nll = log_sum_exp(logits) - logits[next as usize] as f64;
            perplexity.add(nll);
            if save {
                records.push(PositionRecord::new(logits, next, settings.top_k));
            }
            if let (Some(stats), Some(base)) = (kld.as_mut(), base) {
                let index = chunk * scored_per_chunk(ctx) + position - first;
                stats.add(&base.positions[index], logits, next);
            }
            Ok(())
        };
        scorer.score(&input, first, &mut row)?;
        let rows = perplexity.count() - before;
        if rows != scored_per_chunk(ctx) {
            return Err(Error::Perplexity(format!(
                "the scorer returned {rows} rows for chunk {}, expected {}",
                chunk + 1,
                scored_per_chunk(ctx)
            )));
        }
        progress(&ChunkProgress {
            chunk: chunk + 1,
            chunks,
            ppl: perplexity.ppl(),
            kld: kld.as_ref().map(KldStats::mean_kld),
        });
    }
    Ok(Evaluation {
        perplexity,
        saved: save.then(|| SavedLogits {
            ctx,
            vocab,
            top_k: settings.top_k,
            tokens: tokens[..chunks * ctx].to_vec(),
            positions: records,
        }),
        kld,
    })
}

/// Replays the log-probabilities that llama.cpp's `llama-perplexity` saves
/// (`--kl-divergence-base FILE` without `--kl-divergence`) as a
/// [`ChunkScorer`], so that llama.cpp's run is compared with a base by the
/// same code as ours.
///
/// llama.cpp stores each scored row as `u16` steps of `(max - floor)/65535`
/// above a floor 16 below the row's top log-probability (so every stored
/// log-probability is within half a step, ≤ 1.3e-4, of its value), and
/// every token below the floor as the floor. The replay gives the stored
/// values back and spreads the mass the floored tokens really had, which is
/// what the stored ones lack of 1, evenly over them.
pub struct LlamaCppLogits<'a> {
    input: &'a mut dyn Read,
    pub ctx: usize,
    pub vocab: usize,
    pub chunks: usize,
    /// `chunks * ctx` tokens, as llama.cpp tokenized the text.
    pub tokens: Vec<u32>,
    next_chunk: usize,
}

impl<'a> LlamaCppLogits<'a> {
    /// Reads the header and tokens of a llama.cpp logits file.
    pub fn open(input: &'a mut dyn Read) -> Result<Self> {
        let error = |what: String| Error::Perplexity(format!("llama.cpp logits: {what}"));
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|e| error(format!("reading the header: {e}")))?;
        if &magic != b"_logits_" {
            return Err(error(
                "not a file saved by llama-perplexity (bad magic)".into(),
            ));
        }
        let mut word = |what: &str| -> Result<u32> {
            let mut b = [0u8; 4];
            input
                .read_exact(&mut b)
                .map_err(|e| error(format!("reading {what}: {e}")))?;
            Ok(u32::from_le_bytes(b))
        };
        let ctx = word("the context")? as usize;
        let vocab = word("the vocabulary size")? as usize;
        let chunks = word("the chunk count")? as usize;
        if ctx < 4 || vocab == 0 || chunks == 0 || vocab > 1 << 24 || chunks > 1 << 20 {
            return Err(error(format!(
                "implausible header: ctx {ctx}, vocab {vocab}, chunks {chunks}"
            )));
        }
        let mut bytes = Vec::new();
        let len = 4 * chunks * ctx;
        input
            .take(len as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| error(format!("reading the tokens: {e}")))?;
        if bytes.len() != len {
            return Err(error("the file ends inside the tokens".into()));
        }
        let tokens = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Self {
            input,
            ctx,
            vocab,
            chunks,
            tokens,
            next_chunk: 0,
        })
    }
}

impl ChunkScorer for LlamaCppLogits<'_> {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn score(
        &mut self,
        input: &[u32],
        first: usize,
        row: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let chunk = self.next_chunk;
        if chunk >= self.chunks || input.len() != self.ctx || first != first_scored(self.ctx) {
            return Err(Error::Perplexity(format!(
                "the llama.cpp logits hold {} chunks of {} tokens; asked for chunk {} of {}",
                self.chunks,
                self.ctx,
                chunk + 1,
                input.len()
            )));
        }
        let own = &self.tokens[chunk * self.ctx..(chunk + 1) * self.ctx];
        if input[1..] != own[1..] {
            return Err(Error::Perplexity(format!(
                "chunk {} of the llama.cpp logits is over other tokens than this run's",
                chunk + 1
            )));
        }
        self.next_chunk += 1;
        // Rows are padded to an even count of u16 after 4 u16 of header.
        let stride = 2 * self.vocab.div_ceil(2) + 4;
        let mut bytes = vec![0u8; 2 * stride];
        let mut logits = vec![0f32; self.vocab];
        for position in first..self.ctx - 1 {
            self.input.read_exact(&mut bytes).map_err(|e| {
                Error::Perplexity(format!(
                    "llama.cpp logits: reading chunk {} position {position}: {e}",
                    chunk + 1
                ))
            })?;
            let f = |at: usize| {
                f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
            };
            let (scale, floor) = (f(0), f(4));
            let mut stored_mass = 0f64;
            let mut floored = 0usize;
            for (i, logit) in logits.iter_mut().enumerate() {
                let q = u16::from_le_bytes([bytes[8 + 2 * i], bytes[9 + 2 * i]]);
                if q == 0 && scale > 0.0 {
                    floored += 1;
                    *logit = f32::NEG_INFINITY;
                } else {
                    *logit = scale * q as f32 + floor;
                    stored_mass += (*logit as f64).exp();
                }
            }
            // Rounding can make the stored mass reach 1; the floored tokens
            // then get the floor itself, which bounds them from above.
            let missing = 1.0 - stored_mass;
            if floored > 0 {
                let each = if missing > 0.0 {
                    ((missing / floored as f64).ln() as f32).min(floor)
                } else {
                    floor
                };
                logits
                    .iter_mut()
                    .filter(|l| l.is_infinite())
                    .for_each(|l| *l = each);
            }
            row(position, &logits)?;
        }
        Ok(())
    }
}
