//! The stage-1 training loop: a run folder started or resumed, then the epochs of one device (one
//! replica of a data-parallel run): seeded shuffling, forward/backward, gradient accumulation,
//! the optimizer step, the contrastive memory bank, then validation and the epoch's checkpoint.

use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use deper_core::dataset::Dataset;
use deper_core::split::Splits;
use deper_model::{Deper, Stage1LossConfig, SubjectMemoryBank};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::data_parallel::{self, Peer};
use super::{load_model, RunInfo, Stage1Config, STAGE1};
use crate::data::{Batch, Prepared, Sample};
use crate::features;
use crate::metrics::{evaluate_seen, SeenMetrics};
use crate::run_folder::{check_new_run, load_optimizer, save_epoch, write_run_json, TrainState};
use crate::text::{VlmText, WordVocab};
use crate::{Result, TrainError};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_traj_loss: f64,
    pub train_cls_loss: f64,
    pub train_con_loss: f64,
    pub val_subject_acc: f64,
    pub val_macro_f1: f64,
    pub val_box_iou: f64,
    pub seconds: f64,
    pub samples_per_s: f64,
}

/// What a training run reports while it works.
#[derive(Debug, Clone)]
pub enum Progress {
    Start { epochs: usize, batches_per_epoch: usize, first_epoch: usize },
    Batch { epoch: usize, batch: usize, loss: f64 },
    Epoch(EpochMetrics),
}

/// Trains stage 1 on `data` into `run`. With `resume`, continues a run from its last epoch.
pub fn train<B: AutodiffBackend>(
    data: &Path,
    run: &Path,
    config: Stage1Config,
    resume: bool,
    device: &B::Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<EpochMetrics>> {
    train_cancellable::<B>(data, run, config, resume, device, progress, &AtomicBool::new(false))
}

/// [`train`] that stops with [`TrainError::Cancelled`] after the batch during which `cancel` was set
/// (the server's job runner sets it). Completed epochs stay on disk, so a cancelled run can be resumed.
pub fn train_cancellable<B: AutodiffBackend>(
    data: &Path,
    run: &Path,
    config: Stage1Config,
    resume: bool,
    device: &B::Device,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Vec<EpochMetrics>> {
    train_data_parallel::<B>(data, run, config, resume, std::slice::from_ref(device), progress, cancel)
}

/// [`train_cancellable`] on several devices at once (`deper train stage1 --devices`), data-parallel
/// as burn-train's DDP strategy does it: one thread and one model replica per device, each global
/// batch split evenly between the devices, the gradients averaged by burn's collective all-reduce
/// ([`GradientsParams::all_reduce`]) before every optimizer step, so that all replicas stay equal
/// (checked after every epoch). The first device validates, checkpoints and reports progress.
/// Each replica keeps the contrastive memory bank of the samples it saw. With one device this is
/// plain single-device training.
pub fn train_data_parallel<B: AutodiffBackend>(
    data: &Path,
    run: &Path,
    config: Stage1Config,
    resume: bool,
    devices: &[B::Device],
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Vec<EpochMetrics>> {
    config.validate()?;
    let device = first_of_enough_devices::<B>(devices, &config)?;
    let info = if resume { RunInfo::load(run)? } else { new_run_info(data, run, config)? };
    let config = info.config.clone();
    let prep = prepare_run_data(data, &info)?;
    write_run_json(run, &info)?;

    B::seed(device, config.train.seed);
    let (model, state) = starting_model::<B>(run, &info, resume, device)?;
    let job = Job { run, config: &config, prep: &prep, resume, first_epoch: state.epochs_done + 1, cancel };
    if devices.len() == 1 {
        return train_peer(&job, Peer::single(), model, device, progress);
    }
    data_parallel::train_replicas(&job, model, devices, progress)
}

/// The first of `devices`, once it is clear that each device gets at least one sample per batch.
fn first_of_enough_devices<'d, B: AutodiffBackend>(
    devices: &'d [B::Device],
    config: &Stage1Config,
) -> Result<&'d B::Device> {
    let Some(device) = devices.first() else {
        return Err(TrainError::Config("no device to train on".into()));
    };
    if devices.len() > config.train.batch_size {
        return Err(TrainError::Config(format!(
            "{} devices need a batch of at least as many samples (train.batch_size is {})",
            devices.len(),
            config.train.batch_size
        )));
    }
    Ok(device)
}

/// The description of a new run in the empty folder `run`: its text side (the vocabulary of the
/// seen subjects' training captions, or the VLM folder of `train.text_embeddings` with its table),
/// the seen subjects (sorted: label = index) and the feature grid. The settings that depend on the
/// text side are recorded as used: the caption length, and with a VLM the folder's absolute path
/// and `model.token_dim` = the table's width.
fn new_run_info(data: &Path, run: &Path, mut config: Stage1Config) -> Result<RunInfo> {
    check_new_run(run, false)?;
    let splits = Splits::load(data)?;
    config.train.max_caption_tokens = Some(config.train.caption_tokens());
    let (vocab, text_embeddings) = match &config.train.text_embeddings {
        Some(dir) => {
            let record = VlmText::open(dir)?.record().clone();
            config.train.text_embeddings = Some(record.vlm_dir.clone().into());
            config.model.token_dim = record.hidden;
            (Vec::new(), Some(record))
        }
        None => {
            // Streamed: only the training captions are held, not every triplet.
            let mut train_captions = Vec::new();
            for t in Dataset::open(data)?.triplets()? {
                let t = t?;
                if t.split == deper_core::Split::Train && !splits.is_unseen(&t.subject) {
                    train_captions.push(t.description.text);
                }
            }
            (WordVocab::build(train_captions.iter().map(String::as_str), 1).words, None)
        }
    };
    let store_meta = features::load(data, &config.train.backbone)?.meta;
    let mut subjects = splits.seen_subjects.clone();
    subjects.sort();
    Ok(RunInfo {
        stage: STAGE1.into(),
        config,
        subjects,
        vocab,
        feature_grid: [store_meta.grid_h, store_meta.grid_w, store_meta.dim],
        data: data.display().to_string(),
        text_embeddings,
        features: Some(store_meta.source),
    })
}

/// The dataset prepared as the run describes (same features, checked by [`RunInfo::prepare`]),
/// with something to train on.
fn prepare_run_data(data: &Path, info: &RunInfo) -> Result<Prepared> {
    let prep = info.prepare(data)?;
    if prep.partition.train.is_empty() {
        return Err(TrainError::Config("no training triplets: seen subjects have nothing in the train split".into()));
    }
    Ok(prep)
}

/// The weights training starts from (fresh, or the run's last checkpoint) and how far the run got.
fn starting_model<B: AutodiffBackend>(
    run: &Path,
    info: &RunInfo,
    resume: bool,
    device: &B::Device,
) -> Result<(Deper<B>, TrainState)> {
    let mut model: Deper<B> = info.model_config().init(device);
    let mut state = TrainState::default();
    if resume {
        model = load_model::<B>(run, info, device)?;
        state = TrainState::load(run)?;
    }
    // Parameters are initialised lazily, on first use: materialise them here, in one fixed order,
    // so that every replica of a data-parallel run holds the same weights and a run on one device
    // starts from the same weights as on several.
    let model = info.model_config().init::<B>(device).load_record(model.into_record());
    Ok((model, state))
}

/// What every training device shares.
pub(super) struct Job<'a> {
    pub(super) run: &'a Path,
    pub(super) config: &'a Stage1Config,
    pub(super) prep: &'a Prepared,
    pub(super) resume: bool,
    pub(super) first_epoch: usize,
    pub(super) cancel: &'a AtomicBool,
}

/// Loss sums over an epoch's batches, for its metrics line.
#[derive(Debug, Clone, Copy, Default)]
struct EpochLosses {
    total: f64,
    traj: f64,
    cls: f64,
    con: f64,
    batches: usize,
}

/// One device's training state between batches: the optimizer, the contrastive memory bank and
/// the optimizer step count (the model itself moves through the optimizer, so it is passed along).
struct PeerTraining<'a, B: AutodiffBackend, O> {
    job: &'a Job<'a>,
    peer: Peer,
    device: &'a B::Device,
    optim: O,
    bank: SubjectMemoryBank,
    batches_per_epoch: usize,
    total_optimizer_steps: usize,
    optimizer_step: usize,
}

/// The epochs of one device. The leader (rank 0) validates, checkpoints and reports.
pub(super) fn train_peer<B: AutodiffBackend>(
    job: &Job,
    peer: Peer,
    mut model: Deper<B>,
    device: &B::Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<EpochMetrics>> {
    let config = job.config;
    let mut optim = config.train.optimizer::<B>();
    if job.resume {
        optim = load_optimizer::<B, Deper<B>, _>(job.run, optim, device)?;
    }
    let bank: SubjectMemoryBank = config.loss_config().init_bank();
    // A last global batch smaller than the device count cannot be shared out: all devices skip it.
    let batches_per_epoch =
        job.prep.partition.train.chunks(config.train.batch_size).filter(|c| c.len() >= peer.count).count();
    let steps_per_epoch = batches_per_epoch.div_ceil(config.train.grad_accum);
    let mut training = PeerTraining {
        job,
        peer,
        device,
        optim,
        bank,
        batches_per_epoch,
        total_optimizer_steps: steps_per_epoch * config.train.epochs,
        optimizer_step: steps_per_epoch * (job.first_epoch - 1),
    };
    progress(Progress::Start { epochs: config.train.epochs, batches_per_epoch, first_epoch: job.first_epoch });
    let mut all_metrics = Vec::new();
    for epoch in job.first_epoch..=config.train.epochs {
        let started = std::time::Instant::now();
        let losses;
        (model, losses) = training.epoch(model, epoch, progress)?;
        let train_seconds = started.elapsed().as_secs_f64();
        if peer.count > 1 {
            data_parallel::check_replicas_agree(&peer, &model, device)?;
        }
        if let Some(metrics) = training.validate_and_save(&model, epoch, losses, started, train_seconds)? {
            progress(Progress::Epoch(metrics.clone()));
            all_metrics.push(metrics);
        }
    }
    Ok(all_metrics)
}

impl<B: AutodiffBackend, O: Optimizer<Deper<B>, B>> PeerTraining<'_, B, O> {
    /// One epoch over this device's share of the shuffled training set.
    fn epoch(
        &mut self,
        mut model: Deper<B>,
        epoch: usize,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Deper<B>, EpochLosses)> {
        let (job, peer, config) = (self.job, self.peer, self.job.config);
        let mut order = job.prep.partition.train.clone();
        order.shuffle(&mut deper_core::rng::seeded(config.train.seed, &format!("stage1-epoch-{epoch}")));
        let mut accumulator = GradientsAccumulator::<Deper<B>>::new();
        let mut losses = EpochLosses::default();
        for (b, chunk) in order.chunks(config.train.batch_size).filter(|c| c.len() >= peer.count).enumerate() {
            let (total, grads, z_s, labels) = self.batch(&model, chunk, epoch, b, &mut losses)?;
            accumulator.accumulate(&model, grads);
            if (b + 1) % config.train.grad_accum == 0 || b + 1 == self.batches_per_epoch {
                let lr = config.train.lr_at(self.optimizer_step, self.total_optimizer_steps);
                model = self.optim.step(lr, model, accumulator.grads());
                self.optimizer_step += 1;
            }
            self.bank.update(z_s, &labels);
            progress(Progress::Batch { epoch, batch: b + 1, loss: total });
            self.stop_if_cancelled()?;
        }
        Ok((model, losses))
    }

    /// Forward and backward on this device's share of the global batch `chunk`; the losses,
    /// averaged over the devices, go into `losses`. Returns the batch's total loss, the gradients
    /// averaged over the devices, the detached `z_s` and the labels (for the memory bank).
    fn batch(
        &self,
        model: &Deper<B>,
        chunk: &[usize],
        epoch: usize,
        b: usize,
        losses: &mut EpochLosses,
    ) -> Result<(f64, GradientsParams, Tensor<B, 2>, Vec<usize>)> {
        let (prep, peer, config, device) = (self.job.prep, self.peer, self.job.config, self.device);
        let samples: Vec<&Sample> = peer.shard(chunk).iter().map(|&i| &prep.samples[i]).collect();
        let step = prep.batch::<B>(&samples, device).map(|batch| {
            let box_steps = config.loss.box_steps_at(self.optimizer_step);
            let loss_config = config.loss_config_at(self.optimizer_step);
            let (losses, grads, z_s) = batch_gradients(model, &batch, &loss_config, &self.bank, box_steps);
            (losses, grads, z_s, batch.labels)
        });
        let local = match &step {
            Ok((l, ..)) => vec![l.total as f32, l.traj as f32, l.cls as f32, l.con as f32, 0.0],
            Err(_) => vec![0.0, 0.0, 0.0, 0.0, 1.0],
        };
        // One all-reduce for the losses and for whether every device could build its batch,
        // so that all devices stop together.
        let global = peer.sum::<B>(local, device)?;
        let (batch_losses, grads, z_s, labels) = match step {
            Ok(step) if global[4] == 0.0 => step,
            Ok(_) => return Err(TrainError::PeerStopped),
            Err(e) => return Err(e),
        };
        // One device keeps its f64 values; several report the mean of their f32 values.
        let mean = |k: usize, own: f64| if peer.count == 1 { own } else { f64::from(global[k]) / peer.count as f64 };
        let total = mean(0, batch_losses.total);
        if !total.is_finite() {
            return Err(TrainError::Config(format!("training diverged at epoch {epoch}, batch {b}: loss {total}")));
        }
        losses.total += total;
        losses.traj += mean(1, batch_losses.traj);
        losses.cls += mean(2, batch_losses.cls);
        losses.con += mean(3, batch_losses.con);
        losses.batches += 1;
        let grads = peer.average::<B>(grads)?;
        Ok((total, grads, z_s, labels))
    }

    /// Every device reads the cancel flag after the same batch: the leader's answer decides.
    fn stop_if_cancelled(&self) -> Result<()> {
        let leader = self.peer.rank == 0;
        let cancelled = self
            .peer
            .sum::<B>(vec![f32::from(u8::from(leader && self.job.cancel.load(Ordering::Relaxed)))], self.device)?;
        if cancelled[0] > 0.0 {
            return Err(TrainError::Cancelled);
        }
        Ok(())
    }

    /// The leader validates and saves the epoch; the others learn whether that worked, so that a
    /// failed checkpoint stops every device instead of leaving them waiting. Returns the epoch's
    /// metrics on the leader.
    fn validate_and_save(
        &self,
        model: &Deper<B>,
        epoch: usize,
        losses: EpochLosses,
        started: std::time::Instant,
        train_seconds: f64,
    ) -> Result<Option<EpochMetrics>> {
        let (job, peer, device) = (self.job, self.peer, self.device);
        let prep = job.prep;
        let saved = (peer.rank == 0).then(|| {
            let valid = model.valid();
            let val: SeenMetrics =
                evaluate_seen(&valid, prep, &prep.partition.val, job.config.train.batch_size, device)?;
            let n = losses.batches.max(1) as f64;
            let metrics = EpochMetrics {
                epoch,
                train_loss: losses.total / n,
                train_traj_loss: losses.traj / n,
                train_cls_loss: losses.cls / n,
                train_con_loss: losses.con / n,
                val_subject_acc: val.accuracy,
                val_macro_f1: val.macro_f1,
                val_box_iou: val.box_iou,
                seconds: started.elapsed().as_secs_f64(),
                samples_per_s: prep.partition.train.len() as f64 / train_seconds.max(1e-9),
            };
            save_epoch::<B, _, _, _>(job.run, model, &self.optim, metrics.epoch, &metrics)?;
            Ok(metrics)
        });
        let failed = matches!(saved, Some(Err(_)));
        let stop = peer.sum::<B>(vec![f32::from(u8::from(failed))], device)?;
        match saved {
            Some(Ok(metrics)) if stop[0] == 0.0 => Ok(Some(metrics)),
            Some(Err(e)) => Err(e),
            _ if stop[0] > 0.0 => Err(TrainError::PeerStopped),
            _ => Ok(None),
        }
    }
}

/// Stage-1 loss values of one batch, read back from the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLosses {
    pub total: f64,
    pub traj: f64,
    pub cls: f64,
    pub con: f64,
}

/// What a stage-1 training step does before the optimizer: forward, the stage-1 losses (read back,
/// which waits for the device) and backward. Returns the losses, the gradients and the detached
/// `z_s` for [`SubjectMemoryBank::update`] after the step. The box term covers the first
/// `box_steps` steps (`usize::MAX`: all; see [`super::LossSettings::box_curriculum_steps`]). The training
/// loop and `examples/stage1_bench.rs` share it.
pub fn batch_gradients<B: AutodiffBackend>(
    model: &Deper<B>,
    batch: &Batch<B>,
    loss_config: &Stage1LossConfig,
    bank: &SubjectMemoryBank,
    box_steps: usize,
) -> (BatchLosses, GradientsParams, Tensor<B, 2>) {
    let out = batch.forward(model);
    let losses = loss_config.loss_on_first_boxes(&out, &batch.trajectory, &batch.labels, bank, box_steps);
    let values = BatchLosses {
        total: scalar(&losses.total),
        traj: scalar(&losses.traj),
        cls: scalar(&losses.cls),
        con: scalar(&losses.con),
    };
    let grads = GradientsParams::from_grads(losses.total.backward(), model);
    (values, grads, out.z_s.detach())
}

fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_scalar().elem::<f64>()
}
