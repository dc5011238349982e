//! METEOR 1.5's WordNet synonym module data (edu.cmu.meteor.aligner.SynonymDictionary), loaded
//! from a directory the caller gives: `english.exceptions` and `english.synsets`, the files inside
//! `meteor-1.5.jar` under `synonym/` (WordNet licence; not shipped with this crate).
//!
//! A word's synsets are its own plus those of its base forms: the exception list's bases when
//! listed, otherwise the first suffix rule of WordNet's morphy that yields a known word.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;

use crate::EvalError;

/// Word -> synset ids, and inflected form -> base forms.
#[derive(Debug, Clone, Default)]
pub struct SynonymDictionary {
    word_to_bases: HashMap<String, Vec<String>>,
    word_to_synsets: HashMap<String, HashSet<u32>>,
}

const SUFFIXES: [(&str, &str); 20] = [
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("s", ""),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
    ("er", ""),
    ("est", ""),
    ("er", "e"),
    ("est", "e"),
];

impl SynonymDictionary {
    /// Loads `english.exceptions` and `english.synsets` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, EvalError> {
        let open = |name: &str| {
            let path = dir.join(name);
            std::fs::File::open(&path)
                .map(std::io::BufReader::new)
                .map_err(|e| EvalError::File { path, message: e.to_string() })
        };
        Self::from_readers(open("english.exceptions")?, open("english.synsets")?)
            .map_err(|message| EvalError::File { path: dir.to_path_buf(), message })
    }

    /// Parses the two files: pairs of lines (base, then its forms; word, then its synset ids).
    pub fn from_readers(exceptions: impl BufRead, synsets: impl BufRead) -> Result<Self, String> {
        let mut d = Self::default();
        let mut lines = exceptions.lines();
        let mut n = 0usize;
        while let Some(base) = lines.next() {
            n += 2;
            let base = base.map_err(|e| e.to_string())?;
            let forms = lines.next().ok_or(format!("english.exceptions line {n}: missing forms line"))?;
            for form in forms.map_err(|e| e.to_string())?.split_whitespace() {
                d.word_to_bases.entry(form.to_string()).or_default().push(base.clone());
            }
        }
        let mut lines = synsets.lines();
        let mut n = 0usize;
        while let Some(word) = lines.next() {
            n += 2;
            let word = word.map_err(|e| e.to_string())?;
            let ids = lines.next().ok_or(format!("english.synsets line {n}: missing synset line"))?;
            let mut set = HashSet::new();
            for id in ids.map_err(|e| e.to_string())?.split_whitespace() {
                set.insert(id.parse::<u32>().map_err(|e| format!("english.synsets line {n}: {id:?}: {e}"))?);
            }
            d.word_to_synsets.insert(word, set);
        }
        Ok(d)
    }

    fn synsets(&self, word: &str) -> HashSet<u32> {
        self.word_to_synsets.get(word).cloned().unwrap_or_default()
    }

    /// The word's synsets together with those of its base forms.
    pub fn all_synsets(&self, word: &str) -> HashSet<u32> {
        let mut set = self.synsets(word);
        match self.word_to_bases.get(word) {
            Some(bases) => {
                for b in bases {
                    set.extend(self.synsets(b));
                }
            }
            None => set.extend(self.synsets(&self.morph(word))),
        }
        set
    }

    fn morph(&self, word: &str) -> String {
        // The jar remembers a "-ful" ending and appends it to the base it finds.
        let end = if word.ends_with("ful") { "ful" } else { "" };
        if word.ends_with("ss") || word.encode_utf16().count() <= 2 {
            return word.to_string();
        }
        for (suffix, add) in SUFFIXES {
            if let Some(stem) = word.strip_suffix(suffix) {
                let base = format!("{stem}{add}");
                if self.word_to_synsets.contains_key(&base) {
                    return base + end;
                }
            }
        }
        String::new()
    }
}
