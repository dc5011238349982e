//! The crate's one error type: every failure of loading, preprocessing, templating or generating, with
//! enough context to act on.

use std::path::PathBuf;

/// Every failure of this crate, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum VlmError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad config: {0}")]
    Config(String),
    #[error(transparent)]
    Weights(#[from] deper_weights::WeightsError),
    #[error("bad input: {0}")]
    Input(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("image: {0}")]
    Image(String),
}

pub type Result<T, E = VlmError> = std::result::Result<T, E>;
