//! Stage 1: the subject encoder (trajectory reconstruction + subject classification + contrastive),
//! and the evaluations that read a stage-1 run (few-shot subject accuracy, subject embeddings).

use crate::backend::{with_backend, DeviceKind};
use crate::progress::{EpochEvents, OnEvent};
use anyhow::Context;
use deper_train::stage1::{self, Stage1Config};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// A stage-1 run to train.
#[derive(Debug, Clone)]
pub struct Stage1Job {
    /// Dataset folder (with splits and cached features).
    pub data: PathBuf,
    /// Run folder to create, or to continue with `resume`.
    pub out: PathBuf,
    pub config: Stage1Config,
    pub resume: bool,
    /// Data-parallel device indices of the chosen kind (`None`: the default device alone).
    pub devices: Option<Vec<usize>>,
}

/// Trains stage 1; stops with `TrainError::Cancelled` after the batch during which `cancel` is set.
pub fn train_stage1(
    job: Stage1Job,
    device: DeviceKind,
    cancel: &AtomicBool,
    on: OnEvent<'_>,
) -> anyhow::Result<Vec<stage1::EpochMetrics>> {
    if let Some(ids) = &job.devices {
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        if ids.is_empty() || (unique.len() != ids.len() && device != DeviceKind::Cpu) {
            anyhow::bail!("--devices {ids:?}: name each device once");
        }
    }
    let label = if job.config.model.no_trajectory { "stage 1 (no traj)" } else { "stage 1" };
    let mut events = EpochEvents::new(label, on);
    let mut on_progress = |p: stage1::Progress| match p {
        stage1::Progress::Start { epochs, batches_per_epoch, first_epoch } => {
            events.start(epochs, first_epoch, batches_per_epoch)
        }
        stage1::Progress::Batch { epoch, batch, loss } => events.batch(epoch, batch, loss),
        stage1::Progress::Epoch(m) => events.epoch(
            format!(
                "epoch {}  loss {:.4}  val acc {:.3}  f1 {:.3}  box IoU {:.3}  {:.0} samples/s",
                m.epoch, m.train_loss, m.val_subject_acc, m.val_macro_f1, m.val_box_iou, m.samples_per_s
            ),
            &m,
        ),
    };
    let Stage1Job { data, out, config, resume, devices } = job;
    let metrics = with_backend!(device, B, AD, first, nth => {
        let devices: Vec<_> = match &devices {
            Some(ids) => ids.iter().map(|&i| nth(i)).collect(),
            None => vec![first],
        };
        stage1::train_data_parallel::<AD>(&data, &out, config, resume, &devices, &mut on_progress, cancel)
            .with_context(|| format!("training stage 1 into {}", out.display()))
    })?;
    events.end();
    Ok(metrics)
}

/// Seen-subject accuracy, K-shot unseen accuracy and trajectory box IoU of a stage-1 run.
pub fn eval_fewshot(
    run: &Path,
    data: &Path,
    shots: usize,
    device: DeviceKind,
) -> anyhow::Result<deper_train::eval::FewShotReport> {
    with_backend!(device, B, AD, device => {
        deper_train::eval::eval_fewshot::<B>(run, data, shots, &device).map_err(anyhow::Error::from)
    })
}

/// One mean z_s per subject (all of them, or `subjects`) from `shots` support triplets each.
pub fn embed_subjects(
    run: &Path,
    data: &Path,
    subjects: Option<&[String]>,
    shots: usize,
    device: DeviceKind,
) -> anyhow::Result<deper_train::eval::Embeddings> {
    if shots == 0 {
        anyhow::bail!("--shots must be at least 1");
    }
    with_backend!(device, B, AD, device => {
        deper_train::eval::embed::<B>(run, data, subjects, shots, &device).map_err(anyhow::Error::from)
    })
}
