//! deper-eval: the metrics DEPER is evaluated with.
//!
//! - [`captions`]: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D with pycocoevalcap's conventions
//!   (PTB tokenisation, punctuation dropped, corpus scores as `COCOEvalCap` computes them).
//! - [`tokenize`]: a Rust port of the Stanford PTBTokenizer behaviour pycocoevalcap relies on.
//! - [`bleu`], [`rouge`], [`cider`], [`meteor`]: the individual caption metrics.
//! - [`subjects`]: subject-identification accuracy and macro precision/recall/F1.
//! - [`personalization`]: own-reference ranking score and noun-order alignment score.
//! - [`scanpath`]: grid-string edit distance, ScanMatch, DTW and MultiMatch.
//!
//! Pure Rust, no burn, no tokio: this crate builds for wasm32-unknown-unknown.

pub mod bleu;
pub mod captions;
pub mod cider;
pub mod error;
pub mod meteor;
pub mod personalization;
pub mod rouge;
pub mod scanpath;
pub mod subjects;
pub mod tokenize;

pub use error::EvalError;
