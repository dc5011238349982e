//! Caption tokens for the subject encoder: the word vocabulary lives in
//! [`deper_model::text`] so that the browser (deper-web) encodes captions with the same code.

pub use deper_model::text::{words, WordVocab, PAD, UNK};
