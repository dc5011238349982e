//! The one error type of deper-eval: every variant names the image, file, key or index at fault.

use std::path::PathBuf;

/// Errors of the evaluation functions; none of them panics on bad input.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("candidate for image {0:?} has no references")]
    CandidateWithoutReferences(String),
    #[error("image {0:?} has an empty reference list")]
    EmptyReferences(String),
    #[error("image {0:?} has references but no candidate")]
    ReferencesWithoutCandidate(String),
    #[error("no images to score")]
    NoImages,
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: key {key:?}: {message}")]
    FileKey { path: PathBuf, key: String, message: String },
    #[error("label lists differ in length: {truth} true labels, {predicted} predicted")]
    LengthMismatch { truth: usize, predicted: usize },
    #[error("empty label lists")]
    EmptyLabels,
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl EvalError {
    pub(crate) fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { what: what.into(), message: message.into() }
    }
}
