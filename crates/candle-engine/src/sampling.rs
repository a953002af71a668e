//! Choosing the next token from logits.
//!
//! The pipeline, in order: repetition penalty over the recent tokens; then
//! greedy argmax when `temperature == 0`; otherwise temperature, top-k, top-p
//! (nucleus) and min-p filters, and a draw from the renormalised
//! distribution with the sampler's seeded generator. The same parameters and
//! seed always give the same tokens.

use crate::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is chosen. `Default` is greedy decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 selects the most likely token (greedy).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens; 0 disables the filter.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches
    /// `top_p`; 1 disables the filter.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0
    /// disables the filter.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens by
    /// this factor (CTRL-style); 1 disables it.
    pub repetition_penalty: f32,
    /// How many of the most recent tokens the repetition penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            seed: 299_792_458,
        }
    }
}

impl SamplingParams {
    /// Checks every parameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name, value: f32, expected| Error::InvalidSamplingParameter {
            name,
            value: value.to_string(),
            expected,
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(invalid(
                "temperature",
                self.temperature,
                "a finite number >= 0",
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid("top_p", self.top_p, "a number in (0, 1]"));
        }
        if !(self.min_p >= 0.0 && self.min_p < 1.0) {
            return Err(invalid("min_p", self.min_p, "a number in [0, 1)"));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(invalid(
                "repetition_penalty",
                self.repetition_penalty,
                "a finite number > 0",
            ));
        }
        Ok(())
    }
}

/// Picks tokens according to [`SamplingParams`]; one per sequence, since it
/// owns that sequence's random stream.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Scratch space reused across calls: (token id, logit or probability).
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            rng: StdRng::seed_from_u64(params.seed),
            params,
            candidates: Vec::new(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token given the logits over the vocabulary and the tokens of
    /// the sequence so far (prompt and generated), oldest first. NaN logits
    /// count as impossible tokens.
    pub fn sample(&mut self, logits: &[f32], previous: &[u32]) -> Result<u32> {
        let p = &self.params;
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .map(|(id, &l)| (id as u32, if l.is_nan() { f32::NEG_INFINITY } else { l })),
        );
        if p.repetition_penalty != 1.0 {
            let recent = &previous[previous.len().saturating_sub(p.repeat_last_n)..];
            for &id in recent {
                if let Some((_, logit)) = self.candidates.get_mut(id as usize) {
                    *logit = if *logit > 0.0 {
                        *logit / p.repetition_penalty
                    } else {
                        *logit * p.repetition_penalty
                    };
                }
            }
        }
        let best = self
            .candidates
            .iter()
            .filter(|(_, l)| *l > f32::NEG_INFINITY)
            .fold(None::<(u32, f32)>, |best, &(id, l)| match best {
                Some((_, bl)) if bl >= l => best,
                _ => Some((id, l)),
            })
            .ok_or(Error::EmptyDistribution {
                what: "logits that are all -inf or NaN",
            })?;
        if p.temperature == 0.0 {
            return Ok(best.0);
        }

        let (max_logit, inv_t) = (best.1, 1.0 / p.temperature);
        self.candidates.retain(|(_, l)| *l > f32::NEG_INFINITY);
        for (_, l) in self.candidates.iter_mut() {
            *l = ((*l - max_logit) * inv_t).exp();
        }
        keep_likely(&mut self.candidates, p.top_k, p.top_p, p.min_p);
        // Any fixed order of the kept tokens draws each with its
        // probability; the filters leave a deterministic one.
        let total: f32 = self.candidates.iter().map(|c| c.1).sum();
        let mut target = self.rng.random::<f32>() * total;
        for &(id, weight) in &self.candidates {
            if target < weight {
                return Ok(id);
            }
            target -= weight;
        }
        // Rounding can leave `target` a hair above the last weight.
        Ok(self.candidates.last().map_or(best.0, |c| c.0))
    }
}

/// Most likely first; ties by id, so that the order is total.
fn more_likely(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Keeps the `(token, weight)` candidates that top-k, top-p and min-p (each
/// off at 0, 1 and 0) all keep. Each filter keeps a most-likely prefix of
/// the sorted candidates, so only as much is sorted as the prefix needs:
/// a full sort of a 50k-token vocabulary per token would cost more than a
/// decode step of a small model.
fn keep_likely(candidates: &mut Vec<(u32, f32)>, top_k: usize, top_p: f32, min_p: f32) {
    if top_k > 0 && top_k < candidates.len() {
        candidates.select_nth_unstable_by(top_k - 1, more_likely);
        candidates.truncate(top_k);
    }
    // top-p's mass is relative to what top-k kept, before min-p.
    let total: f32 = candidates.iter().map(|c| c.1).sum();
    if min_p > 0.0 {
        let most = candidates.iter().map(|c| c.1).fold(0.0, f32::max);
        candidates.retain(|c| c.1 >= min_p * most);
    }
    if top_p >= 1.0 {
        return;
    }
    // Sort a growing prefix until it holds top-p's mass.
    let mut sorted = 64.min(candidates.len());
    loop {
        if sorted < candidates.len() {
            candidates.select_nth_unstable_by(sorted - 1, more_likely);
        }
        candidates[..sorted].sort_unstable_by(more_likely);
        let mut cumulative = 0.0;
        if let Some(last) = candidates[..sorted].iter().position(|c| {
            cumulative += c.1;
            cumulative >= top_p * total
        }) {
            candidates.truncate(last + 1);
            return;
        }
        if sorted == candidates.len() {
            return;
        }
        sorted = (sorted * 4).min(candidates.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        };
        f(&mut p);
        p
    }

    /// Logits whose softmax is exactly `probs`.
    fn logits_of(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    fn frequencies(sampler: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            counts[sampler.sample(logits, &[]).unwrap() as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    /// |observed - expected| within 5 standard errors of a binomial
    /// proportion over `draws` draws (a false failure has probability < 1e-6
    /// per cell, and the seed makes the outcome fixed anyway).
    fn assert_close(observed: &[f64], expected: &[f64], draws: usize) {
        for (o, e) in observed.iter().zip(expected) {
            let sigma = (e * (1.0 - e) / draws as f64).sqrt().max(1e-9);
            assert!(
                (o - e).abs() <= 5.0 * sigma,
                "observed {observed:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn greedy_takes_the_argmax_and_the_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[]).unwrap(), 1);
    }

    #[test]
    fn temperature_one_reproduces_the_softmax_distribution() {
        let probs = [0.5, 0.3, 0.15, 0.05];
        let mut s = Sampler::new(params(|_| ())).unwrap();
        let draws = 20_000;
        assert_close(
            &frequencies(&mut s, &logits_of(&probs), draws),
            &[0.5, 0.3, 0.15, 0.05],
            draws,
        );
    }

    #[test]
    fn temperature_sharpens_as_the_power_of_the_probabilities() {
        // softmax(l / T) ∝ p^(1/T): T = 0.5 squares the probabilities.
        let probs = [0.6f32, 0.4];
        let mut s = Sampler::new(params(|p| p.temperature = 0.5)).unwrap();
        let draws = 20_000;
        let expected = [0.36 / 0.52, 0.16 / 0.52];
        assert_close(
            &frequencies(&mut s, &logits_of(&probs), draws),
            &expected,
            draws,
        );
    }

    #[test]
    fn top_k_top_p_and_min_p_keep_exactly_their_sets() {
        let probs = [0.5, 0.3, 0.15, 0.05];
        let logits = logits_of(&probs);
        let draws = 20_000;
        let mut top_k = Sampler::new(params(|p| p.top_k = 2)).unwrap();
        assert_close(
            &frequencies(&mut top_k, &logits, draws),
            &[0.625, 0.375, 0.0, 0.0],
            draws,
        );
        // 0.5 + 0.3 = 0.8 is the first cumulative mass >= 0.7.
        let mut top_p = Sampler::new(params(|p| p.top_p = 0.7)).unwrap();
        assert_close(
            &frequencies(&mut top_p, &logits, draws),
            &[0.625, 0.375, 0.0, 0.0],
            draws,
        );
        // min_p 0.25 keeps tokens with p >= 0.125: the first three.
        let mut min_p = Sampler::new(params(|p| p.min_p = 0.25)).unwrap();
        assert_close(
            &frequencies(&mut min_p, &logits, draws),
            &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
            draws,
        );
    }

    #[test]
    fn filters_on_a_large_vocabulary_keep_the_sets_their_definitions_give() {
        // Weights 1/(1 + i) in a scrambled id order: token t has weight
        // 1/(1 + rank(t)), so each filter's set is known by rank.
        let n = 5000usize;
        let rank = |id: usize| (id * 7919) % n;
        let weights: Vec<(u32, f32)> = (0..n)
            .map(|id| (id as u32, 1.0 / (1.0 + rank(id) as f32)))
            .collect();
        let total: f32 = weights.iter().map(|c| c.1).sum();
        let kept = |k, p, m| {
            let mut c = weights.clone();
            keep_likely(&mut c, k, p, m);
            let mut ranks: Vec<usize> = c.iter().map(|&(id, _)| rank(id as usize)).collect();
            ranks.sort_unstable();
            ranks
        };
        assert_eq!(kept(40, 1.0, 0.0), (0..40).collect::<Vec<_>>());
        // min-p 0.01 keeps weights >= 0.01: ranks 0..=99.
        assert_eq!(kept(0, 1.0, 0.01), (0..100).collect::<Vec<_>>());
        // top-p: the shortest rank prefix whose mass reaches p (the harmonic
        // numbers), found past the first sorted block of 64.
        let p = 0.8;
        let mut cumulative = 0.0;
        let needed = (0..n)
            .position(|r| {
                cumulative += 1.0 / (1.0 + r as f32);
                cumulative >= p * total
            })
            .unwrap()
            + 1;
        assert!(needed > 64, "the prefix must outgrow the first block");
        assert_eq!(kept(0, p, 0.0), (0..needed).collect::<Vec<_>>());
        // Together: top-k first, then top-p of what it kept.
        // 1 + 1/2 = 1.5 reaches 0.5 * H(10) = 1.46; 1 alone does not.
        assert_eq!(kept(10, 0.5, 0.0), [0, 1]);
        assert_eq!(kept(0, 1.0, 0.0).len(), n);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        // Token 0 would win; penalising it by 4 moves its logit 2.0 -> 0.5,
        // below token 1's 1.0. A negative logit is pushed further down.
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 4.0,
            ..SamplingParams::default()
        })
        .unwrap();
        assert_eq!(s.sample(&[2.0, 1.0, -0.1], &[0]).unwrap(), 1);
        assert_eq!(s.sample(&[-0.2, -0.3, -5.0], &[0]).unwrap(), 1);
        // Tokens older than repeat_last_n are not penalised.
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 4.0,
            repeat_last_n: 1,
            ..SamplingParams::default()
        })
        .unwrap();
        assert_eq!(s.sample(&[2.0, 1.0, -0.1], &[0, 2]).unwrap(), 0);
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let logits = logits_of(&[0.25, 0.25, 0.25, 0.25]);
        let run = |seed| {
            let mut s = Sampler::new(params(|p| p.seed = seed)).unwrap();
            (0..64)
                .map(|_| s.sample(&logits, &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn invalid_parameters_are_named() {
        for (p, name) in [
            (params(|p| p.temperature = -1.0), "temperature"),
            (params(|p| p.temperature = f32::NAN), "temperature"),
            (params(|p| p.top_p = 0.0), "top_p"),
            (params(|p| p.top_p = 1.5), "top_p"),
            (params(|p| p.min_p = 1.0), "min_p"),
            (params(|p| p.repetition_penalty = 0.0), "repetition_penalty"),
        ] {
            match Sampler::new(p) {
                Err(Error::InvalidSamplingParameter { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn nan_and_infinite_logits_are_never_chosen_and_all_masked_is_an_error() {
        let mut s = Sampler::new(params(|_| ())).unwrap();
        for _ in 0..100 {
            assert_eq!(
                s.sample(&[f32::NAN, 0.0, f32::NEG_INFINITY], &[]).unwrap(),
                1
            );
        }
        assert!(matches!(
            s.sample(&[f32::NAN, f32::NEG_INFINITY], &[]),
            Err(Error::EmptyDistribution { .. })
        ));
    }
}
