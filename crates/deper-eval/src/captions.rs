//! Caption metrics over a corpus, the way pycocoevalcap's `COCOEvalCap.evaluate()` computes them
//! (without SPICE): every reference and candidate is PTB-tokenised and stripped of punctuation
//! ([`crate::tokenize::coco_tokenize`]), then BLEU-1..4, METEOR, ROUGE-L and CIDEr-D are scored.
//!
//! Corpus scores: BLEU from pooled n-gram counts and lengths, METEOR from pooled statistics, ROUGE-L
//! and CIDEr-D as the mean of per-image scores (CIDEr-D's document frequencies come from the
//! references being scored). Keys are pycocoevalcap's: `Bleu_1`..`Bleu_4`, `METEOR`, `ROUGE_L`,
//! `CIDEr`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::bleu::{bleu_stats, corpus_bleu, sentence_bleu};
use crate::cider::CiderD;
use crate::meteor::Meteor;
use crate::rouge::rouge_l;
use crate::tokenize::coco_tokenize;
use crate::EvalError;

/// The metric names, in pycocoevalcap's order.
pub const METRICS: [&str; 7] = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"];

/// References (`image id -> captions`) and candidates (`image id -> caption`).
pub type CaptionInputs = (BTreeMap<String, Vec<String>>, BTreeMap<String, String>);

/// Corpus and per-image scores, keyed by [`METRICS`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptionScores {
    pub corpus: BTreeMap<String, f64>,
    pub per_image: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Checks that references and candidates cover the same images and no reference list is empty.
pub fn validate(refs: &BTreeMap<String, Vec<String>>, cands: &BTreeMap<String, String>) -> Result<(), EvalError> {
    if let Some(id) = cands.keys().find(|id| !refs.contains_key(*id)) {
        return Err(EvalError::CandidateWithoutReferences(id.clone()));
    }
    if let Some((id, _)) = refs.iter().find(|(_, r)| r.is_empty()) {
        return Err(EvalError::EmptyReferences(id.clone()));
    }
    if let Some(id) = refs.keys().find(|id| !cands.contains_key(*id)) {
        return Err(EvalError::ReferencesWithoutCandidate(id.clone()));
    }
    if refs.is_empty() {
        return Err(EvalError::NoImages);
    }
    Ok(())
}

/// Scores candidates against references with METEOR's exact and stem modules.
pub fn score_corpus(
    refs: &BTreeMap<String, Vec<String>>,
    cands: &BTreeMap<String, String>,
) -> Result<CaptionScores, EvalError> {
    score_corpus_with(refs, cands, &Meteor::english())
}

/// Scores candidates against references with a given METEOR scorer (e.g. with synonyms).
pub fn score_corpus_with(
    refs: &BTreeMap<String, Vec<String>>,
    cands: &BTreeMap<String, String>,
    meteor: &Meteor,
) -> Result<CaptionScores, EvalError> {
    validate(refs, cands)?;
    let ids: Vec<&String> = refs.keys().collect();
    let tok_refs: Vec<Vec<String>> =
        ids.iter().map(|id| refs[*id].iter().map(|r| coco_tokenize(r)).collect()).collect();
    let tok_cands: Vec<String> = ids.iter().map(|id| coco_tokenize(&cands[*id])).collect();
    score_tokenized(&ids, &tok_refs, &tok_cands, meteor)
}

/// Scores already tokenised captions (tokens separated by single spaces).
pub fn score_tokenized(
    ids: &[&String],
    refs: &[Vec<String>],
    cands: &[String],
    meteor: &Meteor,
) -> Result<CaptionScores, EvalError> {
    if ids.len() != refs.len() || ids.len() != cands.len() {
        return Err(EvalError::invalid("score_tokenized", "ids, references and candidates differ in length"));
    }
    if ids.is_empty() {
        return Err(EvalError::NoImages);
    }
    let mut per_image: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let stats: Vec<_> = cands.iter().zip(refs).map(|(c, r)| bleu_stats(c, r)).collect();
    let cider = CiderD::new(refs.iter().map(Vec::as_slice));
    let pairs: Vec<(&str, &[String])> = cands.iter().map(String::as_str).zip(refs.iter().map(Vec::as_slice)).collect();
    let (meteor_per, meteor_corpus) = meteor.score_corpus(&pairs);
    let (mut rouge_sum, mut cider_sum) = (0.0, 0.0);
    for (k, id) in ids.iter().enumerate() {
        let b = sentence_bleu(&stats[k]);
        let rouge = rouge_l(&cands[k], &refs[k]);
        let cid = cider.score(&cands[k], &refs[k]);
        rouge_sum += rouge;
        cider_sum += cid;
        let vals = [b[0], b[1], b[2], b[3], meteor_per[k], rouge, cid];
        per_image.insert((*id).clone(), METRICS.iter().map(|m| m.to_string()).zip(vals).collect());
    }
    let b = corpus_bleu(&stats);
    let n = ids.len() as f64;
    let vals = [b[0], b[1], b[2], b[3], meteor_corpus, rouge_sum / n, cider_sum / n];
    let corpus = METRICS.iter().map(|m| m.to_string()).zip(vals).collect();
    Ok(CaptionScores { corpus, per_image })
}

fn read_object(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, EvalError> {
    let file_err = |message: String| EvalError::File { path: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(file_err("expected a JSON object keyed by image id".into())),
        Err(e) => Err(file_err(format!("invalid JSON at line {} column {}: {e}", e.line(), e.column()))),
    }
}

/// Reads `{"image_id": ["ref", ...]}` references and `{"image_id": "candidate"}` candidates.
///
/// Errors name the file and the offending key; coverage is checked as in [`validate`].
pub fn read_caption_files(refs_path: &Path, cands_path: &Path) -> Result<CaptionInputs, EvalError> {
    let key_err = |path: &Path, key: &str, message: &str| EvalError::FileKey {
        path: path.to_path_buf(),
        key: key.to_string(),
        message: message.to_string(),
    };
    let mut refs = BTreeMap::new();
    for (key, value) in read_object(refs_path)? {
        let serde_json::Value::Array(items) = value else {
            return Err(key_err(refs_path, &key, "expected a list of reference strings"));
        };
        if items.is_empty() {
            return Err(key_err(refs_path, &key, "empty reference list"));
        }
        let mut list = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            match item {
                serde_json::Value::String(s) => list.push(s),
                _ => return Err(key_err(refs_path, &key, &format!("reference {i} is not a string"))),
            }
        }
        refs.insert(key, list);
    }
    let mut cands = BTreeMap::new();
    for (key, value) in read_object(cands_path)? {
        let serde_json::Value::String(s) = value else {
            return Err(key_err(cands_path, &key, "expected a candidate string"));
        };
        if !refs.contains_key(&key) {
            return Err(key_err(cands_path, &key, "candidate has no references"));
        }
        cands.insert(key, s);
    }
    if let Some(key) = refs.keys().find(|k| !cands.contains_key(*k)) {
        return Err(key_err(refs_path, key, "references have no candidate"));
    }
    if refs.is_empty() {
        return Err(EvalError::File { path: refs_path.to_path_buf(), message: "no images".into() });
    }
    Ok((refs, cands))
}

/// Reads both files and scores them.
pub fn score_files(refs_path: &Path, cands_path: &Path) -> Result<CaptionScores, EvalError> {
    let (refs, cands) = read_caption_files(refs_path, cands_path)?;
    score_corpus(&refs, &cands)
}
