//! Triplets → labelled samples → padded tensor batches, and a dataset loaded for a run ([`prepare`]).

use burn::prelude::*;
use deper_core::dataset::Dataset;
use deper_core::split::Splits;
use deper_core::{AttentionStep, BBox, Split, Trajectory, TrajectorySource, Triplet};
use deper_model::{Deper, DeperOutput, ModelInput, TrajectoryBatch};
use std::path::Path;

use crate::features::{self, FeatureStore};
use crate::text::{TextSide, WordVocab};
use crate::{Result, TrainError};

/// One triplet ready for the model.
#[derive(Debug, Clone)]
pub struct Sample {
    pub triplet_id: String,
    pub image: String,
    pub subject: String,
    /// Index of the subject among the trained (seen) subjects; `None` for unseen subjects.
    pub label: Option<usize>,
    pub caption: Vec<u32>,
    pub trajectory: SampleTrajectory,
    pub split: Split,
}

/// A trajectory as a sample keeps it: each step's box and duration, exact (40 bytes a step against
/// 80 for an [`AttentionStep`] with its start and words), so the sample list of a COCO-size
/// dataset stays small and every number computed from it is unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleTrajectory {
    pub source: TrajectorySource,
    /// Per step: `x1, y1, x2, y2, duration`.
    steps: Box<[[f64; 5]]>,
}

impl SampleTrajectory {
    pub fn new(trajectory: &Trajectory) -> Self {
        let step = |s: &AttentionStep| [s.bbox.x1, s.bbox.y1, s.bbox.x2, s.bbox.y2, s.duration];
        Self { source: trajectory.source, steps: trajectory.steps.iter().map(step).collect() }
    }

    /// The boxes, in order.
    pub fn boxes(&self) -> impl Iterator<Item = BBox> + '_ {
        self.steps.iter().map(|&[x1, y1, x2, y2, _]| BBox { x1, y1, x2, y2 })
    }

    /// Back to the dataset's type (no start times or words).
    pub fn to_trajectory(&self) -> Trajectory {
        let step = |&[x1, y1, x2, y2, duration]: &[f64; 5]| AttentionStep {
            bbox: BBox { x1, y1, x2, y2 },
            duration,
            start: None,
            words: Vec::new(),
        };
        Trajectory { source: self.source, steps: self.steps.iter().map(step).collect() }
    }
}

/// Builds samples (captions tokenised by `text`), checking that every image has features. Takes the
/// triplets as a stream, so a large dataset is never held twice (triplets and samples); a sample
/// keeps only what stage 1 reads of a trajectory (the steps' words are dropped).
pub fn make_samples(
    triplets: impl IntoIterator<Item = Result<Triplet>>,
    text: &TextSide,
    max_caption_tokens: usize,
    seen_subjects: &[String],
    features: &FeatureStore,
) -> Result<Vec<Sample>> {
    triplets
        .into_iter()
        .map(|t| {
            let t = t?;
            if !features.contains(&t.image) {
                return Err(TrainError::MissingImage { image: t.image });
            }
            let caption = text.encode(&t.description.text, max_caption_tokens)?;
            let trajectory = SampleTrajectory::new(&t.trajectory);
            Ok(Sample {
                label: seen_subjects.binary_search(&t.subject).ok(),
                triplet_id: t.id,
                image: t.image,
                subject: t.subject,
                caption,
                trajectory,
                split: t.split,
            })
        })
        .collect()
}

/// The subsets of samples training and evaluation use.
#[derive(Debug, Default)]
pub struct Partition {
    /// Seen subjects, train split: the training set.
    pub train: Vec<usize>,
    /// Seen subjects, val split: validated every epoch.
    pub val: Vec<usize>,
    /// Seen subjects, test split: held-out images of training subjects.
    pub test: Vec<usize>,
    /// Unseen subjects' support samples (K per subject).
    pub support: Vec<usize>,
    /// Unseen subjects' val/test samples: the few-shot queries.
    pub unseen_queries: Vec<usize>,
}

pub fn partition(samples: &[Sample], splits: &Splits) -> Partition {
    let support_ids: std::collections::HashSet<&str> = splits.support.values().flatten().map(String::as_str).collect();
    let mut p = Partition::default();
    for (i, s) in samples.iter().enumerate() {
        if splits.is_unseen(&s.subject) {
            if support_ids.contains(s.triplet_id.as_str()) {
                p.support.push(i);
            } else if s.split != Split::Train {
                p.unseen_queries.push(i);
            }
            continue;
        }
        match s.split {
            Split::Train => p.train.push(i),
            Split::Val => p.val.push(i),
            Split::Test => p.test.push(i),
        }
    }
    p
}

/// A padded batch.
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    /// `[batch, h, w, c]`
    pub patches: Tensor<B, 4>,
    /// `[batch, len]`
    pub caption_ids: Tensor<B, 2, Int>,
    /// `[batch, len]`, `true` = token
    pub caption_mask: Tensor<B, 2, Bool>,
    /// `[batch, len, hidden]`: the captions embedded by a VLM's table ([`TextSide::Vlm`]);
    /// `None`: the network embeds `caption_ids` with its own table.
    pub caption_embeddings: Option<Tensor<B, 3>>,
    pub trajectory: TrajectoryBatch<B>,
    /// Subject labels (0 for unseen subjects; only meaningful where `label` was `Some`).
    pub labels: Vec<usize>,
}

pub fn make_batch<B: Backend>(samples: &[&Sample], features: &FeatureStore, device: &B::Device) -> Result<Batch<B>> {
    let meta = &features.meta;
    let mut patches = Vec::with_capacity(samples.len() * features.patch_len());
    for s in samples {
        patches.extend(features.read(&s.image)?);
    }
    let captions: Vec<&[u32]> = samples.iter().map(|s| s.caption.as_slice()).collect();
    let trajectories: Vec<Trajectory> = samples.iter().map(|s| s.trajectory.to_trajectory()).collect();
    let input = ModelInput::from_host(patches, [meta.grid_h, meta.grid_w, meta.dim], &captions, &trajectories, device)
        .map_err(TrainError::Config)?;
    Ok(Batch {
        patches: input.patches,
        caption_ids: input.caption_ids,
        caption_mask: input.caption_mask,
        caption_embeddings: None,
        trajectory: input.trajectory,
        labels: samples.iter().map(|s| s.label.unwrap_or(0)).collect(),
    })
}

impl<B: Backend> Batch<B> {
    /// The network's forward pass on this batch: from the caption embeddings when the batch has
    /// them (a VLM's text side), else from the caption ids. Every stage-1 and stage-2 forward goes
    /// through here, so the text side is chosen in one place.
    pub fn forward(&self, model: &Deper<B>) -> DeperOutput<B> {
        let (patches, mask) = (self.patches.clone(), self.caption_mask.clone());
        match &self.caption_embeddings {
            Some(embeddings) => model.forward_embedded(patches, embeddings.clone(), mask, &self.trajectory),
            None => model.forward(patches, self.caption_ids.clone(), mask, &self.trajectory),
        }
    }
}

/// The dataset pieces a run needs: samples, the partition, features and the captions' text side.
#[derive(Debug)]
pub struct Prepared {
    pub samples: Vec<Sample>,
    pub partition: Partition,
    pub features: FeatureStore,
    pub splits: Splits,
    /// How the samples' captions were tokenised, and how a batch's are embedded.
    pub text: TextSide,
}

impl Prepared {
    /// A padded batch of `samples` (of this dataset), with caption embeddings when the text side
    /// supplies them; [`Batch::forward`] runs the network on it.
    pub fn batch<B: Backend>(&self, samples: &[&Sample], device: &B::Device) -> Result<Batch<B>> {
        let mut batch = make_batch::<B>(samples, &self.features, device)?;
        let captions: Vec<&[u32]> = samples.iter().map(|s| s.caption.as_slice()).collect();
        batch.caption_embeddings = self.text.embed(&captions, device)?;
        Ok(batch)
    }
}

/// Loads a dataset for a run: triplets → samples (with `vocab` and `subjects`' labels), the
/// partition and the `backbone` features.
pub fn prepare(
    data: &Path,
    backbone: &str,
    vocab: &WordVocab,
    max_tokens: usize,
    subjects: &[String],
) -> Result<Prepared> {
    prepare_with_text(data, backbone, TextSide::Words(vocab.clone()), max_tokens, subjects)
}

/// [`prepare`] with captions read by `text` (a word vocabulary or a VLM's text side).
pub fn prepare_with_text(
    data: &Path,
    backbone: &str,
    text: TextSide,
    max_tokens: usize,
    subjects: &[String],
) -> Result<Prepared> {
    let splits = Splits::load(data)?;
    let features = features::load(data, backbone)?;
    // The manifest (one entry per image) is not needed once the triplet file is open.
    let triplets = Dataset::open(data)?.triplets()?.map(|t| t.map_err(TrainError::from));
    let samples = make_samples(triplets, &text, max_tokens, subjects, &features)?;
    let partition = partition(&samples, &splits);
    Ok(Prepared { samples, partition, features, splits, text })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sample_trajectory_keeps_boxes_and_durations_exactly() {
        let step = |x: f64, start: Option<f64>, words: &[&str]| AttentionStep {
            bbox: BBox::from_corners(x, 0.1 / 3.0, x + 0.2, 0.7),
            duration: x * 1.7 + 1e-9,
            start,
            words: words.iter().map(|w| w.to_string()).collect(),
        };
        let original = Trajectory {
            source: TrajectorySource::Gaze,
            steps: vec![step(0.1, Some(0.5), &["a", "dog"]), step(0.3, None, &[]), step(0.55, Some(2.0), &["runs"])],
        };
        let kept = SampleTrajectory::new(&original);
        let back = kept.to_trajectory();
        assert_eq!(back.source, TrajectorySource::Gaze);
        assert_eq!(back.steps.len(), 3);
        for (b, o) in back.steps.iter().zip(&original.steps) {
            assert_eq!((b.bbox, b.duration), (o.bbox, o.duration), "bit-exact");
            assert!(b.start.is_none() && b.words.is_empty());
        }
        assert_eq!(kept.boxes().collect::<Vec<_>>(), original.steps.iter().map(|s| s.bbox).collect::<Vec<_>>());
    }
}
