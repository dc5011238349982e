//! The stage-2 training loop: the run folder started or resumed, then per batch the personas
//! (DEPER: the encoder on a partner triplet of the same subject, through the adapter; PT: the
//! subject's row), the frozen VLM's caption NLL, the encoder's subject losses, the optimizer step;
//! per epoch the validation NLL and the checkpoint.

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use deper_model::loss::{cross_entropy, supcon_loss};
use deper_model::SubjectMemoryBank;
use deper_vlm::qwen2_vl::train::CaptionBatch;
use deper_vlm::Qwen2Vl;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::config::{absolute, same_folder};
use super::generate::{caption_nll, scalar};
use super::personalizer::{load_personalizer, subject_personas, EncoderAdapter};
use super::recent::{remember, RecentEmbeddings};
use super::{prepare_stage2, Method, Personalizer, Stage2Config, Stage2Data, Stage2Info, STAGE2};
use crate::data::Sample;
use crate::run_folder::{check_new_run, load_optimizer, save_epoch, write_run_json, TrainState, RUN_FILE};
use crate::stage1::{self, RunInfo, TrainSettings};
use crate::{Result, TrainError};

/// One line of a stage-2 `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage2Epoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_nll: f64,
    pub train_cls_loss: f64,
    pub train_con_loss: f64,
    pub val_nll: f64,
    pub seconds: f64,
    pub samples_per_s: f64,
}

#[derive(Debug, Clone)]
pub enum Stage2Progress {
    Start { epochs: usize, batches_per_epoch: usize, first_epoch: usize },
    Batch { epoch: usize, batch: usize, loss: f64 },
    Epoch(Stage2Epoch),
}

/// Trains a stage-2 run.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    data: &Path,
    stage1_run: Option<&Path>,
    vlm: &Path,
    run: &Path,
    method: Method,
    config: Stage2Config,
    resume: bool,
    device: &B::Device,
    progress: &mut dyn FnMut(Stage2Progress),
) -> Result<Vec<Stage2Epoch>> {
    let never = AtomicBool::new(false);
    train_cancellable::<B>(data, stage1_run, vlm, run, method, config, resume, device, progress, &never)
}

/// [`train`] that stops with [`TrainError::Cancelled`] after the batch during which `cancel` was set
/// (the server's job runner sets it). Completed epochs stay on disk, so a cancelled run can be resumed.
#[allow(clippy::too_many_arguments)]
pub fn train_cancellable<B: AutodiffBackend>(
    data: &Path,
    stage1_run: Option<&Path>,
    vlm: &Path,
    run: &Path,
    method: Method,
    config: Stage2Config,
    resume: bool,
    device: &B::Device,
    progress: &mut dyn FnMut(Stage2Progress),
    cancel: &AtomicBool,
) -> Result<Vec<Stage2Epoch>> {
    if config.epochs == 0 || config.batch_size == 0 || config.grad_accum == 0 {
        return Err(TrainError::Config("epochs, batch_size and grad_accum must be at least 1".into()));
    }
    let stage1_info = stage1_of(method, stage1_run)?;
    check_new_run(run, resume)?;
    let sd = prepare_stage2::<B>(data, vlm, stage1_info.as_ref(), device)?;
    let info = describe_run(data, stage1_run, vlm, method, &config, stage1_info, &sd);
    if resume {
        check_resumes_the_same_run(run, &info)?;
    }
    write_run_json(run, &info)?;

    B::seed(device, config.seed);
    let (model, optim, state) = starting_point::<B>(run, stage1_run, &info, &config, resume, device)?;
    let train_set: Vec<usize> = sd.prep.partition.train.clone();
    if train_set.is_empty() {
        return Err(TrainError::Config("no training triplets for stage 2".into()));
    }
    let batches_per_epoch = train_set.len().div_ceil(config.batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(config.grad_accum);
    let mut training = Stage2Training {
        sd: &sd,
        info: &info,
        config: &config,
        vlm: sd.frozen.vlm.model.clone().no_grad(),
        device,
        run,
        optim,
        by_subject: training_triplets_by_subject(&sd, &train_set),
        train_set,
        bank: SubjectMemoryBank::new(config.bank_capacity),
        recent: RecentEmbeddings::new(config.persona_shots.saturating_sub(1)),
        schedule: config.schedule(),
        batches_per_epoch,
        total_steps: steps_per_epoch * config.epochs,
        step: steps_per_epoch * state.epochs_done,
    };
    training.run(model, state.epochs_done + 1, progress, cancel)
}

/// The stage-1 run a `deper` run starts from (`--stage1`, which it needs); PT has none.
fn stage1_of(method: Method, stage1_run: Option<&Path>) -> Result<Option<RunInfo>> {
    match (method, stage1_run) {
        (Method::Deper, Some(s1)) => {
            let info = RunInfo::load(s1)?;
            if info.stage != stage1::STAGE1 {
                return Err(TrainError::Checkpoint {
                    path: s1.join(RUN_FILE),
                    message: format!("run is `{}`, not stage1 (--stage1 takes a `deper train stage1` run)", info.stage),
                });
            }
            Ok(Some(info))
        }
        (Method::Deper, None) => Err(TrainError::Config("method deper needs --stage1 RUN".into())),
        (Method::Pt, _) => Ok(None),
    }
}

/// The run's `run.json`: its subjects are the stage-1 run's (DEPER) or the dataset's seen ones.
fn describe_run<B: Backend>(
    data: &Path,
    stage1_run: Option<&Path>,
    vlm: &Path,
    method: Method,
    config: &Stage2Config,
    stage1_info: Option<RunInfo>,
    sd: &Stage2Data<B>,
) -> Stage2Info {
    let subjects = match &stage1_info {
        Some(i) => i.subjects.clone(),
        None => {
            let mut s: Vec<String> = sd.prep.splits.seen_subjects.clone();
            s.sort();
            s
        }
    };
    Stage2Info {
        stage: STAGE2.into(),
        method,
        config: config.clone(),
        // Absolute, so `deper eval` finds them from any working directory.
        stage1: stage1_run.map(absolute),
        stage1_info,
        vlm: absolute(vlm),
        data: data.display().to_string(),
        subjects,
        hidden_size: sd.frozen.vlm.config.text.hidden_size,
    }
}

/// `--resume` continues the run only with the method, subjects and VLM it was started with.
fn check_resumes_the_same_run(run: &Path, info: &Stage2Info) -> Result<()> {
    let previous = Stage2Info::load(run)?;
    if previous.method != info.method || previous.subjects != info.subjects {
        return Err(TrainError::Config(format!(
            "{}: --resume with another method or subject list than the run was started with",
            run.display()
        )));
    }
    // A recorded VLM that no longer exists was moved with the run (a moved demo folder).
    if Path::new(&previous.vlm).exists() && !same_folder(&previous.vlm, &info.vlm) {
        return Err(TrainError::Config(format!(
            "{}: --resume with the VLM {}, but the run was started with {}",
            run.display(),
            info.vlm,
            previous.vlm
        )));
    }
    Ok(())
}

/// The personalizer and optimizer training starts from (fresh, or the run's last checkpoint) and
/// how far the run got.
fn starting_point<B: AutodiffBackend>(
    run: &Path,
    stage1_run: Option<&Path>,
    info: &Stage2Info,
    config: &Stage2Config,
    resume: bool,
    device: &B::Device,
) -> Result<(Personalizer<B>, impl Optimizer<Personalizer<B>, B>, TrainState)> {
    let encoder = match (&info.stage1_info, stage1_run) {
        (Some(i), Some(s1)) => Some(stage1::load_model::<B>(s1, i, device)?),
        _ => None,
    };
    let mut model = Personalizer::new(info, encoder, device)?;
    if !config.finetune_encoder {
        model = model.with_frozen_encoder();
    }
    let mut optim = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .with_grad_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(config.clip_norm)))
        .init::<B, Personalizer<B>>();
    let mut state = TrainState::default();
    if resume {
        model = load_personalizer::<B>(run, info, device)?;
        optim = load_optimizer::<B, Personalizer<B>, _>(run, optim, device)?;
        state = TrainState::load(run)?;
    }
    Ok((model, optim, state))
}

/// Each subject's training triplets, by label: the pool a batch's partner triplets come from.
fn training_triplets_by_subject<B: Backend>(sd: &Stage2Data<B>, train_set: &[usize]) -> BTreeMap<usize, Vec<usize>> {
    let mut by_subject: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in train_set {
        if let Some(l) = sd.prep.samples[i].label {
            by_subject.entry(l).or_default().push(i);
        }
    }
    by_subject
}

/// Stage 2 between batches: the frozen VLM, the optimizer, the contrastive bank, the recent
/// embeddings and the optimizer step count (the personalizer moves through the optimizer, so it is
/// passed along).
struct Stage2Training<'a, B: AutodiffBackend, O> {
    sd: &'a Stage2Data<B>,
    info: &'a Stage2Info,
    config: &'a Stage2Config,
    vlm: Qwen2Vl<B>,
    device: &'a B::Device,
    run: &'a Path,
    optim: O,
    train_set: Vec<usize>,
    by_subject: BTreeMap<usize, Vec<usize>>,
    bank: SubjectMemoryBank,
    recent: RecentEmbeddings,
    /// The learning-rate schedule ([`Stage2Config::schedule`]).
    schedule: TrainSettings,
    batches_per_epoch: usize,
    total_steps: usize,
    step: usize,
}

/// Loss sums over an epoch's batches, for its metrics line.
#[derive(Debug, Clone, Copy, Default)]
struct EpochLosses {
    total: f64,
    nll: f64,
    cls: f64,
    con: f64,
    batches: usize,
}

/// The personas of a training batch `[n, hidden]`, and for DEPER the encoder's terms.
struct TrainingPersonas<B: Backend> {
    persona: Tensor<B, 2>,
    encoder: Option<EncoderTerms<B>>,
}

/// DEPER's encoder on the partner triplets: classification and contrastive losses, detached z_s.
struct EncoderTerms<B: Backend> {
    cls: Tensor<B, 1>,
    con: Tensor<B, 1>,
    z_s: Tensor<B, 2>,
}

impl<B: AutodiffBackend, O: Optimizer<Personalizer<B>, B>> Stage2Training<'_, B, O> {
    /// The epochs from `first_epoch` on, each checkpointed.
    fn run(
        &mut self,
        mut model: Personalizer<B>,
        first_epoch: usize,
        progress: &mut dyn FnMut(Stage2Progress),
        cancel: &AtomicBool,
    ) -> Result<Vec<Stage2Epoch>> {
        let (epochs, batches_per_epoch) = (self.config.epochs, self.batches_per_epoch);
        progress(Stage2Progress::Start { epochs, batches_per_epoch, first_epoch });
        let mut all = Vec::new();
        for epoch in first_epoch..=epochs {
            let started = std::time::Instant::now();
            let losses;
            (model, losses) = self.epoch(model, epoch, progress, cancel)?;
            let train_seconds = started.elapsed().as_secs_f64();
            let val_nll = validation_nll(&model, &self.vlm, self.sd, self.info, self.device)?;
            let n = losses.batches.max(1) as f64;
            let m = Stage2Epoch {
                epoch,
                train_loss: losses.total / n,
                train_nll: losses.nll / n,
                train_cls_loss: losses.cls / n,
                train_con_loss: losses.con / n,
                val_nll,
                seconds: started.elapsed().as_secs_f64(),
                samples_per_s: self.train_set.len() as f64 / train_seconds.max(1e-9),
            };
            save_epoch::<B, _, _, _>(self.run, &model, &self.optim, epoch, &m)?;
            progress(Stage2Progress::Epoch(m.clone()));
            all.push(m);
        }
        Ok(all)
    }

    /// One epoch over the shuffled training set.
    fn epoch(
        &mut self,
        mut model: Personalizer<B>,
        epoch: usize,
        progress: &mut dyn FnMut(Stage2Progress),
        cancel: &AtomicBool,
    ) -> Result<(Personalizer<B>, EpochLosses)> {
        let config = self.config;
        // One generator per epoch: the shuffle, then each batch's partner triplets.
        let mut rng = deper_core::rng::seeded(config.seed, &format!("stage2-epoch-{epoch}"));
        let mut order = self.train_set.clone();
        order.shuffle(&mut rng);
        let mut acc = GradientsAccumulator::<Personalizer<B>>::new();
        let mut losses = EpochLosses::default();
        for (b, chunk) in order.chunks(config.batch_size).enumerate() {
            let labels: Vec<usize> = chunk.iter().map(|&i| self.sd.prep.samples[i].label.unwrap_or(0)).collect();
            let partners = self.partners(chunk, &labels, &mut rng);
            let personas = self.training_personas(&model, &partners, &labels)?;
            let (total, value) =
                self.batch_loss(chunk, personas.persona, personas.encoder.as_ref(), epoch, b, &mut losses)?;
            let grads = GradientsParams::from_grads(total.backward(), &model);
            acc.accumulate(&model, grads);
            if (b + 1) % config.grad_accum == 0 || b + 1 == self.batches_per_epoch {
                model = self.optim.step(self.schedule.lr_at(self.step, self.total_steps), model, acc.grads());
                self.step += 1;
            }
            if let Some(terms) = personas.encoder {
                remember(terms.z_s, &labels, &mut self.bank, &mut self.recent)?;
            }
            progress(Stage2Progress::Batch { epoch, batch: b + 1, loss: value });
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
        }
        Ok((model, losses))
    }

    /// The triplet the encoder sees for each of `chunk`: another triplet of the same subject (when
    /// the subject has one), so that z_s has to carry the person, not the content.
    fn partners(&self, chunk: &[usize], labels: &[usize], rng: &mut impl Rng) -> Vec<usize> {
        chunk
            .iter()
            .zip(labels)
            .map(|(&i, l)| {
                let pool = &self.by_subject[l];
                if pool.len() < 2 {
                    return i;
                }
                loop {
                    let j = pool[rng.gen_range(0..pool.len())];
                    if j != i {
                        return j;
                    }
                }
            })
            .collect()
    }

    /// Persona embeddings of a training batch (DEPER from the partner triplets `encoder_samples`,
    /// with the encoder's classification and contrastive losses; PT from the labels).
    fn training_personas(
        &self,
        model: &Personalizer<B>,
        encoder_samples: &[usize],
        labels: &[usize],
    ) -> Result<TrainingPersonas<B>> {
        let (prep, device) = (&self.sd.prep, self.device);
        match model {
            Personalizer::Deper(EncoderAdapter { encoder, adapter }) => {
                let samples: Vec<&Sample> = encoder_samples.iter().map(|&i| &prep.samples[i]).collect();
                let out = prep.batch::<B>(&samples, device)?.forward(encoder);
                let cls = cross_entropy(out.subject_logits.clone(), labels);
                let con = supcon_loss(out.z_s.clone(), labels, &self.bank, self.config.temperature);
                let persona = adapter.forward(self.recent.mean_with(out.z_s.clone(), labels));
                Ok(TrainingPersonas { persona, encoder: Some(EncoderTerms { cls, con, z_s: out.z_s.detach() }) })
            }
            Personalizer::Pt(table) => {
                let ids: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
                let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [labels.len(), 1]), device);
                let n = labels.len();
                let rows = table.forward(ids); // [n, 1, hidden]
                let hidden = rows.dims()[2];
                Ok(TrainingPersonas { persona: rows.reshape([n, hidden]), encoder: None })
            }
        }
    }

    /// The batch's loss: caption NLL of `chunk` with `persona` in the persona slot, plus DEPER's
    /// weighted subject losses, as a tensor and read back; its parts go into `losses`.
    fn batch_loss(
        &self,
        chunk: &[usize],
        persona: Tensor<B, 2>,
        encoder: Option<&EncoderTerms<B>>,
        epoch: usize,
        b: usize,
        losses: &mut EpochLosses,
    ) -> Result<(Tensor<B, 1>, f64)> {
        let (sd, config) = (self.sd, self.config);
        let images: Vec<&str> = chunk.iter().map(|&i| sd.prep.samples[i].image.as_str()).collect();
        let caption = CaptionBatch {
            prompt_ids: sd.frozen.persona_prompt.clone(),
            grid_thw: sd.frozen.grid,
            image_features: sd.frozen.image_features(&images, self.device)?,
            targets: chunk.iter().map(|&i| sd.targets[i].clone()).collect(),
            persona: Some((sd.frozen.persona_token, persona)),
        };
        let (nll, _) = self.vlm.caption_nll(&caption).map_err(|e| TrainError::Config(e.to_string()))?;
        let mut total = nll.clone();
        if let Some(terms) = encoder {
            total = total + terms.cls.clone().mul_scalar(config.w_cls) + terms.con.clone().mul_scalar(config.w_con);
        }
        let value = scalar(&total);
        if !value.is_finite() {
            return Err(TrainError::Config(format!("stage 2 diverged at epoch {epoch}, batch {b}: loss {value}")));
        }
        losses.total += value;
        losses.nll += scalar(&nll);
        losses.cls += encoder.map_or(0.0, |t| scalar(&t.cls));
        losses.con += encoder.map_or(0.0, |t| scalar(&t.con));
        losses.batches += 1;
        Ok((total, value))
    }
}

/// Mean caption NLL of the seen subjects' validation triplets, with the personas evaluation uses
/// (NaN when the dataset has no validation triplets).
fn validation_nll<B: AutodiffBackend>(
    model: &Personalizer<B>,
    vlm: &Qwen2Vl<B>,
    sd: &Stage2Data<B>,
    info: &Stage2Info,
    device: &B::Device,
) -> Result<f64> {
    let personas = subject_personas::<B::InnerBackend>(&model.valid(), info, &sd.prep, 5, device)?;
    let set: Vec<usize> =
        sd.prep.partition.val.iter().copied().filter(|&i| personas.contains_key(&sd.prep.samples[i].subject)).collect();
    let (sum, count) = caption_nll(vlm, sd, &set, Some(&personas), device)?;
    Ok(if count == 0 { f64::NAN } else { sum / count as f64 })
}
