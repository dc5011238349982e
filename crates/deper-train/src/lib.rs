//! deper-train: everything that turns a dataset into a trained DEPER run.
//!
//! * [`features`]: cached image patch features (`deper features extract`).
//! * [`text`]: the captions' text side: a word vocabulary, or a VLM's tokenizer and frozen input-embedding table.
//! * [`data`]: triplets → labelled samples → padded batches; a dataset loaded for a run.
//! * [`run_folder`]: the run folder of every stage: its files, checked loading, checkpoints, resume.
//! * [`metrics`]: subject accuracy, macro-F1 and box IoU of a stage-1 network (validation, evaluation).
//! * [`stage1`]: stage-1 training (`deper train stage1`): config, run description, loop, data-parallel.
//! * [`stage2`]: stage 2 (`deper train stage2`): encoder + persona adapter, or the per-subject PT baseline, on the frozen VLM; caption generation.
//! * [`eval`]: subject accuracy, macro-F1, box IoU, few-shot evaluation, subject embeddings.

pub mod data;
pub mod eval;
pub mod features;
pub mod metrics;
pub mod run_folder;
pub mod stage1;
pub mod stage2;
pub mod text;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Core(#[from] deper_core::Error),
    #[error(transparent)]
    Weights(#[from] deper_weights::WeightsError),
    #[error(transparent)]
    Vlm(#[from] deper_vlm::VlmError),
    #[error(transparent)]
    Backbone(#[from] deper_model::backbone::BackboneError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: cannot read image: {message}", path.display())]
    Image { path: PathBuf, message: String },
    #[error("image `{image}` has no features in the cache (re-run `deper features extract`)")]
    MissingImage { image: String },
    #[error("{0}")]
    Config(String),
    #[error("{}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("cancelled")]
    Cancelled,
    /// Data-parallel training: another device stopped (its own error says why).
    #[error("another training device stopped")]
    PeerStopped,
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
