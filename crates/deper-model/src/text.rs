//! Caption tokens for the subject encoder.
//!
//! The authors tokenise captions with the VLM's tokenizer and embed them with
//! a frozen copy of its input-embedding table. For the synthetic world a small
//! word vocabulary of our own does the same job: lower-cased words (letters,
//! digits, apostrophes) and punctuation marks as tokens, built from the
//! training captions, with `<pad>` = 0 and `<unk>` = 1.
//!
//! It lives here, beside the model, so that training (deper-train) and the browser
//! (deper-web) turn a caption into the same ids.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub const PAD: u32 = 0;
pub const UNK: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordVocab {
    pub words: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

/// Splits a caption into lower-case word and punctuation tokens.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for ch in text.chars() {
        if ch.is_alphanumeric() || ch == '\'' {
            current.extend(ch.to_lowercase());
        } else {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            if !ch.is_whitespace() {
                out.push(ch.to_string());
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

impl WordVocab {
    /// Vocabulary of every token seen in `captions` at least `min_count` times, most frequent first.
    pub fn build<'a>(captions: impl IntoIterator<Item = &'a str>, min_count: usize) -> Self {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for caption in captions {
            for w in words(caption) {
                *counts.entry(w).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts.into_iter().filter(|(_, c)| *c >= min_count).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut all = vec!["<pad>".to_string(), "<unk>".to_string()];
        all.extend(ranked.into_iter().map(|(w, _)| w));
        Self::from_words(all)
    }

    /// Rebuilds the lookup after deserialising.
    pub fn from_words(words: Vec<String>) -> Self {
        let index = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect();
        Self { words, index }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Token ids of a caption, cut to `max_len`.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        words(text).iter().take(max_len).map(|w| self.index.get(w).copied().unwrap_or(UNK)).collect()
    }

    /// Token ids the model reads for a caption: [`WordVocab::encode`], with an empty caption
    /// becoming `[UNK]` (an all-padding caption would leave attention nothing to attend to).
    pub fn encode_caption(&self, text: &str, max_len: usize) -> Vec<u32> {
        let mut ids = self.encode(text, max_len);
        if ids.is_empty() {
            ids.push(UNK);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenises_words_and_punctuation() {
        assert_eq!(
            words("I see a Red circle, that's it."),
            ["i", "see", "a", "red", "circle", ",", "that's", "it", "."]
        );
        assert_eq!(words("  "), Vec::<String>::new());
    }

    #[test]
    fn vocab_ranks_by_frequency_and_maps_unknowns() {
        let v = WordVocab::build(["a red circle", "a blue circle", "a circle"], 1);
        assert_eq!(&v.words[..4], ["<pad>", "<unk>", "a", "circle"]);
        let ids = v.encode("a green circle", 10);
        assert_eq!(ids, [2, UNK, 3]);
        assert_eq!(v.encode("a red circle", 2).len(), 2);
        let back: WordVocab = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        let back = WordVocab::from_words(back.words);
        assert_eq!(back.encode("blue", 4), v.encode("blue", 4));
    }

    #[test]
    fn empty_caption_reads_as_one_unknown_token() {
        let v = WordVocab::build(["a red circle"], 1);
        assert_eq!(v.encode_caption("  ", 8), [UNK]);
        assert_eq!(v.encode_caption("a red", 8), v.encode("a red", 8));
    }
}
