//! CIDEr-D as pycocoevalcap computes it under the name "CIDEr" (cider/cider_scorer.py).
//!
//! TF-IDF vectors of 1- to 4-grams, document frequency counted over the images being scored (an
//! image is one document made of its references), so a single image alone scores 0; cosine
//! similarity with the candidate's weights clipped to the reference's, a Gaussian penalty on the
//! length difference (sigma = 6), averaged over n and references and multiplied by 10.
//!
//! The "length" in the penalty is the reference implementation's: the number of *bigrams* (it
//! counts n-grams whose index `len(ngram) - 1` equals 1), kept here so the scores match.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::bleu::ngram_counts;

/// Maximum n-gram order.
pub const MAX_N: usize = 4;
/// Standard deviation of the length penalty.
pub const SIGMA: f64 = 6.0;

/// A CIDEr-D scorer holding the document frequencies of a set of images' references.
#[derive(Debug, Clone)]
pub struct CiderD {
    doc_freq: HashMap<Vec<String>, f64>,
    log_ref_len: f64,
}

struct Vector {
    // Ordered so that sums, and so scores, are the same on every run.
    vec: [BTreeMap<Vec<String>, f64>; MAX_N],
    norm: [f64; MAX_N],
    length: f64,
}

impl CiderD {
    /// Document frequencies from the tokenised references of every image to be scored.
    pub fn new<'a>(images: impl IntoIterator<Item = &'a [String]>) -> Self {
        let mut doc_freq: HashMap<Vec<String>, f64> = HashMap::new();
        let mut n_images = 0usize;
        for refs in images {
            n_images += 1;
            let mut seen: HashSet<Vec<String>> = HashSet::new();
            for r in refs {
                let words: Vec<&str> = r.split_whitespace().collect();
                for g in ngram_counts(&words, MAX_N).into_keys() {
                    seen.insert(g.into_iter().map(str::to_string).collect());
                }
            }
            for g in seen {
                *doc_freq.entry(g).or_insert(0.0) += 1.0;
            }
        }
        Self { doc_freq, log_ref_len: (n_images as f64).ln() }
    }

    fn vector(&self, sentence: &str) -> Vector {
        let words: Vec<&str> = sentence.split_whitespace().collect();
        let mut v = Vector { vec: Default::default(), norm: [0.0; MAX_N], length: 0.0 };
        for (g, tf) in ngram_counts(&words, MAX_N) {
            let key: Vec<String> = g.iter().map(|s| s.to_string()).collect();
            let df = self.doc_freq.get(&key).copied().unwrap_or(0.0).max(1.0).ln();
            let n = g.len() - 1;
            let w = tf as f64 * (self.log_ref_len - df);
            v.norm[n] += w * w;
            if n == 1 {
                v.length += tf as f64;
            }
            v.vec[n].insert(key, w);
        }
        v.norm = v.norm.map(f64::sqrt);
        v
    }

    fn sim(&self, hyp: &Vector, reference: &Vector) -> [f64; MAX_N] {
        let delta = hyp.length - reference.length;
        let mut val = [0.0; MAX_N];
        for (n, v) in val.iter_mut().enumerate() {
            for (g, &h) in &hyp.vec[n] {
                let r = reference.vec[n].get(g).copied().unwrap_or(0.0);
                *v += h.min(r) * r;
            }
            if hyp.norm[n] != 0.0 && reference.norm[n] != 0.0 {
                *v /= hyp.norm[n] * reference.norm[n];
            }
            *v *= std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
        }
        val
    }

    /// CIDEr-D of a tokenised candidate against its image's tokenised references.
    pub fn score(&self, candidate: &str, references: &[String]) -> f64 {
        if references.is_empty() {
            return 0.0;
        }
        let hyp = self.vector(candidate);
        let mut acc = [0.0; MAX_N];
        for r in references {
            let s = self.sim(&hyp, &self.vector(r));
            for n in 0..MAX_N {
                acc[n] += s[n];
            }
        }
        let mean = acc.iter().sum::<f64>() / MAX_N as f64;
        mean / references.len() as f64 * 10.0
    }
}
