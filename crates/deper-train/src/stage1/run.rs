//! A stage-1 run folder (see [`crate::run_folder`]): what its `run.json` says, and its weights
//! loaded into the network that description builds.

use burn::prelude::*;
use deper_model::run::{deper_config, TextEmbeddings};
use deper_model::{Deper, DeperConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::{Stage1Config, STAGE1};
use crate::data::{prepare_with_text, Prepared};
use crate::features::{self, CacheSource, FeatureMeta};
use crate::run_folder::{load_checked, read_run_json};
use crate::text::{TextSide, VlmText, WordVocab};
use crate::{Result, TrainError};

/// `RUN/run.json`: what a run folder holds, read by evaluation, embedding and resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub stage: String,
    pub config: Stage1Config,
    /// Trained (seen) subjects, sorted; label = index.
    pub subjects: Vec<String>,
    /// The caption word vocabulary (empty, and left out of `run.json`, with `text_embeddings`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vocab: Vec<String>,
    /// Patch grid of the features the run was trained on.
    pub feature_grid: [usize; 3],
    /// Dataset the run was trained on.
    pub data: String,
    /// Captions read with a VLM's tokenizer and input-embedding table (`train.text_embeddings`)
    /// instead of `vocab`; absent in runs with a word vocabulary (and in runs written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_embeddings: Option<TextEmbeddings>,
    /// What made the features the run was trained on (extractor, checkpoint digest, input size):
    /// evaluation refuses a cache of the same name made by another backbone. Absent in runs
    /// written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<CacheSource>,
}

impl RunInfo {
    pub fn load(run: &Path) -> Result<Self> {
        let (path, mut value) = read_run_json(run, STAGE1, "")?;
        deper_model::run::legacy_model_defaults(&mut value);
        serde_json::from_value(value)
            .map_err(|e| TrainError::Checkpoint { path, message: format!("unreadable run description: {e}") })
    }

    pub fn model_config(&self) -> DeperConfig {
        match &self.text_embeddings {
            Some(text) => text.deper_config(&self.config.model, self.feature_grid, self.subjects.len()),
            None => deper_config(&self.config.model, self.feature_grid, self.vocab.len(), self.subjects.len()),
        }
    }

    pub fn vocab(&self) -> WordVocab {
        WordVocab::from_words(self.vocab.clone())
    }

    /// The run's text side: its word vocabulary, or the VLM folder it recorded, reopened and
    /// checked to hold the same table (a missing folder or another table is an error naming it).
    pub fn text_side(&self) -> Result<TextSide> {
        match &self.text_embeddings {
            Some(recorded) => Ok(TextSide::Vlm(Box::new(VlmText::reopen(recorded)?))),
            None => Ok(TextSide::Words(self.vocab())),
        }
    }

    /// The dataset `data` prepared as this run reads it: its feature backbone, text side, caption
    /// length and subjects; its feature cache checked to be the one the run was trained on.
    pub fn prepare(&self, data: &Path) -> Result<Prepared> {
        let train = &self.config.train;
        let prep = prepare_with_text(data, &train.backbone, self.text_side()?, train.caption_tokens(), &self.subjects)?;
        self.check_features(data, &prep.features.meta)?;
        Ok(prep)
    }

    /// A cache of another grid, extractor, checkpoint or input size than training's is an error
    /// naming its index (the checkpoint folder may have moved: its digest is what is compared).
    fn check_features(&self, data: &Path, meta: &FeatureMeta) -> Result<()> {
        let grid = [meta.grid_h, meta.grid_w, meta.dim];
        let same_source = self.features.as_ref().is_none_or(|trained| {
            let found = &meta.source;
            (&found.extractor, &found.fingerprint, found.image_size)
                == (&trained.extractor, &trained.fingerprint, trained.image_size)
        });
        if grid == self.feature_grid && same_source {
            return Ok(());
        }
        let [h, w, c] = self.feature_grid;
        let trained = match &self.features {
            Some(t) if t.model_dir.is_empty() => format!("{}, {h}×{w}×{c}", t.extractor),
            Some(t) => {
                format!("{} from {}, {h}×{w}×{c} at {}×{}", t.extractor, t.model_dir, t.image_size[0], t.image_size[1])
            }
            None => format!("{h}×{w}×{c} features"),
        };
        let index = features::cache_dir(data, &self.config.train.backbone).join(features::cache::INDEX_FILE);
        Err(TrainError::Config(format!(
            "{}: this cache holds {}, but the run was trained on {trained}; extract the run's features \
             (under another --name to keep this cache)",
            index.display(),
            meta.describe(),
        )))
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
    // Id 0 exists in every run's own table (a VLM text side's has that one row).
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i64], [1, 1]), device);
    let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true], [1, 1]), device);
    let out = model.forward(patches, ids, mask, &batch);
    let _ = out.z_s.into_data();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::features::CacheDtype;
    use crate::stage1::ModelSettings;

    fn source(extractor: &str, fingerprint: &str, size: usize) -> CacheSource {
        CacheSource {
            extractor: extractor.into(),
            model_dir: format!("/models/{extractor}"),
            fingerprint: fingerprint.into(),
            image_size: [size, size],
        }
    }

    /// Same grid, another checkpoint or input size: only the recorded source tells them apart.
    #[test]
    fn a_cache_from_another_backbone_is_refused_even_with_the_same_grid() {
        let trained = source("dinov3_convnext", "abc", 448);
        let info = RunInfo {
            stage: STAGE1.into(),
            config: Stage1Config { model: ModelSettings::tiny(), ..Stage1Config::default() },
            subjects: vec!["a".into()],
            vocab: vec!["word".into()],
            feature_grid: [14, 14, 768],
            data: String::new(),
            text_embeddings: None,
            features: Some(trained.clone()),
        };
        let meta = |source: CacheSource| FeatureMeta {
            backbone: "dinov3".into(),
            grid_h: 14,
            grid_w: 14,
            dim: 768,
            images: 3,
            dtype: CacheDtype::F16,
            source,
        };
        let data = Path::new("/data/coco");
        info.check_features(data, &meta(trained.clone())).unwrap();
        // The checkpoint folder moved: its digest is the same, so the cache is.
        let moved = CacheSource { model_dir: "/elsewhere".into(), ..trained.clone() };
        info.check_features(data, &meta(moved)).unwrap();
        for other in [
            source("dinov3_vit", "def", 448),
            source("dinov3_convnext", "xyz", 448),
            source("dinov3_convnext", "abc", 224),
        ] {
            let err = info.check_features(data, &meta(other)).unwrap_err().to_string();
            assert!(err.contains("/data/coco/features/") && err.contains("index.json"), "{err}");
            assert!(err.contains("dinov3_convnext from /models/dinov3_convnext, 14×14×768 at 448×448"), "{err}");
        }
        let mut narrower = meta(trained);
        narrower.dim = 384;
        let err = info.check_features(data, &narrower).unwrap_err().to_string();
        assert!(err.contains("14×14×384") && err.contains("14×14×768"), "{err}");
        // A run written before sources were recorded still checks the grid.
        let old = RunInfo { features: None, ..info };
        assert!(old.check_features(data, &narrower).is_err());
    }
}
