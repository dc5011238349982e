//! Subject and trajectory metrics of a stage-1 network on a set of samples: subject accuracy and
//! macro-F1, box IoU per step, and the model outputs they are computed from. Stage 1 validates
//! with them every epoch; [`crate::eval`] reports them.

use burn::prelude::*;
use deper_core::{BBox, Trajectory, MAX_STEPS};
use deper_model::Deper;
use serde::Serialize;

use crate::data::{Prepared, Sample};
use crate::{Result, TrainError};

/// Subject and trajectory metrics on samples of trained subjects.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeenMetrics {
    pub samples: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Mean IoU of predicted vs. true boxes over the true steps.
    pub box_iou: f64,
    /// Mean IoU at each step index (first step first) over the samples that reach it.
    pub box_iou_by_step: Vec<f64>,
}

/// Box IoU of predicted against true trajectories, summed per step index and in total, each IoU
/// computed once ([`StepIou::mean`] is what [`trajectory_iou`] sums give, in the same order).
#[derive(Debug, Clone, Default)]
pub struct StepIou {
    sums: Vec<f64>,
    counts: Vec<usize>,
    total: f64,
    steps: usize,
}

impl StepIou {
    /// Adds one trajectory's predicted boxes against its true steps; a true step without a
    /// predicted box scores 0, as in [`trajectory_iou`].
    pub fn add(&mut self, pred: &[BBox], truth: &Trajectory) {
        let mut sample = 0.0;
        for (k, step) in truth.steps.iter().take(MAX_STEPS).enumerate() {
            if self.sums.len() <= k {
                self.sums.resize(k + 1, 0.0);
                self.counts.resize(k + 1, 0);
            }
            let iou = pred.get(k).map_or(0.0, |p| p.iou(&step.bbox));
            self.sums[k] += iou;
            self.counts[k] += 1;
            sample += iou;
        }
        self.total += sample;
        self.steps += truth.steps.len().min(MAX_STEPS);
    }

    /// Mean IoU over every true step added (0 without any).
    pub fn mean(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.total / self.steps as f64
        }
    }

    /// Mean IoU per step index.
    pub fn means(&self) -> Vec<f64> {
        self.sums.iter().zip(&self.counts).map(|(s, &n)| s / n as f64).collect()
    }
}

/// Model outputs for a set of samples, on the host.
#[derive(Debug)]
pub struct Outputs {
    pub z_s: Vec<Vec<f32>>,
    pub predicted_subject: Vec<usize>,
    pub boxes: Vec<Vec<BBox>>,
    /// Decoded steps the validity head keeps (logit > 0), per sample.
    pub valid_steps: Vec<usize>,
}

/// Runs the model over `indices` in batches.
pub fn run_model<B: Backend>(
    model: &Deper<B>,
    prep: &Prepared,
    indices: &[usize],
    batch_size: usize,
    device: &B::Device,
) -> Result<Outputs> {
    let mut out =
        Outputs { z_s: Vec::new(), predicted_subject: Vec::new(), boxes: Vec::new(), valid_steps: Vec::new() };
    for chunk in indices.chunks(batch_size.max(1)) {
        let samples: Vec<&Sample> = chunk.iter().map(|&i| &prep.samples[i]).collect();
        let o = prep.batch::<B>(&samples, device)?.forward(model);
        let [n, d] = o.z_s.dims();
        let z: Vec<f32> =
            o.z_s.into_data().convert::<f32>().to_vec().map_err(|e| TrainError::Config(format!("{e:?}")))?;
        out.z_s.extend(z.chunks(d).map(<[f32]>::to_vec));
        let pred: Vec<i64> = o
            .subject_logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .map_err(|e| TrainError::Config(format!("{e:?}")))?;
        out.predicted_subject.extend(pred.into_iter().map(|p| p as usize));
        let [_, steps, _] = o.pred_boxes.dims();
        let valid: Vec<f32> = o
            .pred_valid_logits
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| TrainError::Config(format!("{e:?}")))?;
        out.valid_steps.extend(valid.chunks(steps).map(|row| row.iter().filter(|&&l| l > 0.0).count()));
        let b: Vec<f32> =
            o.pred_boxes.into_data().convert::<f32>().to_vec().map_err(|e| TrainError::Config(format!("{e:?}")))?;
        for i in 0..n {
            out.boxes.push(
                (0..steps)
                    .map(|s| {
                        let k = (i * steps + s) * 4;
                        BBox::from_corners(b[k] as f64, b[k + 1] as f64, b[k + 2] as f64, b[k + 3] as f64)
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// Summed IoU between predicted boxes and a trajectory's steps, step by step, and the
/// number of true steps (at most 30); a true step with no prediction counts as IoU 0.
pub fn trajectory_iou(pred: &[BBox], truth: &Trajectory) -> (f64, usize) {
    let steps = truth.steps.len().min(MAX_STEPS);
    let sum = pred.iter().zip(&truth.steps[..steps]).map(|(p, step)| p.iou(&step.bbox)).sum();
    (sum, steps)
}

/// Accuracy and macro-F1 over classes that occur in `truth` or `pred`.
pub fn accuracy_and_macro_f1(truth: &[usize], pred: &[usize]) -> (f64, f64) {
    if truth.is_empty() {
        return (0.0, 0.0);
    }
    let correct = truth.iter().zip(pred).filter(|(t, p)| t == p).count();
    let mut classes: Vec<usize> = truth.iter().chain(pred).copied().collect();
    classes.sort_unstable();
    classes.dedup();
    let mut f1_sum = 0.0;
    for &c in &classes {
        let tp = truth.iter().zip(pred).filter(|(t, p)| **t == c && **p == c).count() as f64;
        let fp = truth.iter().zip(pred).filter(|(t, p)| **t != c && **p == c).count() as f64;
        let fn_ = truth.iter().zip(pred).filter(|(t, p)| **t == c && **p != c).count() as f64;
        let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let recall = if tp + fn_ > 0.0 { tp / (tp + fn_) } else { 0.0 };
        if precision + recall > 0.0 {
            f1_sum += 2.0 * precision * recall / (precision + recall);
        }
    }
    (correct as f64 / truth.len() as f64, f1_sum / classes.len() as f64)
}

/// [`SeenMetrics`] of `model` on the samples `indices` (of trained subjects).
pub fn evaluate_seen<B: Backend>(
    model: &Deper<B>,
    prep: &Prepared,
    indices: &[usize],
    batch_size: usize,
    device: &B::Device,
) -> Result<SeenMetrics> {
    if indices.is_empty() {
        return Ok(SeenMetrics::default());
    }
    // Batch by batch: only labels are kept per sample, so validation memory does not grow with the
    // split (a batch's boxes and z_s are dropped once scored).
    let mut truth = Vec::with_capacity(indices.len());
    let mut predicted = Vec::with_capacity(indices.len());
    let mut iou = StepIou::default();
    for chunk in indices.chunks(batch_size.max(1)) {
        let out = run_model(model, prep, chunk, batch_size, device)?;
        for (k, &i) in chunk.iter().enumerate() {
            truth.push(prep.samples[i].label.unwrap_or(usize::MAX));
            iou.add(&out.boxes[k], &prep.samples[i].trajectory.to_trajectory());
        }
        predicted.extend(out.predicted_subject);
    }
    let (accuracy, macro_f1) = accuracy_and_macro_f1(&truth, &predicted);
    Ok(SeenMetrics { samples: indices.len(), accuracy, macro_f1, box_iou: iou.mean(), box_iou_by_step: iou.means() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_macro_f1_by_hand() {
        // Class 0: tp 2, fp 1, fn 0 → p 2/3, r 1, f1 0.8; class 1: tp 1, fp 0, fn 1 → p 1, r 0.5, f1 2/3.
        let (acc, f1) = accuracy_and_macro_f1(&[0, 0, 1, 1], &[0, 0, 0, 1]);
        assert!((acc - 0.75).abs() < 1e-12);
        assert!((f1 - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12, "{f1}");
    }

    #[test]
    fn iou_is_per_step() {
        use deper_core::{AttentionStep, TrajectorySource};
        let b = |x: f64| BBox::from_corners(x, 0.0, x + 0.2, 0.2);
        let truth = Trajectory {
            source: TrajectorySource::Mouse,
            steps: vec![
                AttentionStep { bbox: b(0.0), duration: 1.0, start: None, words: vec![] },
                AttentionStep { bbox: b(0.5), duration: 1.0, start: None, words: vec![] },
            ],
        };
        let (sum, n) = trajectory_iou(&[b(0.0), b(0.6), b(0.9)], &truth);
        assert_eq!(n, 2);
        // A shorter prediction still counts every true step.
        assert_eq!(trajectory_iou(&[b(0.0)], &truth), (1.0, 2));
        // Step 2 overlaps 0.1 of 0.2 width: IoU = 0.02 / (0.04 + 0.04 − 0.02) = 1/3.
        assert!((sum - (1.0 + 1.0 / 3.0)).abs() < 1e-9, "{sum}");
    }
}
