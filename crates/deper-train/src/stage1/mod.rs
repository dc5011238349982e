//! Stage-1 training of DEPER (`deper train stage1`).
//!
//! Loss = traj + 1.0·cls + 0.1·con (weights in [`LossSettings`]), AdamW
//! (lr 5e-4), gradient accumulation, gradient clipping (burn clips each
//! parameter's gradient to norm 1.0), seeded shuffling, validation every epoch.
//!
//! - [`config`]: every setting of `--config FILE`, the paper's values as defaults.
//! - [`run`]: a stage-1 run folder's `run.json` ([`RunInfo`]) and its weights ([`load_model`]).
//! - [`train`](mod@train): the epoch loop of one device, validation and checkpoints.
//! - `data_parallel`: several devices, one replica each, gradients all-reduced.
//!
//! The run folder ([`crate::run_folder`]) holds `run.json` (stage, settings, subjects, vocabulary
//! or `text_embeddings`, feature backbone), `metrics.jsonl` (epoch, train_loss, val_subject_acc,
//! val_macro_f1, val_box_iou, …), `model.mpk`, `optimizer.mpk` and `state.json`.

pub mod config;
mod data_parallel;
pub mod run;
pub mod train;

pub use config::{DdpSettings, LossSettings, LrSchedule, ModelSettings, Stage1Config, TrainSettings};
/// The stage name lives in deper-model, shared with the browser.
pub use deper_model::run::STAGE1;
pub use run::{load_model, RunInfo};
pub use train::{batch_gradients, train, train_cancellable, train_data_parallel, BatchLosses, EpochMetrics, Progress};

// Paths callers used before the run folder and the prepared dataset got their own modules.
pub use crate::data::{prepare, Prepared};
pub use crate::run_folder::{append_jsonl, METRICS_FILE, MODEL_FILE, OPTIMIZER_FILE, RUN_FILE, STATE_FILE};
