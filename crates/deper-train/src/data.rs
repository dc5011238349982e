//! Triplets → labelled samples → padded tensor batches, and a dataset loaded for a run ([`prepare`]).

use burn::prelude::*;
use deper_core::dataset::Dataset;
use deper_core::split::Splits;
use deper_core::{Split, Trajectory, Triplet};
use deper_model::{ModelInput, TrajectoryBatch};
use std::path::Path;

use crate::features::{self, FeatureStore};
use crate::text::WordVocab;
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
    pub trajectory: Trajectory,
    pub split: Split,
}

/// Builds samples, checking that every image has features.
pub fn make_samples(
    triplets: &[Triplet],
    vocab: &WordVocab,
    max_caption_tokens: usize,
    seen_subjects: &[String],
    features: &FeatureStore,
) -> Result<Vec<Sample>> {
    triplets
        .iter()
        .map(|t| {
            if features.get(&t.image).is_none() {
                return Err(TrainError::MissingImage { image: t.image.clone() });
            }
            let caption = vocab.encode_caption(&t.description.text, max_caption_tokens);
            Ok(Sample {
                triplet_id: t.id.clone(),
                image: t.image.clone(),
                subject: t.subject.clone(),
                label: seen_subjects.binary_search(&t.subject).ok(),
                caption,
                trajectory: t.trajectory.clone(),
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
    pub trajectory: TrajectoryBatch<B>,
    /// Subject labels (0 for unseen subjects; only meaningful where `label` was `Some`).
    pub labels: Vec<usize>,
}

pub fn make_batch<B: Backend>(samples: &[&Sample], features: &FeatureStore, device: &B::Device) -> Result<Batch<B>> {
    let meta = &features.meta;
    let mut patches = Vec::with_capacity(samples.len() * features.patch_len());
    for s in samples {
        let f = features.get(&s.image).ok_or_else(|| TrainError::MissingImage { image: s.image.clone() })?;
        patches.extend_from_slice(f);
    }
    let captions: Vec<&[u32]> = samples.iter().map(|s| s.caption.as_slice()).collect();
    let trajectories: Vec<Trajectory> = samples.iter().map(|s| s.trajectory.clone()).collect();
    let input = ModelInput::from_host(patches, [meta.grid_h, meta.grid_w, meta.dim], &captions, &trajectories, device)
        .map_err(TrainError::Config)?;
    Ok(Batch {
        patches: input.patches,
        caption_ids: input.caption_ids,
        caption_mask: input.caption_mask,
        trajectory: input.trajectory,
        labels: samples.iter().map(|s| s.label.unwrap_or(0)).collect(),
    })
}

/// The dataset pieces a run needs: samples, the partition and features.
#[derive(Debug)]
pub struct Prepared {
    pub samples: Vec<Sample>,
    pub partition: Partition,
    pub features: FeatureStore,
    pub splits: Splits,
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
    let ds = Dataset::open(data)?;
    let splits = Splits::load(data)?;
    let features = features::load(data, backbone)?;
    let triplets = ds.load_triplets()?;
    let samples = make_samples(&triplets, vocab, max_tokens, subjects, &features)?;
    let partition = partition(&samples, &splits);
    Ok(Prepared { samples, partition, features, splits })
}
