//! Stage 2: z_s → the adapter → the frozen VLM's persona slot (or the PT baseline's per-subject
//! persona rows), trained on the caption loss with the subject losses.

use crate::backend::{with_backend, DeviceKind};
use crate::progress::{EpochEvents, OnEvent};
use anyhow::Context;
use deper_train::stage2::{self, Method, Stage2Config, Stage2Epoch, Stage2Progress};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// A stage-2 run to train.
#[derive(Debug, Clone)]
pub struct Stage2Job {
    /// Dataset folder (with splits and cached features).
    pub data: PathBuf,
    /// The stage-1 run whose encoder gives z_s (DEPER only).
    pub stage1: Option<PathBuf>,
    /// The frozen VLM's Hugging Face folder.
    pub vlm: PathBuf,
    /// Run folder to create, or to continue with `resume`.
    pub out: PathBuf,
    pub method: Method,
    pub config: Stage2Config,
    pub resume: bool,
}

/// Trains stage 2; stops with `TrainError::Cancelled` after the batch during which `cancel` is set.
pub fn train_stage2(
    job: Stage2Job,
    device: DeviceKind,
    cancel: &AtomicBool,
    on: OnEvent<'_>,
) -> anyhow::Result<Vec<Stage2Epoch>> {
    let label = match job.method {
        Method::Deper => "stage 2",
        Method::Pt => "stage 2 (PT)",
    };
    let mut events = EpochEvents::new(label, on);
    let mut on_progress = |p: Stage2Progress| match p {
        Stage2Progress::Start { epochs, batches_per_epoch, first_epoch } => {
            events.start(epochs, first_epoch, batches_per_epoch)
        }
        Stage2Progress::Batch { epoch, batch, loss } => events.batch(epoch, batch, loss),
        Stage2Progress::Epoch(m) => events.epoch(
            format!(
                "epoch {}  loss {:.4}  nll {:.4}  val nll {:.4}  {:.0} samples/s",
                m.epoch, m.train_loss, m.train_nll, m.val_nll, m.samples_per_s
            ),
            &m,
        ),
    };
    let Stage2Job { data, stage1, vlm, out, method, config, resume } = job;
    let metrics = with_backend!(device, B, AD, device => {
        stage2::train_cancellable::<AD>(&data, stage1.as_deref(), &vlm, &out, method, config, resume, &device, &mut on_progress, cancel)
            .with_context(|| format!("training stage 2 into {}", out.display()))
    })?;
    events.end();
    Ok(metrics)
}
