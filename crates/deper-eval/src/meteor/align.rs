//! METEOR 1.5's aligner (edu.cmu.meteor.aligner.Aligner): candidate matches from each module in
//! order, one-to-one unambiguous matches fixed first, then a left-to-right beam search (width 40)
//! over the reference words ranking partial alignments by weighted matches (more), chunks (fewer)
//! and summed position distance (less).
//!
//! Reproduced quirks of the jar, because they change which alignment wins:
//! - the search's match totals are integers, so a non-exact one-word match (search weight 0.5)
//!   adds `(int)(k + 0.5) - k = 0` to them;
//! - when a path branches on a match, the position distance is added to the *unchanged* path
//!   (the one that will skip the word), not to the new one.

use std::cmp::Ordering;

use super::paraphrase::ParaphraseTable;
use super::synonyms::SynonymDictionary;
use super::Module;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Match {
    /// Start and length in the reference (line 2).
    pub start: usize,
    pub length: usize,
    /// Start and length in the test (line 1).
    pub match_start: usize,
    pub match_length: usize,
    /// Index of the module that made it.
    pub module: usize,
}

#[derive(Debug, Clone)]
struct Partial {
    matches: Vec<Option<Match>>,
    matches1: i64,
    matches2: i64,
    chunks: i64,
    idx: usize,
    last_match_end: Option<usize>,
    distance: i64,
    used1: Vec<bool>,
    used2: Vec<bool>,
}

impl Partial {
    fn is_used(&self, m: &Match) -> bool {
        (0..m.length).any(|i| self.used2[m.start + i]) || (0..m.match_length).any(|i| self.used1[m.match_start + i])
    }

    fn set_used(&mut self, m: &Match) {
        for i in 0..m.length {
            self.used2[m.start + i] = true;
        }
        for i in 0..m.match_length {
            self.used1[m.match_start + i] = true;
        }
    }

    /// Adds a match's totals with Java's int-truncating compound assignment.
    fn add_match(&mut self, m: &Match, weight: f64) {
        self.matches1 = (self.matches1 as f64 + m.match_length as f64 * weight) as i64;
        self.matches2 = (self.matches2 as f64 + m.length as f64 * weight) as i64;
        if self.last_match_end.is_some_and(|e| m.match_start != e) {
            self.chunks += 1;
        }
        self.idx = m.start + m.length;
        self.last_match_end = Some(m.match_start + m.match_length);
    }
}

/// Constants.PARTIAL_COMPARE_TOTAL.
fn compare(x: &Partial, y: &Partial) -> Ordering {
    let diff = (y.matches1 + y.matches2) - (x.matches1 + x.matches2);
    if diff != 0 {
        return if diff > 0 { Ordering::Greater } else { Ordering::Less };
    }
    (x.chunks, x.distance).cmp(&(y.chunks, y.distance))
}

/// The result of aligning a test line to a reference line.
#[derive(Debug, Clone)]
pub(crate) struct Alignment {
    /// Chosen matches, indexed by reference start position.
    pub matches: Vec<Option<Match>>,
    pub chunks: usize,
}

pub(crate) struct Resources<'a> {
    pub modules: &'a [Module],
    pub stemmer: &'a rust_stemmers::Stemmer,
    pub synonyms: Option<&'a SynonymDictionary>,
    pub paraphrases: Option<&'a ParaphraseTable>,
    pub beam_size: usize,
}

/// Aligns test words (line 1) to reference words (line 2).
pub(crate) fn align(words1: &[String], words2: &[String], res: &Resources<'_>) -> Alignment {
    let mut cand: Vec<Vec<Match>> = vec![Vec::new(); words2.len()];
    let mut cov1 = vec![0usize; words1.len()];
    let mut cov2 = vec![0usize; words2.len()];
    // Identical lines need only exact matches (the jar's guard against beam-search errors).
    let mods_used = if words1 == words2 { 1 } else { res.modules.len() };
    let stems1: Vec<String> = words1.iter().map(|w| res.stemmer.stem(w).into_owned()).collect();
    let stems2: Vec<String> = words2.iter().map(|w| res.stemmer.stem(w).into_owned()).collect();
    let syn1: Vec<_> = words1.iter().map(|w| res.synonyms.map(|s| s.all_synsets(w))).collect();
    let syn2: Vec<_> = words2.iter().map(|w| res.synonyms.map(|s| s.all_synsets(w))).collect();
    for (module_idx, module) in res.modules.iter().take(mods_used).enumerate() {
        if *module == Module::Paraphrase {
            if let Some(table) = res.paraphrases {
                table.matches(words1, words2, module_idx, |m| {
                    cand[m.start].push(m);
                    for k in 0..m.match_length {
                        cov1[m.match_start + k] += 1;
                    }
                    for k in 0..m.length {
                        cov2[m.start + k] += 1;
                    }
                });
            }
            continue;
        }
        for j in 0..words2.len() {
            for i in 0..words1.len() {
                let hit = match module {
                    Module::Exact => words1[i] == words2[j],
                    Module::Stem => stems1[i] == stems2[j] && words1[i] != words2[j],
                    Module::Synonym => match (&syn1[i], &syn2[j]) {
                        (Some(a), Some(b)) => words1[i] != words2[j] && a.iter().any(|s| b.contains(s)),
                        _ => false,
                    },
                    Module::Paraphrase => false,
                };
                if hit {
                    cand[j].push(Match { start: j, length: 1, match_start: i, match_length: 1, module: module_idx });
                    cov1[i] += 1;
                    cov2[j] += 1;
                }
            }
        }
    }
    let mut start = Partial {
        matches: vec![None; words2.len()],
        matches1: 0,
        matches2: 0,
        chunks: 0,
        idx: 0,
        last_match_end: None,
        distance: 0,
        used1: vec![false; words1.len()],
        used2: vec![false; words2.len()],
    };
    // One-to-one, non-overlapping matches are definite.
    for (j, ms) in cand.iter().enumerate() {
        if let [m] = ms.as_slice() {
            let overlap =
                (0..m.length).any(|k| cov2[j + k] != 1) || (0..m.match_length).any(|k| cov1[m.match_start + k] != 1);
            if !overlap {
                start.matches[j] = Some(*m);
                start.set_used(m);
            }
        }
    }
    let search_weight = |module: usize| if res.modules[module] == Module::Exact { 1.0 } else { 0.5 };
    let best = resolve(&cand, start, res.beam_size, &search_weight);
    let chunks = count_chunks(&best.matches);
    Alignment { matches: best.matches, chunks }
}

fn resolve(cand: &[Vec<Match>], start: Partial, beam: usize, weight: &dyn Fn(usize) -> f64) -> Partial {
    let mut next = vec![start];
    for current in 0..=cand.len() {
        let mut paths = std::mem::take(&mut next);
        paths.sort_by(compare);
        let first = paths.first().cloned();
        for mut path in paths.into_iter().take(beam) {
            if current == cand.len() {
                if path.last_match_end.is_some() {
                    path.chunks += 1;
                }
                next.push(path);
                continue;
            }
            if path.used2[current] {
                if current < path.idx {
                    next.push(path);
                } else if let Some(m) = path.matches.get(path.idx).copied().flatten() {
                    path.add_match(&m, weight(m.module));
                    path.distance += (m.start as i64 - m.match_start as i64).abs();
                    next.push(path);
                }
                continue;
            }
            for m in &cand[current] {
                if path.is_used(m) {
                    continue;
                }
                let mut np = path.clone();
                np.set_used(m);
                np.matches[current] = Some(*m);
                np.add_match(m, weight(m.module));
                // The jar adds this distance to the skipping path, not the new one.
                path.distance += (m.start as i64 - m.match_start as i64).abs();
                next.push(np);
            }
            if path.last_match_end.is_some() {
                path.chunks += 1;
                path.last_match_end = None;
            }
            path.idx += 1;
            next.push(path);
        }
        if next.is_empty() {
            if let Some(f) = first {
                next.push(f);
            }
        }
    }
    next.sort_by(compare);
    next.into_iter().next().unwrap_or(Partial {
        matches: vec![None; cand.len()],
        matches1: 0,
        matches2: 0,
        chunks: 0,
        idx: 0,
        last_match_end: None,
        distance: 0,
        used1: Vec::new(),
        used2: Vec::new(),
    })
}

/// Aligner.getCountAndChunks: chunks of the final alignment, walking the reference.
fn count_chunks(matches: &[Option<Match>]) -> usize {
    let mut chunks = 0;
    let mut idx = 0;
    let mut last_end: Option<usize> = None;
    while idx < matches.len() {
        match matches[idx] {
            None => {
                if last_end.is_some() {
                    chunks += 1;
                    last_end = None;
                }
                idx += 1;
            }
            Some(m) => {
                if last_end.is_some_and(|e| m.match_start != e) {
                    chunks += 1;
                }
                idx = m.start + m.length;
                last_end = Some(m.match_start + m.match_length);
            }
        }
    }
    if last_end.is_some() {
        chunks += 1;
    }
    chunks
}
