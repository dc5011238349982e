//! Personalisation metrics.
//!
//! - [`personalization_score`]: for images described by several subjects, the fraction of
//!   (image, subject) pairs where the subject's own reference ranks the prediction made for that
//!   subject strictly first among the predictions made for all of the image's subjects, under a
//!   chosen sentence metric ([`SentenceMetric`]).
//! - [`noun_order_score`]: Needleman-Wunsch alignment of the nouns of a candidate and a reference
//!   (in order), with exact, stem and synonym credit. Nouns come from a caller-given noun set (no
//!   part-of-speech tagger offline) and synonyms from a caller-given map.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::bleu::{bleu_stats, sentence_bleu};
use crate::cider::CiderD;
use crate::meteor::Meteor;
use crate::rouge::rouge_l;
use crate::tokenize::coco_tokenize;
use crate::EvalError;

/// The sentence metric used to rank predictions against one reference.
pub enum SentenceMetric<'a> {
    /// Per-image BLEU-4 with pycocoevalcap's smoothing.
    Bleu4,
    /// ROUGE-L.
    RougeL,
    /// CIDEr-D; document frequencies from all references of the input, one document per
    /// (image, subject) reference.
    CiderD,
    /// METEOR (exact + stem, or the scorer given).
    Meteor(&'a Meteor),
    /// Any function of (tokenised candidate, tokenised reference).
    Custom(&'a dyn Fn(&str, &str) -> f64),
}

impl std::fmt::Debug for SentenceMetric<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bleu4 => "Bleu4",
            Self::RougeL => "RougeL",
            Self::CiderD => "CiderD",
            Self::Meteor(_) => "Meteor",
            Self::Custom(_) => "Custom",
        })
    }
}

/// Result of [`personalization_score`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonalizationScore {
    /// Fraction of counted (image, subject) pairs ranked first.
    pub score: f64,
    /// Pairs ranked first.
    pub hits: usize,
    /// Pairs counted (images with at least two subjects holding both a reference and a prediction).
    pub pairs: usize,
}

/// Per image, per subject: a caption.
pub type PerSubject = BTreeMap<String, BTreeMap<String, String>>;

/// Own-reference ranking score. `references` and `predictions` map image -> subject -> caption;
/// both are tokenised like pycocoevalcap. Every (image, subject) with a reference must have a
/// prediction; images with fewer than two subjects are skipped.
pub fn personalization_score(
    references: &PerSubject,
    predictions: &PerSubject,
    metric: &SentenceMetric<'_>,
) -> Result<PersonalizationScore, EvalError> {
    for (image, subjects) in references {
        for subject in subjects.keys() {
            if !predictions.get(image).is_some_and(|p| p.contains_key(subject)) {
                return Err(EvalError::invalid(
                    format!("image {image:?} subject {subject:?}"),
                    "has a reference but no prediction",
                ));
            }
        }
    }
    let tok = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter().map(|(k, v)| (k.clone(), coco_tokenize(v))).collect()
    };
    let refs: BTreeMap<&String, BTreeMap<String, String>> = references.iter().map(|(i, m)| (i, tok(m))).collect();
    let preds: BTreeMap<&String, BTreeMap<String, String>> =
        predictions.iter().filter(|(i, _)| references.contains_key(*i)).map(|(i, m)| (i, tok(m))).collect();
    let cider_docs: Vec<Vec<String>> = refs.values().flat_map(|m| m.values().map(|r| vec![r.clone()])).collect();
    let cider = matches!(metric, SentenceMetric::CiderD).then(|| CiderD::new(cider_docs.iter().map(Vec::as_slice)));
    let score = |cand: &str, reference: &str| -> f64 {
        let r = [reference.to_string()];
        match metric {
            SentenceMetric::Bleu4 => sentence_bleu(&bleu_stats(cand, &r))[3],
            SentenceMetric::RougeL => rouge_l(cand, &r),
            SentenceMetric::CiderD => cider.as_ref().map_or(0.0, |c| c.score(cand, &r)),
            SentenceMetric::Meteor(m) => m.score(&m.stats(cand, &r)),
            SentenceMetric::Custom(f) => f(cand, reference),
        }
    };
    let (mut hits, mut pairs) = (0usize, 0usize);
    for (image, subject_refs) in &refs {
        if subject_refs.len() < 2 {
            continue;
        }
        let image_preds = &preds[image];
        for (subject, reference) in subject_refs {
            let own = score(&image_preds[subject], reference);
            let first =
                subject_refs.keys().filter(|s| *s != subject).all(|other| score(&image_preds[other], reference) < own);
            pairs += 1;
            hits += usize::from(first);
        }
    }
    let score = if pairs == 0 { 0.0 } else { hits as f64 / pairs as f64 };
    Ok(PersonalizationScore { score, hits, pairs })
}

/// Credits of the noun alignment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NounOrderParams {
    /// Same noun.
    pub exact: f64,
    /// Same Snowball stem.
    pub stem: f64,
    /// Synonyms by the caller's map.
    pub synonym: f64,
    /// Added for each gap (0 or negative).
    pub gap: f64,
}

impl Default for NounOrderParams {
    /// METEOR's English module weights as credits, no gap penalty.
    fn default() -> Self {
        Self { exact: 1.0, stem: 0.6, synonym: 0.8, gap: 0.0 }
    }
}

/// Nouns of a caption in order: tokens (pycocoevalcap tokenisation) whose form or Snowball stem
/// is in `nouns` (compared lower-cased).
pub fn extract_nouns(caption: &str, nouns: &HashSet<String>) -> Vec<String> {
    let stemmer = rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
    let stems: HashSet<String> = nouns.iter().map(|n| stemmer.stem(&n.to_lowercase()).into_owned()).collect();
    coco_tokenize(caption)
        .split_whitespace()
        .filter(|t| nouns.contains(*t) || stems.contains(stemmer.stem(t).as_ref()))
        .map(str::to_string)
        .collect()
}

/// Noun-order score in [0, 1] (for non-negative credits): the Needleman-Wunsch score of the two
/// noun sequences divided by the longer sequence's length; `None` when neither has a noun.
/// `synonyms` maps a noun to its synonyms (looked up both ways).
pub fn noun_order_score(
    candidate: &str,
    reference: &str,
    nouns: &HashSet<String>,
    synonyms: &HashMap<String, Vec<String>>,
    params: &NounOrderParams,
) -> Option<f64> {
    let a = extract_nouns(candidate, nouns);
    let b = extract_nouns(reference, nouns);
    let n = a.len().max(b.len());
    if n == 0 {
        return None;
    }
    let stemmer = rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
    let is_syn = |x: &str, y: &str| {
        synonyms.get(x).is_some_and(|v| v.iter().any(|s| s == y))
            || synonyms.get(y).is_some_and(|v| v.iter().any(|s| s == x))
    };
    let credit = |x: &str, y: &str| {
        if x == y {
            params.exact
        } else if stemmer.stem(x) == stemmer.stem(y) {
            params.stem
        } else if is_syn(x, y) {
            params.synonym
        } else {
            0.0
        }
    };
    let score = needleman_wunsch(a.len(), b.len(), |i, j| credit(&a[i], &b[j]), params.gap);
    Some(score / n as f64)
}

/// Global alignment score with substitution `sub(i, j)` and a constant gap score.
pub(crate) fn needleman_wunsch(n: usize, m: usize, sub: impl Fn(usize, usize) -> f64, gap: f64) -> f64 {
    let mut prev: Vec<f64> = (0..=m).map(|j| j as f64 * gap).collect();
    let mut cur = vec![0.0; m + 1];
    for i in 1..=n {
        cur[0] = i as f64 * gap;
        for j in 1..=m {
            cur[j] = (prev[j - 1] + sub(i - 1, j - 1)).max(prev[j] + gap).max(cur[j - 1] + gap);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noun_order_credits_order_stems_and_synonyms() {
        let nouns: HashSet<String> = ["dog", "ball", "park", "puppy", "grass"].iter().map(|s| s.to_string()).collect();
        let syn: HashMap<String, Vec<String>> = [("dog".to_string(), vec!["puppy".to_string()])].into();
        let p = NounOrderParams::default();
        // Same nouns in the same order: 1.
        let s =
            noun_order_score("A dog with a ball in the park.", "The dog drops the ball at the park", &nouns, &syn, &p);
        assert_eq!(s, Some(1.0));
        // Reversed order: only one of the three aligns.
        let s = noun_order_score("park ball dog", "dog ball park", &nouns, &syn, &p).unwrap();
        assert!((s - 1.0 / 3.0).abs() < 1e-12);
        // Stem (balls ~ ball) and synonym (puppy ~ dog).
        let s = noun_order_score("a puppy and balls", "a dog and a ball", &nouns, &syn, &p).unwrap();
        assert!((s - (0.8 + 0.6) / 2.0).abs() < 1e-12);
        assert_eq!(noun_order_score("nothing here", "none", &nouns, &syn, &p), None);
    }

    #[test]
    fn personalization_ranks_own_prediction() {
        let mk = |v: &[(&str, &str, &str)]| -> PerSubject {
            let mut m = PerSubject::new();
            for (i, s, c) in v {
                m.entry(i.to_string()).or_default().insert(s.to_string(), c.to_string());
            }
            m
        };
        let refs = mk(&[
            ("im1", "s1", "a red car parked on the street"),
            ("im1", "s2", "two dogs playing in the grass"),
            ("im2", "s1", "a cup of coffee on a table"),
            ("im2", "s2", "a laptop next to a cup"),
            ("im3", "s1", "only one subject here"),
        ]);
        let preds = mk(&[
            ("im1", "s1", "a red car on the street"),
            ("im1", "s2", "dogs playing in the grass"),
            ("im2", "s1", "a laptop next to a cup"),
            ("im2", "s2", "a cup of coffee on a table"),
            ("im3", "s1", "anything"),
        ]);
        let r = personalization_score(&refs, &preds, &SentenceMetric::Bleu4).unwrap();
        assert_eq!((r.hits, r.pairs), (2, 4));
        let r = personalization_score(&refs, &preds, &SentenceMetric::RougeL).unwrap();
        assert_eq!((r.hits, r.pairs), (2, 4));
        let mut missing = preds.clone();
        missing.get_mut("im2").unwrap().remove("s2");
        let e = personalization_score(&refs, &missing, &SentenceMetric::CiderD).unwrap_err().to_string();
        assert!(e.contains("im2") && e.contains("s2"), "{e}");
    }
}
