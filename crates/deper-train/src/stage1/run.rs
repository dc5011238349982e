//! A stage-1 run folder (see [`crate::run_folder`]): what its `run.json` says, and its weights
//! loaded into the network that description builds.

use burn::prelude::*;
use deper_model::run::deper_config;
use deper_model::{Deper, DeperConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::{Stage1Config, STAGE1};
use crate::run_folder::{load_checked, read_run_json};
use crate::text::WordVocab;
use crate::{Result, TrainError};

/// `RUN/run.json`: what a run folder holds, read by evaluation, embedding and resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub stage: String,
    pub config: Stage1Config,
    /// Trained (seen) subjects, sorted; label = index.
    pub subjects: Vec<String>,
    pub vocab: Vec<String>,
    /// Patch grid of the features the run was trained on.
    pub feature_grid: [usize; 3],
    /// Dataset the run was trained on.
    pub data: String,
}

impl RunInfo {
    pub fn load(run: &Path) -> Result<Self> {
        let (path, mut value) = read_run_json(run, STAGE1, "")?;
        deper_model::run::legacy_model_defaults(&mut value);
        serde_json::from_value(value)
            .map_err(|e| TrainError::Checkpoint { path, message: format!("unreadable run description: {e}") })
    }

    pub fn model_config(&self) -> DeperConfig {
        deper_config(&self.config.model, self.feature_grid, self.vocab.len(), self.subjects.len())
    }

    pub fn vocab(&self) -> WordVocab {
        WordVocab::from_words(self.vocab.clone())
    }
}

/// Loads a run's weights into a freshly built model, turning any mismatch into an error.
pub fn load_model<B: Backend>(run: &Path, info: &RunInfo, device: &B::Device) -> Result<Deper<B>> {
    let model: Deper<B> = info.model_config().init(device);
    load_checked(
        run,
        model,
        device,
        |model| smoke_test(model, info.feature_grid, device),
        "the weights do not match the model described by run.json (another config or a foreign checkpoint)",
    )
}

/// One forward pass on a one-sample batch; panics if the weights do not fit the network.
fn smoke_test<B: Backend>(model: &Deper<B>, grid: [usize; 3], device: &B::Device) {
    let [h, w, c] = grid;
    let step = deper_core::AttentionStep {
        bbox: deper_core::BBox::from_corners(0.1, 0.1, 0.3, 0.3),
        duration: 0.5,
        start: None,
        words: vec![],
    };
    let traj = deper_core::Trajectory { source: deper_core::TrajectorySource::Synthetic, steps: vec![step] };
    let batch = deper_model::TrajectoryBatch::from_trajectories(&[traj], device);
    let patches = Tensor::<B, 4>::zeros([1, h, w, c], device);
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64], [1, 1]), device);
    let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true], [1, 1]), device);
    let out = model.forward(patches, ids, mask, &batch);
    let _ = out.z_s.into_data();
}
