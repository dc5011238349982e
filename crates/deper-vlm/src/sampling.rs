//! Seeded next-token selection: greedy, or sampling with temperature, top-k and top-p, after an
//! optional repetition penalty.
//!
//! The logits processors follow transformers' order and rules (`RepetitionPenaltyLogitsProcessor`,
//! `TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`): the penalty divides positive and
//! multiplies negative logits of every token already in the sequence; top-k keeps every token whose logit
//! reaches the k-th largest; top-p keeps the smallest set of most likely tokens whose probability reaches
//! `top_p` (at least one). Greedy is the first maximum, like `argmax`. The random source is a small
//! seeded generator (SplitMix64), so a seed reproduces a generation exactly on any machine.

use serde::{Deserialize, Serialize};

/// How to pick the next token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// `0` (or `greedy`) picks the most likely token.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Nucleus sampling threshold in `(0, 1]` (`None`: off).
    pub top_p: Option<f32>,
    /// `1.0` disables it.
    pub repetition_penalty: f32,
    pub seed: u64,
    /// Ignore temperature, top-k and top-p: argmax.
    pub greedy: bool,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingConfig {
    pub fn greedy() -> Self {
        Self { temperature: 0.0, top_k: None, top_p: None, repetition_penalty: 1.0, seed: 0, greedy: true }
    }

    /// Sampling at `temperature` with a seed; add top-k / top-p with the struct fields.
    pub fn sample(temperature: f32, seed: u64) -> Self {
        Self { temperature, seed, greedy: false, ..Self::greedy() }
    }
}

/// A seeded sampler; one per generation.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    state: u64,
}

impl Sampler {
    pub fn new(config: SamplingConfig) -> Self {
        let state = config.seed;
        Self { config, state }
    }

    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// SplitMix64.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the next token from one row of logits; `previous` are the ids already in the sequence
    /// (prompt and generated), for the repetition penalty.
    pub fn next_token(&mut self, logits: &[f32], previous: &[u32]) -> u32 {
        let mut scores = logits.to_vec();
        let penalty = self.config.repetition_penalty;
        if penalty != 1.0 {
            let mut seen = vec![false; scores.len()];
            for &id in previous {
                if let Some(s) = seen.get_mut(id as usize) {
                    *s = true;
                }
            }
            for (score, _) in scores.iter_mut().zip(&seen).filter(|(_, &s)| s) {
                *score = if *score < 0.0 { *score * penalty } else { *score / penalty };
            }
        }
        if self.config.greedy || self.config.temperature <= 0.0 {
            return argmax(&scores);
        }
        let t = self.config.temperature;
        scores.iter_mut().for_each(|s| *s /= t);
        if let Some(k) = self.config.top_k.filter(|&k| k > 0 && k < scores.len()) {
            let mut sorted = scores.clone();
            sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            scores.iter_mut().filter(|s| **s < kth).for_each(|s| *s = f32::NEG_INFINITY);
        }
        if let Some(p) = self.config.top_p.filter(|&p| p < 1.0) {
            let probs = softmax(&scores);
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let mut cumulative = 0.0f64;
            let mut keep = vec![false; scores.len()];
            for &i in &order {
                keep[i] = true;
                cumulative += f64::from(probs[i]);
                if cumulative >= f64::from(p) {
                    break;
                }
            }
            scores.iter_mut().zip(&keep).filter(|(_, &k)| !k).for_each(|(s, _)| *s = f32::NEG_INFINITY);
        }
        let probs = softmax(&scores);
        let u = self.next_f64();
        let mut cumulative = 0.0f64;
        let mut last_possible = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                last_possible = i;
                cumulative += f64::from(p);
                if u < cumulative {
                    return i as u32;
                }
            }
        }
        last_possible as u32
    }
}

/// Index of the first maximum.
pub fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best as u32
}

fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = scores.iter().map(|&s| f64::from(s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|&e| (e / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_first_argmax() {
        let mut s = Sampler::new(SamplingConfig::greedy());
        assert_eq!(s.next_token(&[0.0, 3.0, 3.0, 1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_follows_hf() {
        let mut s = Sampler::new(SamplingConfig { repetition_penalty: 2.0, ..SamplingConfig::greedy() });
        // Token 1 (3.0 → 1.5) loses to token 3 (2.0).
        assert_eq!(s.next_token(&[0.0, 3.0, -1.0, 2.0], &[1]), 3);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let logits = [1.0, 2.0, 0.5, 1.5, -1.0];
        let config = SamplingConfig { top_k: Some(2), ..SamplingConfig::sample(1.0, 7) };
        let run = |c: &SamplingConfig| {
            let mut s = Sampler::new(c.clone());
            (0..50).map(|_| s.next_token(&logits, &[])).collect::<Vec<_>>()
        };
        let a = run(&config);
        assert_eq!(a, run(&config));
        assert!(a.iter().all(|&t| t == 1 || t == 3));
        assert!(a.contains(&1) && a.contains(&3));
        let top_p = SamplingConfig { top_p: Some(0.1), ..SamplingConfig::sample(1.0, 3) };
        assert!(run(&top_p).iter().all(|&t| t == 1));
    }
}
