//! Perplexity and KL-divergence against mathematical facts: a bigram "model"
//! whose perplexity is computed by hand, a run compared with itself, with a
//! shifted copy of itself and with a distribution whose KL-divergence has a
//! closed form; the saved-logits format round-trips and rejects bad or
//! mismatched input with a clear message.

use candle_engine::perplexity::{
    chunk_count, evaluate, ChunkScorer, Evaluation, PositionRecord, SavedLogits, Settings,
};
use candle_engine::Result;

/// A model whose next-token distribution depends only on the previous
/// token: `logits(prev) = ln P[prev] + shift(prev)` (the shift is any
/// per-row constant, which softmax must ignore), optionally perturbed.
struct Bigram {
    probs: Vec<Vec<f64>>,
    bos: u32,
    /// Added to logit `i` of every row.
    perturbation: Vec<f32>,
}

impl ChunkScorer for Bigram {
    fn vocab_size(&self) -> usize {
        self.probs.len()
    }

    fn score(
        &mut self,
        input: &[u32],
        first: usize,
        row: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        assert_eq!(input[0], self.bos, "each chunk starts with BOS");
        for (position, &prev) in input.iter().enumerate().take(input.len() - 1).skip(first) {
            let prev = prev as usize;
            let logits: Vec<f32> = self.probs[prev]
                .iter()
                .zip(&self.perturbation)
                .map(|(p, d)| (p.ln() + prev as f64 * 3.0) as f32 + d)
                .collect();
            row(position, &logits)?;
        }
        Ok(())
    }
}

/// Token 0 is BOS (never scored as a predecessor here); from 1 the next
/// token is 2 or 3 with 1/2 each; from 2 it is 1 with 1/4, 3 with 3/4;
/// from 3 it is 1 with 1/2, 2 with 1/4, 3 with 1/4.
fn bigram() -> Bigram {
    Bigram {
        probs: vec![
            vec![0.25, 0.25, 0.25, 0.25],
            vec![1e-9, 1e-9, 0.5, 0.5 - 2e-9],
            vec![1e-9, 0.25, 1e-9, 0.75 - 2e-9],
            vec![1e-9, 0.5, 0.25, 0.25 - 1e-9],
        ],
        bos: 0,
        perturbation: vec![0.0; 4],
    }
}

fn settings(ctx: usize) -> Settings {
    Settings {
        ctx,
        max_chunks: None,
        bos: Some(0),
        top_k: 4,
    }
}

fn run(
    scorer: &mut dyn ChunkScorer,
    tokens: &[u32],
    settings: &Settings,
    save: bool,
    base: Option<&SavedLogits>,
) -> Evaluation {
    evaluate(tokens, settings, scorer, save, base, &mut |_| {}).unwrap()
}

#[test]
fn bigram_perplexity_equals_the_hand_computed_value() {
    // ctx 8: positions 4, 5, 6 of each chunk predict tokens 5, 6, 7.
    // Chunk 1 scores 3->1 (1/2), 1->2 (1/2), 2->1 (1/4);
    // chunk 2 scores 1->3 (1/2), 3->2 (1/4), 2->3 (3/4). The first token of
    // each chunk (3 and 2 here) is replaced by BOS; the trailing token
    // (an incomplete chunk) is ignored.
    let tokens = [
        3, 1, 2, 3, 3, 1, 2, 1, //
        2, 2, 3, 1, 1, 3, 2, 3, //
        1,
    ];
    let mut model = bigram();
    let result = run(&mut model, &tokens, &settings(8), false, None);
    let nlls = [0.5f64, 0.5, 0.25, 0.5, 0.25, 0.75].map(|p| -p.ln());
    let n = nlls.len() as f64;
    let mean = nlls.iter().sum::<f64>() / n;
    let expected_ppl = mean.exp();
    // (1/2)^3 (1/4)^2 (3/4) = 3/512, so PPL = (512/3)^(1/6).
    assert!((expected_ppl - (512.0f64 / 3.0).powf(1.0 / 6.0)).abs() < 1e-12);
    let variance = nlls.iter().map(|v| v * v).sum::<f64>() / n - mean * mean;
    let expected_stderr = expected_ppl * (variance / (n - 1.0)).sqrt();
    let stats = &result.perplexity;
    assert_eq!(stats.count(), 6);
    // The logits are f32: ln p is exact to ~1e-7 relative.
    assert!(
        (stats.ppl() - expected_ppl).abs() < 1e-6,
        "{} vs {expected_ppl}",
        stats.ppl()
    );
    assert!(
        (stats.ppl_stderr() - expected_stderr).abs() < 1e-6,
        "{} vs {expected_stderr}",
        stats.ppl_stderr()
    );
}

#[test]
fn chunks_are_limited_by_the_text_and_by_the_request() {
    let s = |ctx, max_chunks| Settings {
        max_chunks,
        ..settings(ctx)
    };
    assert_eq!(chunk_count(100, &s(8, None)).unwrap(), 12);
    assert_eq!(chunk_count(100, &s(8, Some(3))).unwrap(), 3);
    assert_eq!(chunk_count(100, &s(8, Some(50))).unwrap(), 12);
    let short = chunk_count(15, &s(8, None)).unwrap_err().to_string();
    assert!(
        short.contains("15 tokens") && short.contains("at least 16"),
        "{short}"
    );
    let tiny = chunk_count(100, &s(2, None)).unwrap_err().to_string();
    assert!(tiny.contains("at least 4"), "{tiny}");
    let zero = chunk_count(100, &s(8, Some(0))).unwrap_err().to_string();
    assert!(zero.contains("--chunks"), "{zero}");
}

fn sample_tokens(n: usize) -> Vec<u32> {
    let mut state = 12345u64;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            1 + ((state >> 33) % 3) as u32
        })
        .collect()
}

#[test]
fn a_run_against_itself_has_zero_divergence() {
    let tokens = sample_tokens(64);
    let base = run(&mut bigram(), &tokens, &settings(16), true, None)
        .saved
        .unwrap();
    let again = run(&mut bigram(), &tokens, &settings(16), false, Some(&base));
    let summary = again.kld.unwrap().summary().unwrap();
    assert_eq!(summary.count, 4 * 7);
    // The base's log-probabilities are stored as f32.
    assert!(summary.kld.value.abs() < 1e-7, "{:?}", summary.kld);
    assert_eq!(summary.same_top.value, 1.0);
    assert!(summary.p_diff_rms.value < 1e-7);
    assert!((summary.ppl_ratio.value - 1.0).abs() < 1e-6);
    assert!((summary.ppl.value - again.perplexity.ppl()).abs() < 1e-9);
}

/// Logits `z` against base logits `y`: KL(softmax y ‖ softmax z) in f64.
fn closed_form_kld(y: &[f64], z: &[f64]) -> f64 {
    let lse = |v: &[f64]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
    let (ly, lz) = (lse(y), lse(z));
    y.iter()
        .zip(z)
        .map(|(a, b)| (a - ly).exp() * ((a - ly) - (b - lz)))
        .sum()
}

#[test]
fn divergence_from_a_known_distribution_equals_the_closed_form() {
    let tokens = sample_tokens(64);
    let base = run(&mut bigram(), &tokens, &settings(16), true, None)
        .saved
        .unwrap();
    let perturbation = vec![0.3f32, -0.2, 0.7, 0.0];
    let mut other = Bigram {
        perturbation: perturbation.clone(),
        ..bigram()
    };
    let result = run(&mut other, &tokens, &settings(16), false, Some(&base));
    let stats = result.kld.unwrap();
    // Every scored position's base row is P[prev]; the other is P[prev]
    // tilted by exp(perturbation).
    let probs = bigram().probs;
    let first = 8;
    let mut expected = 0.0;
    let mut count = 0;
    for chunk in 0..4 {
        for position in first..15 {
            let prev = tokens[chunk * 16 + position] as usize;
            let y: Vec<f64> = probs[prev].iter().map(|p| p.ln()).collect();
            let z: Vec<f64> = y
                .iter()
                .zip(&perturbation)
                .map(|(a, &d)| a + d as f64)
                .collect();
            expected += closed_form_kld(&y, &z);
            count += 1;
        }
    }
    expected /= count as f64;
    let got = stats.mean_kld();
    assert!(expected > 0.01);
    assert!(
        (got - expected).abs() < 1e-6 * expected.max(1.0),
        "{got} vs {expected}"
    );
}

#[test]
fn a_shifted_copy_has_zero_divergence_even_with_a_truncated_top_k() {
    // Adding one constant to every logit leaves the distribution unchanged:
    // with only the top 2 of 4 tokens saved, the rest term must cancel too.
    let tokens = sample_tokens(64);
    let mut settings = settings(16);
    settings.top_k = 2;
    let base = run(&mut bigram(), &tokens, &settings, true, None)
        .saved
        .unwrap();
    let mut shifted = Bigram {
        perturbation: vec![5.0; 4],
        ..bigram()
    };
    let result = run(&mut shifted, &tokens, &settings, false, Some(&base));
    let kld = result.kld.unwrap().mean_kld();
    assert!(kld.abs() < 1e-6, "{kld}");
}

/// A deterministic pseudo-random normal sample (Box-Muller over an LCG).
fn normals(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos())
        .collect()
}

#[test]
fn top_k_divergence_misses_exactly_the_rest_times_the_tails_divergence() {
    // Rows of a 49152-token vocabulary (logits of spread 2 to 3 with a few
    // strong candidates, from very peaked to very flat), against copies
    // perturbed by noise of 0.1 to 0.5. Splitting KL(p ‖ q) over the top-k
    // T and the rest R (mass r under p, r_q under q) gives exactly
    //   KL = Σ_T p ln(p/q) + r ln(r/r_q) + r KL(p|R ‖ q|R),
    // and the first two terms are what the stored record yields: the
    // estimate is a lower bound that misses r times the divergence of the
    // two tails, normalized.
    let vocab = 49152;
    for (seed, spread, lead, noise) in [
        (1u64, 2.0, 20.0, 0.1f64),
        (2, 3.0, 12.0, 0.2),
        (3, 3.0, 12.0, 0.5),
    ] {
        let mut y: Vec<f64> = normals(vocab, seed).iter().map(|v| spread * v).collect();
        for (i, v) in y.iter_mut().take(5).enumerate() {
            *v += lead - i as f64;
        }
        let z: Vec<f64> = y
            .iter()
            .zip(normals(vocab, seed + 100))
            .map(|(a, e)| a + noise * e)
            .collect();
        let exact = closed_form_kld(&y, &z);
        let base_logits: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        let logits: Vec<f32> = z.iter().map(|&v| v as f32).collect();
        let record = PositionRecord::new(&base_logits, 0, 128);
        let mut stats = candle_engine::perplexity::KldStats::default();
        let estimate = stats.add(&record, &logits, 0);
        let top: std::collections::HashSet<u32> = record.top.iter().map(|&(i, _)| i).collect();
        let (tail_y, tail_z): (Vec<f64>, Vec<f64>) = (0..vocab)
            .filter(|i| !top.contains(&(*i as u32)))
            .map(|i| (y[i], z[i]))
            .unzip();
        let lse = |v: &[f64]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
        let rest = (lse(&tail_y) - lse(&y)).exp();
        let missed = rest * closed_form_kld(&tail_y, &tail_z);
        assert!((record.rest as f64 - rest).abs() < 1e-6 * rest.max(1e-3));
        // f32 logits and stored f32 log-probabilities: ~1e-6 absolute.
        assert!(
            (estimate + missed - exact).abs() < 1e-6,
            "estimate {estimate} + missed {missed} vs exact {exact}"
        );
        assert!(estimate <= exact + 1e-6);
        eprintln!(
            "rest {rest:.4}: top-128 KLD {estimate:.6}, full {exact:.6} ({:.1}% missed)",
            100.0 * missed / exact
        );
    }
}

#[test]
fn saved_logits_round_trip_and_bad_files_fail_cleanly() {
    let tokens = sample_tokens(64);
    let saved = run(&mut bigram(), &tokens, &settings(16), true, None)
        .saved
        .unwrap();
    let mut bytes = Vec::new();
    saved.write_to(&mut bytes).unwrap();
    assert_eq!(bytes.len(), 28 + 4 * 64 + 4 * 7 * (8 + 8 * 4));
    let back = SavedLogits::read_from(&mut bytes.as_slice()).unwrap();
    assert_eq!(back, saved);

    let error = |bytes: &[u8]| {
        SavedLogits::read_from(&mut &bytes[..])
            .unwrap_err()
            .to_string()
    };
    assert!(error(&bytes[..bytes.len() - 3]).contains("ends inside position record 27"));
    assert!(error(b"not a logits file at all").contains("bad magic"));
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(error(&extra).contains("trailing bytes"));
    let mut huge = bytes.clone();
    huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    let message = error(&huge);
    assert!(message.contains("ends inside the tokens"), "{message}");

    // A base over other tokens, another vocabulary or context is refused.
    let mut other = tokens.clone();
    other[20] = if other[20] == 1 { 2 } else { 1 };
    let message = evaluate(
        &other,
        &settings(16),
        &mut bigram(),
        false,
        Some(&saved),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("differ") && message.contains("token 20"),
        "{message}"
    );
    let mut wider = bigram();
    wider.probs.iter_mut().for_each(|p| p.push(1e-9));
    wider.probs.push(vec![0.2; 5]);
    wider.perturbation.push(0.0);
    let message = evaluate(
        &tokens,
        &settings(16),
        &mut wider,
        false,
        Some(&saved),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("vocabulary of 4") && message.contains("5"),
        "{message}"
    );
    let message = evaluate(
        &tokens,
        &settings(8),
        &mut bigram(),
        false,
        Some(&saved),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(message.contains("--ctx 16"), "{message}");
}

/// Writes rows in the layout of llama.cpp's `llama-perplexity` logits file
/// (perplexity.cpp's `log_softmax` with `uint16_t * log_prob`): per row, the
/// step and the floor as two f32, then each log-probability as u16 steps
/// above a floor 16 below the top, 0 for tokens at or below the floor.
fn llamacpp_file(ctx: usize, tokens: &[u32], rows: &[Vec<f64>]) -> Vec<u8> {
    let vocab = rows[0].len();
    let mut out = b"_logits_".to_vec();
    for v in [ctx as u32, vocab as u32, (tokens.len() / ctx) as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    tokens
        .iter()
        .for_each(|t| out.extend_from_slice(&t.to_le_bytes()));
    for row in rows {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        let min = row
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .max(max - 16.0);
        let scale = ((max - min) / 65535.0) as f32;
        out.extend_from_slice(&scale.to_le_bytes());
        out.extend_from_slice(&((min - lse) as f32).to_le_bytes());
        for &l in row {
            let q = if l > min {
                ((l - min) / scale as f64).round() as u16
            } else {
                0
            };
            out.extend_from_slice(&q.to_le_bytes());
        }
        if vocab % 2 == 1 {
            out.extend_from_slice(&[0, 0]);
        }
    }
    out
}

#[test]
fn llama_cpp_logits_replay_to_the_distributions_they_store() {
    // 2 chunks of 8 tokens over a 1001-token vocabulary (odd: rows are
    // padded), rows with a long tail below the 16-nat floor.
    let (ctx, vocab) = (8, 1001);
    let tokens: Vec<u32> = (0..16).map(|i| (i * 37 % vocab) as u32).collect();
    let rows: Vec<Vec<f64>> = (0..2 * 3)
        .map(|r| {
            normals(vocab, 50 + r)
                .iter()
                .enumerate()
                .map(|(i, v)| 6.0 * v + if i == r as usize { 20.0 } else { 0.0 })
                .collect()
        })
        .collect();
    // The base: the same rows, recorded exactly with every token.
    struct Rows<'a>(&'a [Vec<f64>], usize);
    impl ChunkScorer for Rows<'_> {
        fn vocab_size(&self) -> usize {
            self.0[0].len()
        }
        fn score(
            &mut self,
            input: &[u32],
            first: usize,
            row: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
        ) -> Result<()> {
            for position in first..input.len() - 1 {
                let logits: Vec<f32> = self.0[self.1].iter().map(|&v| v as f32).collect();
                self.1 += 1;
                row(position, &logits)?;
            }
            Ok(())
        }
    }
    let settings = Settings {
        ctx,
        max_chunks: None,
        bos: None,
        top_k: vocab,
    };
    let base = run(&mut Rows(&rows, 0), &tokens, &settings, true, None)
        .saved
        .unwrap();
    let bytes = llamacpp_file(ctx, &tokens, &rows);
    let mut reader = bytes.as_slice();
    let mut replay = candle_engine::perplexity::LlamaCppLogits::open(&mut reader).unwrap();
    assert_eq!((replay.ctx, replay.vocab, replay.chunks), (8, vocab, 2));
    assert_eq!(replay.tokens, tokens);
    let result = run(&mut replay, &tokens, &settings, false, Some(&base));
    let summary = result.kld.unwrap().summary().unwrap();
    // Each stored log-probability is within half a step (16/65535/2) of the
    // true one, which alone gives a divergence of the order of that squared
    // (~1e-8); what remains is the floored tokens' mass spread evenly
    // instead of as it was: that mass times the divergence of the two
    // spreads, 1.7e-5 with these heavy tails (spread 6, most tokens below
    // the floor).
    assert!(summary.kld.value.abs() < 5e-5, "{:?}", summary.kld);
    assert_eq!(summary.same_top.value, 1.0);
    // (The perplexity is not compared: these next tokens lie mostly below
    // the floor, whose individual log-probabilities the format drops; the
    // faithfulness table takes llama.cpp's perplexity from its own output.)

    let mut other_tokens = tokens.clone();
    other_tokens[3] += 1;
    let mut reader = bytes.as_slice();
    let mut replay = candle_engine::perplexity::LlamaCppLogits::open(&mut reader).unwrap();
    let message = evaluate(
        &other_tokens,
        &settings,
        &mut replay,
        false,
        None,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(message.contains("other tokens"), "{message}");
    let message = candle_engine::perplexity::LlamaCppLogits::open(&mut &bytes[..40])
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("ends inside the tokens"), "{message}");
}
