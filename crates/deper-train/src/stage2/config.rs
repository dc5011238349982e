//! Stage-2 settings (`deper train stage2 --config FILE`) and a stage-2 run's `run.json`.

use serde::{Deserialize, Serialize};
use std::path::Path;

use super::STAGE2;
use crate::run_folder::read_run_json;
use crate::stage1::{LrSchedule, RunInfo, TrainSettings};
use crate::{Result, TrainError};

/// What a stage-2 run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Subject encoder + adapter.
    Deper,
    /// One learned persona embedding per subject.
    Pt,
}

/// Everything `--config FILE` may set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stage2Config {
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub weight_decay: f64,
    pub clip_norm: f32,
    pub seed: u64,
    pub w_cls: f64,
    pub w_con: f64,
    pub temperature: f64,
    pub bank_capacity: usize,
    /// Fine-tune the stage-1 encoder with the adapter (otherwise only the adapter learns).
    pub finetune_encoder: bool,
    /// DEPER: the adapter is trained on the mean z_s of this many triplets of the subject, the
    /// partner triplet encoded in this batch (with gradient) and the subject's most recent z_s from
    /// earlier batches (detached), since evaluation feeds it means too (the K support triplets of an
    /// unseen subject, all training triplets of a seen one). 1: the partner's z_s alone.
    pub persona_shots: usize,
}

impl Default for Stage2Config {
    fn default() -> Self {
        Self {
            epochs: 4,
            batch_size: 16,
            grad_accum: 1,
            lr: 2e-3,
            lr_schedule: LrSchedule::Cosine,
            weight_decay: 0.0,
            clip_norm: 1.0,
            seed: 0,
            w_cls: 1.0,
            w_con: 0.1,
            temperature: 0.07,
            bank_capacity: 4096,
            finetune_encoder: true,
            persona_shots: deper_core::split::DEFAULT_SHOTS,
        }
    }
}

impl Stage2Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io { path: path.into(), source: e })?;
        serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
    }

    /// The learning-rate schedule, as stage 1's [`TrainSettings::lr_at`] computes it.
    pub(super) fn schedule(&self) -> TrainSettings {
        TrainSettings { lr: self.lr, lr_schedule: self.lr_schedule, ..TrainSettings::default() }
    }
}

/// `RUN/run.json` of a stage-2 run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage2Info {
    pub stage: String,
    pub method: Method,
    pub config: Stage2Config,
    /// The stage-1 run the encoder came from (`deper` only).
    pub stage1: Option<String>,
    /// Its description, so the encoder can be rebuilt without the stage-1 folder.
    pub stage1_info: Option<RunInfo>,
    pub vlm: String,
    pub data: String,
    /// Trained subjects, sorted (the stage-1 run's for `deper`).
    pub subjects: Vec<String>,
    pub hidden_size: usize,
}

impl Stage2Info {
    pub fn load(run: &Path) -> Result<Self> {
        let (path, mut value) = read_run_json(run, STAGE2, " (pass a `deper train stage2` run)")?;
        if let Some(stage1) = value.get_mut("stage1_info").filter(|v| v.is_object()) {
            deper_model::run::legacy_model_defaults(stage1);
        }
        serde_json::from_value(value).map_err(|e| TrainError::Checkpoint { path, message: e.to_string() })
    }
}

/// `path` made absolute when it exists (as given otherwise), for `run.json`.
pub(super) fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

/// Whether two recorded paths name the same folder: runs trained from different working
/// directories, or before paths were recorded absolute, spell the same VLM differently.
pub fn same_folder(a: &str, b: &str) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}
