//! BLEU-1..4 as pycocoevalcap computes it (bleu/bleu_scorer.py, after David Chiang's scorer).
//!
//! Clipped n-gram counts against the per-n-gram maximum over references; the effective reference
//! length is the 'closest' one (ties go to the shorter); the corpus score pools counts and lengths
//! over images; per-image scores add the scorer's smoothing constants (1e-15 to the numerator,
//! 1e-9 to the denominator) so a zero count still gives a (tiny) finite value.

use std::collections::{BTreeMap, HashMap};

/// Maximum n-gram order.
pub const MAX_N: usize = 4;
// Note the names are swapped relative to their size, as in bleu_scorer.py.
const SMALL: f64 = 1e-9;
const TINY: f64 = 1e-15;

/// n-gram counts of a whitespace-split sentence, orders 1..=n (ordered, so that floating-point
/// sums over them are the same on every run).
pub(crate) fn ngram_counts<'a>(words: &[&'a str], n: usize) -> BTreeMap<Vec<&'a str>, usize> {
    let mut counts = BTreeMap::new();
    for k in 1..=n {
        for w in words.windows(k) {
            *counts.entry(w.to_vec()).or_insert(0) += 1;
        }
    }
    counts
}

/// Sufficient statistics of one candidate against its references.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuStats {
    pub test_len: usize,
    /// The closest reference length.
    pub ref_len: usize,
    pub guess: [usize; MAX_N],
    pub correct: [usize; MAX_N],
}

/// Statistics of a tokenised candidate against tokenised references (split on whitespace).
pub fn bleu_stats(candidate: &str, references: &[String]) -> BleuStats {
    let mut max_counts: HashMap<Vec<&str>, usize> = HashMap::new();
    let mut ref_lens = Vec::with_capacity(references.len());
    for r in references {
        let words: Vec<&str> = r.split_whitespace().collect();
        ref_lens.push(words.len());
        for (g, c) in ngram_counts(&words, MAX_N) {
            let e = max_counts.entry(g).or_insert(0);
            *e = (*e).max(c);
        }
    }
    let words: Vec<&str> = candidate.split_whitespace().collect();
    let test_len = words.len();
    let ref_len = ref_lens.iter().copied().min_by_key(|&l| (l.abs_diff(test_len), l)).unwrap_or(0);
    let mut guess = [0; MAX_N];
    for (k, g) in guess.iter_mut().enumerate() {
        *g = (test_len + 1).saturating_sub(k + 1);
    }
    let mut correct = [0; MAX_N];
    for (g, c) in ngram_counts(&words, MAX_N) {
        correct[g.len() - 1] += c.min(max_counts.get(&g).copied().unwrap_or(0));
    }
    BleuStats { test_len, ref_len, guess, correct }
}

fn score(test_len: f64, ref_len: f64, guess: &[f64; MAX_N], correct: &[f64; MAX_N]) -> [f64; MAX_N] {
    let mut out = [0.0; MAX_N];
    let mut prod = 1.0;
    for k in 0..MAX_N {
        prod *= (correct[k] + TINY) / (guess[k] + SMALL);
        out[k] = prod.powf(1.0 / (k as f64 + 1.0));
    }
    let ratio = (test_len + TINY) / (ref_len + SMALL);
    if ratio < 1.0 {
        for v in &mut out {
            *v *= (1.0 - 1.0 / ratio).exp();
        }
    }
    out
}

/// Per-image BLEU-1..4 with pycocoevalcap's smoothing.
pub fn sentence_bleu(stats: &BleuStats) -> [f64; MAX_N] {
    let g = stats.guess.map(|v| v as f64);
    let c = stats.correct.map(|v| v as f64);
    score(stats.test_len as f64, stats.ref_len as f64, &g, &c)
}

/// Corpus BLEU-1..4 from pooled statistics.
pub fn corpus_bleu(all: &[BleuStats]) -> [f64; MAX_N] {
    let (mut t, mut r) = (0usize, 0usize);
    let mut g = [0usize; MAX_N];
    let mut c = [0usize; MAX_N];
    for s in all {
        t += s.test_len;
        r += s.ref_len;
        for k in 0..MAX_N {
            g[k] += s.guess[k];
            c[k] += s.correct[k];
        }
    }
    // Python adds the constant to the integer count first, then divides: same here.
    score(t as f64, r as f64, &g.map(|v| v as f64), &c.map(|v| v as f64))
}
