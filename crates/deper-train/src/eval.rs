//! Evaluation of a stage-1 run: subject accuracy and macro-F1, trajectory box
//! IoU against the per-subject mean-trajectory baseline, 5-shot nearest-centroid
//! identification of unseen subjects, and subject embeddings (`deper embed`, and [`Encoder`] for
//! triplets outside a dataset).

use burn::prelude::*;
use deper_core::{BBox, MAX_STEPS};
/// Shared with the browser (deper-web), which averages z_s the same way.
pub use deper_model::run::mean_vector;
use deper_model::{Deper, ModelInput};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

use crate::data::{Batch, Prepared, Sample};
/// The metrics live in [`crate::metrics`] (stage 1 validates with them); re-exported for callers of
/// `eval::run_model` and friends.
pub use crate::metrics::{
    accuracy_and_macro_f1, evaluate_seen, run_model, trajectory_iou, Outputs, SeenMetrics, StepIou,
};
use crate::stage1::{load_model, RunInfo, STAGE1};
use crate::text::TextSide;
use crate::{Result, TrainError};

/// The per-subject mean trajectory: at each step index, the mean box over the
/// subject's training trajectories that reach that step (the baseline of the
/// box-IoU comparison).
pub fn mean_trajectories(prep: &Prepared, train: &[usize]) -> BTreeMap<String, Vec<BBox>> {
    mean_trajectories_of(&prep.samples, train)
}

fn mean_trajectories_of(samples: &[Sample], train: &[usize]) -> BTreeMap<String, Vec<BBox>> {
    let mut sums: BTreeMap<String, Vec<([f64; 4], usize)>> = BTreeMap::new();
    for &i in train {
        let s = &samples[i];
        let entry = sums.entry(s.subject.clone()).or_insert_with(|| vec![([0.0; 4], 0); MAX_STEPS]);
        for (k, bbox) in s.trajectory.boxes().take(MAX_STEPS).enumerate() {
            for (acc, v) in entry[k].0.iter_mut().zip(bbox.to_array()) {
                *acc += v;
            }
            entry[k].1 += 1;
        }
    }
    sums.into_iter()
        .map(|(subject, steps)| {
            let boxes = steps
                .iter()
                .take_while(|(_, n)| *n > 0)
                .map(|(s, n)| {
                    let n = *n as f64;
                    BBox::from_corners(s[0] / n, s[1] / n, s[2] / n, s[3] / n)
                })
                .collect();
            (subject, boxes)
        })
        .collect()
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / norm).collect()
}

/// What `deper eval-fewshot --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct FewShotReport {
    /// Classifier accuracy on held-out (test-split) images of training subjects.
    pub seen_acc: f64,
    pub seen_macro_f1: f64,
    /// K-shot nearest-centroid accuracy over the unseen subjects' queries.
    pub unseen_acc: f64,
    pub unseen_macro_f1: f64,
    /// Mean box IoU of reconstructed trajectories on held-out images of training subjects.
    pub box_iou: f64,
    /// Mean box IoU of the per-subject mean-trajectory baseline on the same samples.
    pub mean_trajectory_iou: f64,
    /// `box_iou` at each step index (first step first), over the samples that reach it.
    pub box_iou_by_step: Vec<f64>,
    /// `mean_trajectory_iou` at each step index.
    pub mean_trajectory_iou_by_step: Vec<f64>,
    pub shots: usize,
    pub seen_samples: usize,
    pub unseen_subjects: usize,
    pub unseen_queries: usize,
}

/// A stage-1 run's description, weights and the dataset prepared as it was trained.
pub fn open_run<B: Backend>(run: &Path, data: &Path, device: &B::Device) -> Result<(RunInfo, Deper<B>, Prepared)> {
    let info = RunInfo::load(run)?;
    if info.stage != STAGE1 {
        return Err(TrainError::Checkpoint {
            path: run.into(),
            message: format!("run is `{}`, not stage1", info.stage),
        });
    }
    let model: Deper<B> = load_model(run, &info, device)?;
    let prep = info.prepare(data)?;
    Ok((info, model, prep))
}

/// Evaluates a stage-1 run on `data` (see [`FewShotReport`]).
pub fn eval_fewshot<B: Backend>(run: &Path, data: &Path, shots: usize, device: &B::Device) -> Result<FewShotReport> {
    let (info, model, prep) = open_run::<B>(run, data, device)?;
    let batch = info.config.train.batch_size;

    let seen = evaluate_seen(&model, &prep, &prep.partition.test, batch, device)?;
    let means = mean_trajectories(&prep, &prep.partition.train);
    let mut base = StepIou::default();
    for &i in &prep.partition.test {
        let s = &prep.samples[i];
        if let Some(mean) = means.get(&s.subject) {
            base.add(mean, &s.trajectory.to_trajectory());
        }
    }

    let unseen = unseen_fewshot(&model, &prep, shots, batch, device)?;
    Ok(FewShotReport {
        seen_acc: seen.accuracy,
        seen_macro_f1: seen.macro_f1,
        unseen_acc: unseen.accuracy,
        unseen_macro_f1: unseen.macro_f1,
        box_iou: seen.box_iou,
        mean_trajectory_iou: base.mean(),
        box_iou_by_step: seen.box_iou_by_step,
        mean_trajectory_iou_by_step: base.means(),
        shots,
        seen_samples: prep.partition.test.len(),
        unseen_subjects: unseen.subjects,
        unseen_queries: unseen.queries,
    })
}

/// K-shot identification of the subjects held out of training.
#[derive(Debug, Clone, Copy)]
pub struct UnseenFewShot {
    /// Nearest-centroid accuracy over the unseen subjects' queries (0 without queries).
    pub accuracy: f64,
    pub macro_f1: f64,
    pub subjects: usize,
    pub queries: usize,
}

/// Each unseen subject's centroid is the normalised mean of its first `shots` support z_s (each
/// L2-normalised first); every query goes to the centroid of highest cosine similarity.
pub fn unseen_fewshot<B: Backend>(
    model: &Deper<B>,
    prep: &Prepared,
    shots: usize,
    batch: usize,
    device: &B::Device,
) -> Result<UnseenFewShot> {
    unseen_fewshot_with(prep, shots, |ids| Ok(run_model(model, prep, ids, batch, device)?.z_s))
}

/// [`unseen_fewshot`] with the z_s of samples (indices into `prep.samples`, in the order given)
/// from `embed`, e.g. looked up among vectors already computed.
pub fn unseen_fewshot_with(
    prep: &Prepared,
    shots: usize,
    mut embed: impl FnMut(&[usize]) -> Result<Vec<Vec<f32>>>,
) -> Result<UnseenFewShot> {
    let mut support_by_subject: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in &prep.partition.support {
        support_by_subject.entry(prep.samples[i].subject.as_str()).or_default().push(i);
    }
    let unseen: Vec<&str> = support_by_subject.keys().copied().collect();
    let mut centroids = Vec::new();
    for subject in &unseen {
        let mut ids = support_by_subject[subject].clone();
        ids.truncate(shots);
        if ids.len() < shots {
            return Err(TrainError::Config(format!(
                "unseen subject `{subject}` has {} support triplets, fewer than --shots {shots} (re-run `deper dataset split --shots`)",
                ids.len()
            )));
        }
        let normed: Vec<Vec<f32>> = embed(&ids)?.iter().map(|z| normalized(z)).collect();
        centroids.push(normalized(&mean_vector(&normed.iter().collect::<Vec<_>>())));
    }
    let queries = &prep.partition.unseen_queries;
    let (accuracy, macro_f1) = if queries.is_empty() || centroids.is_empty() {
        (0.0, 0.0)
    } else {
        let truth: Vec<usize> = queries
            .iter()
            .map(|&i| unseen.iter().position(|s| *s == prep.samples[i].subject).unwrap_or(usize::MAX))
            .collect();
        let pred: Vec<usize> = embed(queries)?
            .iter()
            .map(|z| {
                let z = normalized(z);
                let sims = centroids.iter().map(|c| c.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>());
                sims.enumerate().fold((0, f32::MIN), |best, (k, s)| if s > best.1 { (k, s) } else { best }).0
            })
            .collect();
        accuracy_and_macro_f1(&truth, &pred)
    };
    Ok(UnseenFewShot { accuracy, macro_f1, subjects: unseen.len(), queries: queries.len() })
}

/// One subject's embedding in `deper embed`'s output.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectEmbedding {
    pub z_s: Vec<f32>,
    /// Triplet ids averaged.
    pub support: Vec<String>,
    /// Whether the run was trained on this subject.
    pub seen: bool,
}

/// What `deper embed --out FILE.json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Embeddings {
    pub run: String,
    pub dim: usize,
    pub shots: usize,
    pub subjects: BTreeMap<String, SubjectEmbedding>,
}

/// Mean z_s over K support triplets per subject. Unseen subjects use their
/// support sets from `splits.json`; others their K train triplets with the
/// smallest stable hash (the same rule), so the result is deterministic.
pub fn embed<B: Backend>(
    run: &Path,
    data: &Path,
    subjects: Option<&[String]>,
    shots: usize,
    device: &B::Device,
) -> Result<Embeddings> {
    let (info, model, prep) = open_run::<B>(run, data, device)?;
    let seed = prep.splits.seed;
    let mut by_subject: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in prep.samples.iter().enumerate() {
        let eligible = if prep.splits.is_unseen(&s.subject) {
            prep.partition.support.contains(&i)
        } else {
            s.split == deper_core::Split::Train
        };
        if eligible {
            by_subject.entry(s.subject.as_str()).or_default().push(i);
        }
    }
    if let Some(wanted) = subjects {
        for w in wanted {
            if !by_subject.contains_key(w.as_str()) {
                return Err(TrainError::Config(format!(
                    "subject `{w}` has no eligible triplets in {}",
                    data.display()
                )));
            }
        }
        by_subject.retain(|s, _| wanted.iter().any(|w| w == s));
    }
    let mut out = BTreeMap::new();
    let mut dim = 0;
    for (subject, mut ids) in by_subject {
        ids.sort_by_key(|&i| {
            deper_core::rng::stable_hash(seed, format!("support:{}", prep.samples[i].triplet_id).as_bytes())
        });
        ids.truncate(shots);
        let z = run_model(&model, &prep, &ids, info.config.train.batch_size, device)?.z_s;
        let mean = mean_vector(&z.iter().collect::<Vec<_>>());
        dim = mean.len();
        out.insert(
            subject.to_string(),
            SubjectEmbedding {
                z_s: mean,
                support: ids.iter().map(|&i| prep.samples[i].triplet_id.clone()).collect(),
                seen: info.subjects.binary_search_by(|s| s.as_str().cmp(subject)).is_ok(),
            },
        );
    }
    Ok(Embeddings { run: run.display().to_string(), dim, shots, subjects: out })
}

/// One triplet outside any dataset, as a page records it: the image's patch features (`[h, w, c]`
/// of the run's grid, row-major), the description and the attention trajectory.
#[derive(Debug, Clone)]
pub struct HostTriplet {
    pub features: Vec<f32>,
    pub caption: String,
    pub trajectory: deper_core::Trajectory,
}

/// A stage-1 run's encoder with its text side, for the z_s of triplets that are in no dataset: the
/// server computes a participant's z_s with it when the page cannot (a run whose captions are
/// embedded with a VLM's table, which a browser cannot load).
#[derive(Debug)]
pub struct Encoder<B: Backend> {
    pub info: RunInfo,
    model: Deper<B>,
    text: TextSide,
    device: B::Device,
}

impl<B: Backend> Encoder<B> {
    /// Loads the run's weights and opens its text side (a VLM folder it names must still hold the
    /// table it was trained with).
    pub fn open(run: &Path, device: &B::Device) -> Result<Self> {
        let info = RunInfo::load(run)?;
        let model = load_model(run, &info, device)?;
        let text = info.text_side()?;
        Ok(Self { info, model, text, device: device.clone() })
    }

    /// The mean z_s of `triplets` (as `deper embed` averages a subject's), in batches of the run's
    /// batch size, captions cut to its caption length.
    pub fn mean_z_s(&self, triplets: &[HostTriplet]) -> Result<Vec<f32>> {
        if triplets.is_empty() {
            return Err(TrainError::Config("no triplets to embed".into()));
        }
        let train = &self.info.config.train;
        let mut z_s = Vec::with_capacity(triplets.len());
        for chunk in triplets.chunks(train.batch_size.max(1)) {
            let captions = chunk
                .iter()
                .map(|t| self.text.encode(&t.caption, train.caption_tokens()))
                .collect::<Result<Vec<_>>>()?;
            let captions: Vec<&[u32]> = captions.iter().map(Vec::as_slice).collect();
            let patches: Vec<f32> = chunk.iter().flat_map(|t| t.features.iter().copied()).collect();
            let trajectories: Vec<deper_core::Trajectory> = chunk.iter().map(|t| t.trajectory.clone()).collect();
            let input =
                ModelInput::<B>::from_host(patches, self.info.feature_grid, &captions, &trajectories, &self.device)
                    .map_err(TrainError::Config)?;
            let batch = Batch {
                patches: input.patches,
                caption_ids: input.caption_ids,
                caption_mask: input.caption_mask,
                caption_embeddings: self.text.embed(&captions, &self.device)?,
                trajectory: input.trajectory,
                labels: vec![0; chunk.len()],
            };
            let out = batch.forward(&self.model).z_s;
            let [_, d] = out.dims();
            let values: Vec<f32> =
                out.into_data().convert::<f32>().to_vec().map_err(|e| TrainError::Config(format!("{e:?}")))?;
            z_s.extend(values.chunks(d).map(<[f32]>::to_vec));
        }
        Ok(mean_vector(&z_s.iter().collect::<Vec<_>>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_trajectory_averages_each_step_index() {
        use crate::data::{Sample, SampleTrajectory};
        use deper_core::{AttentionStep, Split, Trajectory, TrajectorySource};
        let step = |x1: f64, x2: f64| AttentionStep {
            bbox: BBox::from_corners(x1, 0.0, x2, 0.5),
            duration: 1.0,
            start: None,
            words: vec![],
        };
        let sample = |subject: &str, steps: Vec<AttentionStep>| Sample {
            triplet_id: String::new(),
            image: String::new(),
            subject: subject.into(),
            label: Some(0),
            caption: vec![1],
            trajectory: SampleTrajectory::new(&Trajectory { source: TrajectorySource::Mouse, steps }),
            split: Split::Train,
        };
        let samples = vec![
            sample("a", vec![step(0.0, 0.2), step(0.4, 0.6)]),
            sample("a", vec![step(0.2, 0.4)]),
            sample("b", vec![step(0.8, 1.0)]),
        ];
        let means = mean_trajectories_of(&samples, &[0, 1, 2]);
        // Step 0 of `a`: mean of [0, .2] and [.2, .4] = [.1, .3]; step 1 only from the first sample.
        let a = &means["a"];
        assert_eq!(a.len(), 2);
        assert!((a[0].x1 - 0.1).abs() < 1e-12 && (a[0].x2 - 0.3).abs() < 1e-12, "{a:?}");
        assert!((a[1].x1 - 0.4).abs() < 1e-12 && (a[1].x2 - 0.6).abs() < 1e-12, "{a:?}");
        assert_eq!(means["b"].len(), 1);

        // Per step: step 1 of sample 0 against `a`'s mean [.1, .3] × [0, .5] (IoU ⅓ with [0, .2]),
        // step 2 exact (1); sample 2 (`b`) reaches step 1 only, exact. Sample 1's step 1 [.2, .4]
        // overlaps the mean by [.2, .3] (⅓). Sums agree with `trajectory_iou`.
        let mut by_step = StepIou::default();
        let (mut total, mut n) = (0.0, 0);
        for (i, subject) in [(0, "a"), (1, "a"), (2, "b")] {
            by_step.add(&means[subject], &samples[i].trajectory.to_trajectory());
            let (s, k) = trajectory_iou(&means[subject], &samples[i].trajectory.to_trajectory());
            total += s;
            n += k;
        }
        let per_step = by_step.means();
        assert_eq!(by_step.mean(), total / n as f64);
        assert_eq!(StepIou::default().mean(), 0.0);
        assert_eq!(per_step.len(), 2);
        assert!((per_step[0] - (1.0 / 3.0 + 1.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12, "{per_step:?}");
        assert!((per_step[1] - 1.0).abs() < 1e-12, "{per_step:?}");
        assert!((total / n as f64 - (1.0 / 3.0 + 1.0 + 1.0 / 3.0 + 1.0) / 4.0).abs() < 1e-12);
        // A prediction shorter than the truth scores 0 on the missing steps.
        let mut short = StepIou::default();
        short.add(&means["b"], &samples[0].trajectory.to_trajectory());
        assert_eq!(short.means().len(), 2);
        assert_eq!(short.means()[1], 0.0);
    }
}
