//! METEOR 1.5's paraphrase module data (edu.cmu.meteor.aligner.ParaphraseTransducer), loaded from
//! the table the caller gives: `paraphrase-en.gz` from pycocoevalcap's `meteor/data/` (not shipped
//! with this crate). The table is a sequence of line triples: probability, phrase, paraphrase.
//!
//! Matching (as ParaphraseMatcher): for every reference position, each table phrase starting
//! there whose paraphrase occurs in the test line gives a match, in table order by phrase length;
//! then the same from every test position towards the reference. Paraphrase matches may cover
//! several words and may coincide with exact matches.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::align::Match;
use crate::EvalError;

/// Phrase -> paraphrases, with words interned.
#[derive(Debug, Clone, Default)]
pub struct ParaphraseTable {
    vocab: HashMap<String, u32>,
    /// Phrase (interned words) -> indices of its paraphrases, in table order.
    phrases: HashMap<Box<[u32]>, Vec<u32>>,
    max_phrase_len: usize,
    par_offsets: Vec<usize>,
    par_words: Vec<u32>,
}

impl ParaphraseTable {
    /// Loads a gzip-compressed table (`paraphrase-en.gz`). With `keep`, only entries whose
    /// words are all in `keep` are stored (the others can never match lines made of those words).
    pub fn from_gz_file(path: &Path, keep: Option<&HashSet<String>>) -> Result<Self, EvalError> {
        let file = std::fs::File::open(path)
            .map_err(|e| EvalError::File { path: path.to_path_buf(), message: e.to_string() })?;
        Self::from_reader(BufReader::new(flate2::read::GzDecoder::new(file)), keep)
            .map_err(|message| EvalError::File { path: path.to_path_buf(), message })
    }

    /// Parses an uncompressed table.
    pub fn from_reader(reader: impl Read, keep: Option<&HashSet<String>>) -> Result<Self, String> {
        let mut t = Self { par_offsets: vec![0], ..Default::default() };
        let mut lines = BufReader::new(reader).lines();
        let mut n = 0usize;
        while let Some(prob) = lines.next() {
            prob.map_err(|e| format!("line {}: {e}", n + 1))?;
            let mut next = |what: &str| -> Result<String, String> {
                lines.next().ok_or(format!("line {}: missing {what} line", n + 2))?.map_err(|e| e.to_string())
            };
            let phrase = next("phrase")?;
            let para = next("paraphrase")?;
            n += 3;
            let ok = |s: &str| keep.is_none_or(|k| s.split_whitespace().all(|w| k.contains(w)));
            if !ok(&phrase) || !ok(&para) {
                continue;
            }
            let ph: Box<[u32]> = phrase.split_whitespace().map(|w| t.intern(w)).collect();
            let pa: Vec<u32> = para.split_whitespace().map(|w| t.intern(w)).collect();
            let idx = (t.par_offsets.len() - 1) as u32;
            t.par_words.extend(pa);
            t.par_offsets.push(t.par_words.len());
            t.max_phrase_len = t.max_phrase_len.max(ph.len());
            t.phrases.entry(ph).or_default().push(idx);
        }
        Ok(t)
    }

    fn intern(&mut self, w: &str) -> u32 {
        let next = self.vocab.len() as u32;
        *self.vocab.entry(w.to_string()).or_insert(next)
    }

    fn translate(&self, words: &[String]) -> Vec<Option<u32>> {
        words.iter().map(|w| self.vocab.get(w).copied()).collect()
    }

    /// (phrase length, paraphrase index) of every table phrase starting at `start`.
    fn paths(&self, line: &[Option<u32>], start: usize) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        let mut key = Vec::new();
        for w in line.iter().skip(start).take(self.max_phrase_len) {
            let Some(w) = w else { break };
            key.push(*w);
            if let Some(ids) = self.phrases.get(key.as_slice()) {
                out.extend(ids.iter().map(|&i| (key.len(), i)));
            }
        }
        out
    }

    fn paraphrase(&self, idx: u32) -> &[u32] {
        &self.par_words[self.par_offsets[idx as usize]..self.par_offsets[idx as usize + 1]]
    }

    fn occurs_at(line: &[Option<u32>], at: usize, words: &[u32]) -> bool {
        words.iter().enumerate().all(|(k, w)| line.get(at + k).copied().flatten() == Some(*w))
    }

    /// Paraphrase matches between test words (line 1) and reference words (line 2), in the
    /// jar's order; `push(j, m)` records a match starting at reference position `j`.
    pub(crate) fn matches(&self, words1: &[String], words2: &[String], module: usize, mut push: impl FnMut(Match)) {
        let (l1, l2) = (self.translate(words1), self.translate(words2));
        for j in 0..l2.len() {
            for (len, idx) in self.paths(&l2, j) {
                let par = self.paraphrase(idx);
                for i in 0..l1.len() {
                    if Self::occurs_at(&l1, i, par) {
                        push(Match { start: j, length: len, match_start: i, match_length: par.len(), module });
                    }
                }
            }
        }
        for i in 0..l1.len() {
            for (len, idx) in self.paths(&l1, i) {
                let par = self.paraphrase(idx);
                for j in 0..l2.len() {
                    if Self::occurs_at(&l2, j, par) {
                        push(Match { start: j, length: par.len(), match_start: i, match_length: len, module });
                    }
                }
            }
        }
    }
}
