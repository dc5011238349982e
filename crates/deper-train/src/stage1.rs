//! Stage-1 training of DEPER (`deper train stage1`).
//!
//! Loss = traj + 1.0·cls + 0.1·con (weights in [`LossSettings`]), AdamW
//! (lr 5e-4), gradient accumulation, gradient clipping (burn clips each
//! parameter's gradient to norm 1.0), seeded shuffling, validation every epoch.
//!
//! A run folder holds:
//! ```text
//! RUN/run.json        what the run is: stage, settings, subjects, vocabulary, feature backbone
//! RUN/metrics.jsonl   one JSON object per epoch: epoch, train_loss, val_subject_acc, val_macro_f1, val_box_iou, …
//! RUN/model.mpk       the latest weights (burn named MessagePack, full precision)
//! RUN/optimizer.mpk   the optimizer state, for --resume
//! RUN/state.json      epochs completed and the memory bank size, for --resume
//! ```

use burn::collective::{CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use deper_core::dataset::{write_json_atomic, Dataset};
use deper_core::split::Splits;
use deper_model::run::{deper_config, DEFAULT_BATCH_SIZE, DEFAULT_MAX_CAPTION_TOKENS};
/// The `config.model` section and the stage name live in deper-model, shared with the browser.
pub use deper_model::run::{ModelSettings, STAGE1};
use deper_model::{Deper, DeperConfig, Stage1LossConfig, SubjectMemoryBank};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::data::{make_batch, make_samples, partition, Batch, Partition, Sample};
use crate::eval::{evaluate_seen, SeenMetrics};
use crate::features::{self, FeatureStore};
use crate::text::WordVocab;
use crate::{Result, TrainError};

pub const RUN_FILE: &str = "run.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const MODEL_FILE: &str = "model";
pub const OPTIMIZER_FILE: &str = "optimizer";
pub const STATE_FILE: &str = "state.json";

/// Loss weights and contrastive settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossSettings {
    pub w_traj: f64,
    pub w_cls: f64,
    pub w_con: f64,
    pub temperature: f64,
    pub bank_capacity: usize,
    /// A box-loss curriculum, not in the paper (0, the default, is off): the box term covers the
    /// first `1 + ⌊optimizer step / box_curriculum_steps⌋` steps of each trajectory, so the
    /// decoder learns step 1 before it has to place every step (see
    /// [`Stage1LossConfig::loss_on_first_boxes`]). The validity term always covers all steps.
    pub box_curriculum_steps: usize,
    /// Trajectory-only start, not in the paper (0, the default, is off): for the first this many
    /// optimizer steps `w_cls` and `w_con` are 0. On the synthetic world, any subject loss from
    /// step 0, even one ramped up from 0, lets the decoder settle on each subject's mean place
    /// through FiLM from `z_s` before it learns to read a step from `z_scan` (see the README's
    /// stage-1 notes).
    pub trajectory_only_steps: usize,
    /// After the trajectory-only start, `w_cls` and `w_con` rise linearly from 0 to their full
    /// value over this many optimizer steps (0, the default, switches them on at once). Switched
    /// on at full weight, the subject losses' large early gradients fill the clipped gradient norm
    /// and the decoder loses most of what it learnt in the trajectory-only start.
    pub subject_ramp_steps: usize,
}

impl Default for LossSettings {
    fn default() -> Self {
        Self {
            w_traj: 1.0,
            w_cls: 1.0,
            w_con: 0.1,
            temperature: 0.07,
            bank_capacity: 4096,
            box_curriculum_steps: 0,
            trajectory_only_steps: 0,
            subject_ramp_steps: 0,
        }
    }
}

impl LossSettings {
    /// How many leading steps the box term covers at optimizer step `step` (all when off).
    pub fn box_steps_at(&self, step: usize) -> usize {
        match self.box_curriculum_steps {
            0 => usize::MAX,
            every => 1 + step / every,
        }
    }

    /// The factor on `w_cls` and `w_con` at optimizer step `step`: 0 during the trajectory-only
    /// start, then a linear ramp to 1 over `subject_ramp_steps`.
    pub fn subject_weight_at(&self, step: usize) -> f64 {
        let Some(since_start) = step.checked_sub(self.trajectory_only_steps) else {
            return 0.0;
        };
        match self.subject_ramp_steps {
            0 => 1.0,
            ramp => ((since_start + 1) as f64 / ramp as f64).min(1.0),
        }
    }
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSettings {
    pub epochs: usize,
    pub batch_size: usize,
    /// Batches whose gradients are summed before one optimizer step.
    pub grad_accum: usize,
    pub lr: f64,
    /// `constant` (the default), or `cosine`: linear warm-up over `warmup_fraction` of the
    /// optimizer steps, then cosine decay to 10 % of `lr`.
    pub lr_schedule: LrSchedule,
    pub warmup_fraction: f64,
    pub weight_decay: f64,
    pub clip_norm: f32,
    pub seed: u64,
    pub max_caption_tokens: usize,
    /// Feature cache to read (`deper features extract --backbone`).
    pub backbone: String,
    /// Multi-node data-parallel training (several `--devices` on each of several machines).
    pub ddp: DdpSettings,
}

/// The multi-node part of burn's collective configuration (`burn::collective::CollectiveConfig`).
/// On one machine nothing here is needed: `--devices` alone trains data-parallel. Across machines
/// every node sets all of `num_nodes`, `global_address` (burn's global orchestrator, which one
/// machine runs), `node_address` and `data_service_port`, and a distinct `node_index`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdpSettings {
    pub num_nodes: Option<u32>,
    /// This node's index among `num_nodes` (peer ids are `node_index · devices + rank`).
    pub node_index: u32,
    pub global_address: Option<String>,
    pub node_address: Option<String>,
    pub data_service_port: Option<u16>,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            epochs: 20,
            batch_size: DEFAULT_BATCH_SIZE,
            grad_accum: 1,
            lr: 5e-4,
            lr_schedule: LrSchedule::Constant,
            warmup_fraction: 0.05,
            weight_decay: 0.01,
            clip_norm: 1.0,
            seed: 0,
            max_caption_tokens: DEFAULT_MAX_CAPTION_TOKENS,
            backbone: features::PIXEL_STATS.into(),
            ddp: DdpSettings::default(),
        }
    }
}

/// Learning-rate schedule of stage 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    #[default]
    Constant,
    Cosine,
}

impl TrainSettings {
    /// Sets the fields a caller gave (the CLI's `--epochs/--batch-size/--seed`, the train job's
    /// `epochs/batch_size/seed`) over those of the config file or preset.
    pub fn override_with(&mut self, epochs: Option<usize>, batch_size: Option<usize>, seed: Option<u64>) {
        if let Some(e) = epochs {
            self.epochs = e;
        }
        if let Some(b) = batch_size {
            self.batch_size = b;
        }
        if let Some(s) = seed {
            self.seed = s;
        }
    }

    /// The stage-1 optimizer: AdamW with this weight decay, each parameter's gradient clipped to
    /// `clip_norm`.
    pub fn optimizer<B: AutodiffBackend>(&self) -> impl Optimizer<Deper<B>, B> {
        AdamWConfig::new()
            .with_weight_decay(self.weight_decay as f32)
            .with_grad_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(self.clip_norm)))
            .init::<B, Deper<B>>()
    }

    /// Learning rate at optimizer step `step` (0-based) of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let total = total.max(1) as f64;
                let warmup = (self.warmup_fraction.clamp(0.0, 1.0) * total).max(1.0);
                let s = step as f64;
                if s < warmup {
                    self.lr * (s + 1.0) / warmup
                } else {
                    let progress = ((s - warmup) / (total - warmup).max(1.0)).min(1.0);
                    let floor = 0.1 * self.lr;
                    floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }
}

/// Everything `--config FILE` may set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stage1Config {
    pub train: TrainSettings,
    pub model: ModelSettings,
    pub loss: LossSettings,
}

impl Stage1Config {
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_over_preset(path, None)
    }

    /// Reads `--config FILE` over a model preset (see [`Stage1Config::from_json_over_preset`]).
    pub fn load_over_preset(path: &Path, preset: Option<ModelSettings>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io { path: path.into(), source: e })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        Self::from_json_over_preset(value, preset).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
    }

    /// A config from its JSON, with `preset` (if any) as the model section's base: the preset's
    /// sizes, then each `model` field the JSON sets (`{"model": {"dropout": 0.0}}` with the tiny
    /// preset is the tiny network without dropout). Errors name the field.
    pub fn from_json_over_preset(
        mut value: serde_json::Value,
        preset: Option<ModelSettings>,
    ) -> std::result::Result<Self, String> {
        if let Some(preset) = preset {
            let Some(config) = value.as_object_mut() else {
                return Err("a stage-1 config must be a JSON object".into());
            };
            let mut model = serde_json::to_value(preset).map_err(|e| e.to_string())?;
            if let (Some(base), Some(given)) =
                (model.as_object_mut(), config.get("model").and_then(serde_json::Value::as_object))
            {
                for (field, v) in given {
                    base.insert(field.clone(), v.clone());
                }
            }
            config.insert("model".into(), model);
        }
        serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let t = &self.train;
        let bad = |msg: String| Err(TrainError::Config(msg));
        if m.d_model == 0 || m.n_heads == 0 || m.d_model % m.n_heads != 0 || m.d_model % 4 != 0 {
            return bad(format!(
                "model.d_model {} must be a positive multiple of 4 and of model.n_heads {}",
                m.d_model, m.n_heads
            ));
        }
        if m.scan_queries == 0 || m.scan_queries > deper_core::MAX_STEPS {
            return bad(format!("model.scan_queries {} must be 1..={}", m.scan_queries, deper_core::MAX_STEPS));
        }
        if t.epochs == 0 || t.batch_size == 0 || t.grad_accum == 0 {
            return bad("train.epochs, train.batch_size and train.grad_accum must be at least 1".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad(format!("train.lr {} must be positive", t.lr));
        }
        Ok(())
    }

    /// The stage-1 loss these settings describe.
    pub fn loss_config(&self) -> Stage1LossConfig {
        Stage1LossConfig::new()
            .with_w_traj(self.loss.w_traj)
            .with_w_cls(self.loss.w_cls)
            .with_w_con(self.loss.w_con)
            .with_temperature(self.loss.temperature)
            .with_bank_capacity(self.loss.bank_capacity)
    }

    /// [`Stage1Config::loss_config`] at optimizer step `step`: `w_cls` and `w_con` scaled by
    /// [`LossSettings::subject_weight_at`] (0 during the trajectory-only start, then the ramp).
    pub fn loss_config_at(&self, step: usize) -> Stage1LossConfig {
        let factor = self.loss.subject_weight_at(step);
        let config = self.loss_config();
        let (w_cls, w_con) = (config.w_cls * factor, config.w_con * factor);
        config.with_w_cls(w_cls).with_w_con(w_con)
    }
}

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

/// `RUN/run.json` as JSON, after checking that it describes a run of `stage` (named before any
/// field is parsed: another stage's run.json has other fields). `hint` ends the wrong-stage error.
pub(crate) fn read_run_json(run: &Path, stage: &str, hint: &str) -> Result<(PathBuf, serde_json::Value)> {
    let path = run.join(RUN_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| TrainError::Checkpoint { path: path.clone(), message: format!("not a run folder ({e})") })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        message: format!("unreadable run description: {e}"),
    })?;
    let found = value.get("stage").and_then(|s| s.as_str()).unwrap_or("<missing>");
    if found != stage {
        return Err(TrainError::Checkpoint { path, message: format!("run is `{found}`, not {stage}{hint}") });
    }
    Ok((path, value))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TrainState {
    epochs_done: usize,
}

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

/// Loads the dataset pieces a run needs: triplets → samples, the partition and features.
#[derive(Debug)]
pub struct Prepared {
    pub samples: Vec<Sample>,
    pub partition: Partition,
    pub features: FeatureStore,
    pub splits: Splits,
}

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

pub(crate) fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
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

/// Loads `RUN/model.mpk` into `model`, then runs `check` on it, turning a missing, unreadable or
/// mismatched checkpoint into an error (with `mismatch` as the message when the shapes do not fit).
///
/// burn loads a record into a module of another shape without complaint and panics later, in the
/// first forward pass. A foreign, truncated or mismatched checkpoint must be an error instead: load,
/// then `check` (e.g. one tiny forward pass), both behind catch_unwind with the panic message kept
/// off the terminal.
pub(crate) fn load_checked<B: Backend, M: Module<B>>(
    run: &Path,
    model: M,
    device: &B::Device,
    check: impl FnOnce(&M),
    mismatch: &str,
) -> Result<M> {
    let path = run.join(MODEL_FILE);
    let file = path.with_extension("mpk");
    if !file.is_file() {
        return Err(TrainError::Checkpoint { path: file, message: "no weights in this run folder".into() });
    }
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let record = Recorder::<B>::load(&recorder(), path.clone(), device)?;
        let model = model.load_record(record);
        check(&model);
        Ok::<_, burn::record::RecorderError>(model)
    }));
    std::panic::set_hook(previous_hook);
    match loaded {
        Ok(Ok(model)) => Ok(model),
        Ok(Err(e)) => Err(TrainError::Checkpoint { path: file, message: format!("cannot load weights: {e}") }),
        Err(_) => Err(TrainError::Checkpoint { path: file, message: mismatch.into() }),
    }
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
    let info = if resume {
        let info = RunInfo::load(run)?;
        if info.stage != STAGE1 {
            return Err(TrainError::Checkpoint {
                path: run.join(RUN_FILE),
                message: format!("run is `{}`, not stage1", info.stage),
            });
        }
        info
    } else {
        if run.join(RUN_FILE).exists() {
            return Err(TrainError::Config(format!(
                "{} already holds a run; pass --resume to continue it or choose another --out",
                run.display()
            )));
        }
        let ds = Dataset::open(data)?;
        let splits = Splits::load(data)?;
        let triplets = ds.load_triplets()?;
        let train_captions = triplets
            .iter()
            .filter(|t| t.split == deper_core::Split::Train && !splits.is_unseen(&t.subject))
            .map(|t| t.description.text.as_str());
        let vocab = WordVocab::build(train_captions, 1);
        let store_meta = features::load(data, &config.train.backbone)?.meta;
        let mut subjects = splits.seen_subjects.clone();
        subjects.sort();
        RunInfo {
            stage: STAGE1.into(),
            config: config.clone(),
            subjects,
            vocab: vocab.words,
            feature_grid: [store_meta.grid_h, store_meta.grid_w, store_meta.dim],
            data: data.display().to_string(),
        }
    };
    let config = info.config.clone();
    let vocab = info.vocab();
    let prep = prepare(data, &config.train.backbone, &vocab, config.train.max_caption_tokens, &info.subjects)?;
    let grid = [prep.features.meta.grid_h, prep.features.meta.grid_w, prep.features.meta.dim];
    if grid != info.feature_grid {
        return Err(TrainError::Config(format!(
            "features are {grid:?} but the run was trained on {:?} (same --backbone?)",
            info.feature_grid
        )));
    }
    if prep.partition.train.is_empty() {
        return Err(TrainError::Config("no training triplets: seen subjects have nothing in the train split".into()));
    }

    std::fs::create_dir_all(run).map_err(|e| TrainError::Io { path: run.into(), source: e })?;
    write_json_atomic(&run.join(RUN_FILE), &info)?;

    B::seed(device, config.train.seed);
    let mut model: Deper<B> = info.model_config().init(device);
    let mut state = TrainState::default();
    if resume {
        model = load_model::<B>(run, &info, device)?;
        let state_path = run.join(STATE_FILE);
        let text =
            std::fs::read_to_string(&state_path).map_err(|e| TrainError::Io { path: state_path.clone(), source: e })?;
        state = serde_json::from_str(&text)
            .map_err(|e| TrainError::Checkpoint { path: state_path, message: e.to_string() })?;
    }
    // Parameters are initialised lazily, on first use: materialise them here, in one fixed order,
    // so that every replica of a data-parallel run holds the same weights and a run on one device
    // starts from the same weights as on several.
    let model = info.model_config().init::<B>(device).load_record(model.into_record());
    let job = Job { run, config: &config, prep: &prep, resume, first_epoch: state.epochs_done + 1, cancel };
    if devices.len() == 1 {
        return train_peer(&job, Peer::single(), model, device, progress);
    }

    let collective = collective_config(&config.train.ddp, devices.len())?;
    burn::collective::reset_collective::<B::InnerBackend>();
    let base = config.train.ddp.node_index * devices.len() as u32;
    let peer = |rank: usize| Peer { rank, count: devices.len(), id: PeerId::from(base + rank as u32) };
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = devices[1..]
            .iter()
            .enumerate()
            .map(|(i, dev)| {
                let (job, replica, collective) = (&job, model.clone().fork(dev), collective.clone());
                scope.spawn(move || {
                    B::seed(dev, config.train.seed.wrapping_add(i as u64 + 1));
                    let peer = peer(i + 1);
                    peer.register::<B>(dev, collective)?;
                    let result = train_peer(job, peer, replica, dev, &mut |_| {});
                    peer.finish::<B>();
                    result
                })
            })
            .collect();
        let leader = peer(0);
        let first = leader.register::<B>(device, collective).and_then(|()| {
            let result = train_peer(&job, leader, model, device, progress);
            leader.finish::<B>();
            result
        });
        let mut results = vec![first];
        for worker in workers {
            results
                .push(worker.join().unwrap_or_else(|_| Err(TrainError::Config("a training device panicked".into()))));
        }
        results
    });
    // A device that failed says why; the others only report that a peer stopped.
    let mut first_error = None;
    let mut metrics = None;
    for result in results {
        match result {
            Ok(m) => metrics = metrics.or(Some(m)),
            Err(TrainError::PeerStopped) => {}
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    match (first_error, metrics) {
        (Some(e), _) => Err(e),
        (None, Some(m)) => Ok(m),
        (None, None) => Err(TrainError::PeerStopped),
    }
}

/// burn's collective configuration for `devices` devices on this node (and `ddp`'s nodes).
fn collective_config(ddp: &DdpSettings, devices: usize) -> Result<CollectiveConfig> {
    let mut config = CollectiveConfig::default().with_num_devices(devices);
    let global = [ddp.num_nodes.is_some(), ddp.global_address.is_some(), ddp.node_address.is_some()];
    if global.iter().any(|&g| g) {
        let (Some(nodes), Some(global_address), Some(node_address), Some(port)) =
            (ddp.num_nodes, &ddp.global_address, &ddp.node_address, ddp.data_service_port)
        else {
            return Err(TrainError::Config(
                "train.ddp: a multi-node run sets all of num_nodes, global_address, node_address and data_service_port"
                    .into(),
            ));
        };
        if ddp.node_index >= nodes {
            return Err(TrainError::Config(format!(
                "train.ddp.node_index {} must be below num_nodes {nodes}",
                ddp.node_index
            )));
        }
        let address = |s: &str| s.parse().map_err(|e| TrainError::Config(format!("train.ddp: address `{s}`: {e}")));
        config = config
            .with_num_nodes(nodes)
            .with_global_address(address(global_address)?)
            .with_node_address(address(node_address)?)
            .with_data_service_port(port);
    }
    Ok(config)
}

/// What every training device shares.
struct Job<'a> {
    run: &'a Path,
    config: &'a Stage1Config,
    prep: &'a Prepared,
    resume: bool,
    first_epoch: usize,
    cancel: &'a AtomicBool,
}

/// One device of a data-parallel run (`count == 1`: training alone, no collective calls).
#[derive(Debug, Clone, Copy)]
struct Peer {
    rank: usize,
    count: usize,
    id: PeerId,
}

impl Peer {
    fn single() -> Self {
        Self { rank: 0, count: 1, id: PeerId::from(0) }
    }

    fn register<B: AutodiffBackend>(&self, device: &B::Device, config: CollectiveConfig) -> Result<()> {
        burn::collective::register::<B::InnerBackend>(self.id, device.clone(), config)
            .map_err(|e| TrainError::Config(format!("data-parallel setup on device {}: {e:?}", self.rank)))
    }

    fn finish<B: AutodiffBackend>(&self) {
        // Only fails when the peer never registered, which the caller already reported.
        let _ = burn::collective::finish_collective::<B::InnerBackend>(self.id);
    }

    /// This device's share of a global batch: a contiguous, near-equal slice.
    fn shard<'c>(&self, chunk: &'c [usize]) -> &'c [usize] {
        &chunk[self.rank * chunk.len() / self.count..(self.rank + 1) * chunk.len() / self.count]
    }

    /// `values` summed over all devices.
    fn sum<B: AutodiffBackend>(&self, values: Vec<f32>, device: &B::Device) -> Result<Vec<f32>> {
        if self.count == 1 {
            return Ok(values);
        }
        let n = values.len();
        let local = Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values, [n]), device);
        let summed = burn::collective::all_reduce::<B::InnerBackend>(
            self.id,
            local.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| TrainError::Config(format!("data-parallel all-reduce on device {}: {e:?}", self.rank)))?;
        let summed = Tensor::<B::InnerBackend, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(summed));
        summed.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| TrainError::Config(format!("{e:?}")))
    }

    /// The gradients averaged over all devices.
    fn average<B: AutodiffBackend>(&self, grads: GradientsParams) -> Result<GradientsParams> {
        if self.count == 1 {
            return Ok(grads);
        }
        grads.all_reduce::<B::InnerBackend>(self.id, ReduceOperation::Mean).map_err(|e| {
            TrainError::Config(format!("data-parallel gradient all-reduce on device {}: {e:?}", self.rank))
        })
    }
}

/// The epochs of one device. The leader (rank 0) validates, checkpoints and reports.
fn train_peer<B: AutodiffBackend>(
    job: &Job,
    peer: Peer,
    mut model: Deper<B>,
    device: &B::Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<EpochMetrics>> {
    let (config, prep, run) = (job.config, job.prep, job.run);
    let mut optim = config.train.optimizer::<B>();
    if job.resume {
        let opt_path = run.join(OPTIMIZER_FILE);
        let record = Recorder::<B>::load(&recorder(), opt_path.clone(), device)
            .map_err(|e| TrainError::Checkpoint { path: opt_path.with_extension("mpk"), message: e.to_string() })?;
        optim = optim.load_record(record);
    }
    let leader = peer.rank == 0;

    let mut bank: SubjectMemoryBank = config.loss_config().init_bank();
    let batch_size = config.train.batch_size;
    // A last global batch smaller than the device count cannot be shared out: all devices skip it.
    let batches_per_epoch = prep.partition.train.chunks(batch_size).filter(|c| c.len() >= peer.count).count();
    let steps_per_epoch = batches_per_epoch.div_ceil(config.train.grad_accum);
    let total_optimizer_steps = steps_per_epoch * config.train.epochs;
    let mut optimizer_step = steps_per_epoch * (job.first_epoch - 1);
    progress(Progress::Start { epochs: config.train.epochs, batches_per_epoch, first_epoch: job.first_epoch });
    let mut all_metrics = Vec::new();

    for epoch in job.first_epoch..=config.train.epochs {
        let started = std::time::Instant::now();
        let mut order = prep.partition.train.clone();
        order.shuffle(&mut deper_core::rng::seeded(config.train.seed, &format!("stage1-epoch-{epoch}")));
        let mut accumulator = GradientsAccumulator::<Deper<B>>::new();
        let (mut sum, mut sum_traj, mut sum_cls, mut sum_con, mut n_batches) = (0.0, 0.0, 0.0, 0.0, 0usize);
        for (b, chunk) in order.chunks(batch_size).filter(|c| c.len() >= peer.count).enumerate() {
            let samples: Vec<&Sample> = peer.shard(chunk).iter().map(|&i| &prep.samples[i]).collect();
            let step = make_batch::<B>(&samples, &prep.features, device).map(|batch| {
                let box_steps = config.loss.box_steps_at(optimizer_step);
                let loss_config = config.loss_config_at(optimizer_step);
                let (losses, grads, z_s) = batch_gradients(&model, &batch, &loss_config, &bank, box_steps);
                (losses, grads, z_s, batch.labels)
            });
            let local = match &step {
                Ok((l, ..)) => vec![l.total as f32, l.traj as f32, l.cls as f32, l.con as f32, 0.0],
                Err(_) => vec![0.0, 0.0, 0.0, 0.0, 1.0],
            };
            // One all-reduce for the losses and for whether every device could build its batch,
            // so that all devices stop together.
            let global = peer.sum::<B>(local, device)?;
            let (losses, grads, z_s, labels) = match step {
                Ok(step) if global[4] == 0.0 => step,
                Ok(_) => return Err(TrainError::PeerStopped),
                Err(e) => return Err(e),
            };
            // One device keeps its f64 values; several report the mean of their f32 values.
            let mean =
                |k: usize, own: f64| if peer.count == 1 { own } else { f64::from(global[k]) / peer.count as f64 };
            let total = mean(0, losses.total);
            if !total.is_finite() {
                return Err(TrainError::Config(format!("training diverged at epoch {epoch}, batch {b}: loss {total}")));
            }
            sum += total;
            sum_traj += mean(1, losses.traj);
            sum_cls += mean(2, losses.cls);
            sum_con += mean(3, losses.con);
            n_batches += 1;
            let grads = peer.average::<B>(grads)?;
            accumulator.accumulate(&model, grads);
            if (b + 1) % config.train.grad_accum == 0 || b + 1 == batches_per_epoch {
                let lr = config.train.lr_at(optimizer_step, total_optimizer_steps);
                model = optim.step(lr, model, accumulator.grads());
                optimizer_step += 1;
            }
            bank.update(z_s, &labels);
            progress(Progress::Batch { epoch, batch: b + 1, loss: total });
            // Every device reads the flag after the same batch: the leader's answer decides.
            let cancelled =
                peer.sum::<B>(vec![f32::from(u8::from(leader && job.cancel.load(Ordering::Relaxed)))], device)?;
            if cancelled[0] > 0.0 {
                return Err(TrainError::Cancelled);
            }
        }
        let train_seconds = started.elapsed().as_secs_f64();
        if peer.count > 1 {
            check_replicas_agree(&peer, &model, device)?;
        }
        // The leader validates and saves; the others learn whether that worked, so that a failed
        // checkpoint stops every device instead of leaving them waiting.
        let saved = leader.then(|| {
            let valid = model.valid();
            let val: SeenMetrics = evaluate_seen(&valid, prep, &prep.partition.val, batch_size, device)?;
            let n = n_batches.max(1) as f64;
            let metrics = EpochMetrics {
                epoch,
                train_loss: sum / n,
                train_traj_loss: sum_traj / n,
                train_cls_loss: sum_cls / n,
                train_con_loss: sum_con / n,
                val_subject_acc: val.accuracy,
                val_macro_f1: val.macro_f1,
                val_box_iou: val.box_iou,
                seconds: started.elapsed().as_secs_f64(),
                samples_per_s: prep.partition.train.len() as f64 / train_seconds.max(1e-9),
            };
            save_epoch(run, &model, &optim, &metrics)?;
            Ok(metrics)
        });
        let failed = matches!(saved, Some(Err(_)));
        let stop = peer.sum::<B>(vec![f32::from(u8::from(failed))], device)?;
        match saved {
            Some(Ok(metrics)) if stop[0] == 0.0 => {
                progress(Progress::Epoch(metrics.clone()));
                all_metrics.push(metrics);
            }
            Some(Err(e)) => return Err(e),
            _ if stop[0] > 0.0 => return Err(TrainError::PeerStopped),
            _ => {}
        }
    }
    Ok(all_metrics)
}

/// Writes an epoch's checkpoint, then its metrics line (a line in metrics.jsonl means its weights
/// are on disk).
fn save_epoch<B: AutodiffBackend, O: Optimizer<Deper<B>, B>>(
    run: &Path,
    model: &Deper<B>,
    optim: &O,
    metrics: &EpochMetrics,
) -> Result<()> {
    let model_path = run.join(MODEL_FILE);
    model
        .clone()
        .save_file(model_path.clone(), &recorder())
        .map_err(|e| TrainError::Checkpoint { path: model_path, message: e.to_string() })?;
    let opt_path = run.join(OPTIMIZER_FILE);
    Recorder::<B>::record(&recorder(), optim.to_record(), opt_path.clone())
        .map_err(|e| TrainError::Checkpoint { path: opt_path, message: e.to_string() })?;
    write_json_atomic(&run.join(STATE_FILE), &TrainState { epochs_done: metrics.epoch })?;
    append_jsonl(&run.join(METRICS_FILE), metrics)
}

/// Sum of all weights, per parameter tensor.
struct WeightSums(Vec<f32>);

impl<B: Backend> ModuleVisitor<B> for WeightSums {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().sum().into_scalar().elem::<f32>());
    }
}

/// Replicas that received the same averaged gradients hold the same weights; anything else
/// (a device that dropped a step, a backend that all-reduced wrongly) must stop the run.
fn check_replicas_agree<B: AutodiffBackend>(peer: &Peer, model: &Deper<B>, device: &B::Device) -> Result<()> {
    let mut sums = WeightSums(Vec::new());
    model.visit(&mut sums);
    let mine = sums.0;
    let total = peer.sum::<B>(mine.clone(), device)?;
    let differs = mine.iter().zip(&total).any(|(&m, &t)| {
        let mean = t / peer.count as f32;
        (m - mean).abs() > 1e-5 * mean.abs().max(1.0)
    });
    let disagreeing = peer.sum::<B>(vec![f32::from(u8::from(differs))], device)?;
    if disagreeing[0] > 0.0 {
        return Err(TrainError::Config(format!(
            "data-parallel replicas diverged ({} of {} devices differ from the mean weights)",
            disagreeing[0], peer.count
        )));
    }
    Ok(())
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
/// `box_steps` steps (`usize::MAX`: all; see [`LossSettings::box_curriculum_steps`]). The training
/// loop and `examples/stage1_bench.rs` share it.
pub fn batch_gradients<B: AutodiffBackend>(
    model: &Deper<B>,
    batch: &Batch<B>,
    loss_config: &Stage1LossConfig,
    bank: &SubjectMemoryBank,
    box_steps: usize,
) -> (BatchLosses, GradientsParams, Tensor<B, 2>) {
    let out =
        model.forward(batch.patches.clone(), batch.caption_ids.clone(), batch.caption_mask.clone(), &batch.trajectory);
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

/// Appends one JSON line to `path` (a metrics log).
pub fn append_jsonl<T: Serialize>(path: &Path, metrics: &T) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::Io { path: path.into(), source: e })?;
    let line = serde_json::to_string(metrics).map_err(|e| TrainError::Config(e.to_string()))?;
    writeln!(file, "{line}").map_err(|e| TrainError::Io { path: path.into(), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fields_refine_the_preset() {
        let json = serde_json::json!({"model": {"dropout": 0.0, "scan_queries": 3}, "train": {"lr": 0.002}});
        let c = Stage1Config::from_json_over_preset(json.clone(), Some(ModelSettings::tiny())).unwrap();
        let tiny = ModelSettings::tiny();
        assert_eq!((c.model.d_model, c.model.n_heads, c.model.token_dim), (tiny.d_model, tiny.n_heads, tiny.token_dim));
        assert_eq!((c.model.dropout, c.model.scan_queries, c.train.lr), (0.0, 3, 0.002));
        // Without a preset the file's fields go over the paper defaults.
        let c = Stage1Config::from_json_over_preset(json, None).unwrap();
        assert_eq!((c.model.d_model, c.model.dropout), (ModelSettings::default().d_model, 0.0));
        // A preset and no model section: the preset as it is.
        let c = Stage1Config::from_json_over_preset(serde_json::json!({}), Some(ModelSettings::tiny())).unwrap();
        assert_eq!(c.model, ModelSettings::tiny());
        let err = Stage1Config::from_json_over_preset(
            serde_json::json!({"model": {"dropot": 0.0}}),
            Some(ModelSettings::tiny()),
        )
        .unwrap_err();
        assert!(err.contains("dropot"), "{err}");
        let err =
            Stage1Config::from_json_over_preset(serde_json::json!({"model": {"d_model": "big"}}), None).unwrap_err();
        assert!(err.contains("model.d_model"), "{err}");
    }

    #[test]
    fn overrides_set_only_the_given_fields() {
        let base = TrainSettings { epochs: 7, batch_size: 9, seed: 3, lr: 0.004, ..TrainSettings::default() };
        let mut t = base.clone();
        t.override_with(None, None, None);
        assert_eq!(t, base);
        t.override_with(Some(2), None, Some(11));
        assert_eq!((t.epochs, t.batch_size, t.seed, t.lr), (2, 9, 11, 0.004));
        t.override_with(None, Some(4), None);
        assert_eq!((t.epochs, t.batch_size, t.seed), (2, 4, 11));
    }

    #[test]
    fn box_curriculum_adds_a_step_every_n_optimizer_steps() {
        let off = LossSettings::default();
        assert_eq!(off.box_steps_at(0), usize::MAX);
        assert_eq!(off.box_steps_at(10_000), usize::MAX);
        let on: LossSettings = serde_json::from_str(r#"{"box_curriculum_steps": 50}"#).unwrap();
        assert_eq!((on.w_traj, on.w_cls), (1.0, 1.0));
        assert_eq!([on.box_steps_at(0), on.box_steps_at(49), on.box_steps_at(50), on.box_steps_at(149)], [1, 1, 2, 3]);
    }

    #[test]
    fn subject_losses_start_after_the_trajectory_only_steps() {
        let off = Stage1Config::default();
        assert_eq!((off.loss_config_at(0).w_cls, off.loss_config_at(0).w_con), (1.0, 0.1));
        let mut on = Stage1Config::default();
        on.loss.trajectory_only_steps = 100;
        on.loss.w_cls = 2.0;
        let at = |step| {
            let c = on.loss_config_at(step);
            (c.w_traj, c.w_cls, c.w_con)
        };
        assert_eq!(at(0), (1.0, 0.0, 0.0));
        assert_eq!(at(99), (1.0, 0.0, 0.0));
        assert_eq!(at(100), (1.0, 2.0, 0.1));
        assert_eq!(at(5000), (1.0, 2.0, 0.1));
    }

    #[test]
    fn subject_losses_ramp_up_after_the_trajectory_only_steps() {
        let ramped: LossSettings =
            serde_json::from_str(r#"{"trajectory_only_steps": 100, "subject_ramp_steps": 4}"#).unwrap();
        let factors: Vec<f64> = (98..106).map(|step| ramped.subject_weight_at(step)).collect();
        assert_eq!(factors, [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
        let from_the_start: LossSettings = serde_json::from_str(r#"{"subject_ramp_steps": 2}"#).unwrap();
        assert_eq!([0, 1, 2].map(|step| from_the_start.subject_weight_at(step)), [0.5, 1.0, 1.0]);
    }

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_a_tenth() {
        let t = TrainSettings {
            lr: 1.0,
            lr_schedule: LrSchedule::Cosine,
            warmup_fraction: 0.1,
            ..TrainSettings::default()
        };
        // 100 steps: warm-up over 10 steps, then cosine from 1.0 to 0.1.
        assert!((t.lr_at(0, 100) - 0.1).abs() < 1e-12);
        assert!((t.lr_at(9, 100) - 1.0).abs() < 1e-12);
        assert!((t.lr_at(10, 100) - 1.0).abs() < 1e-12);
        assert!((t.lr_at(55, 100) - 0.55).abs() < 1e-12, "{}", t.lr_at(55, 100));
        assert!((t.lr_at(100, 100) - 0.1).abs() < 1e-12);
        let c = TrainSettings { lr: 0.5, ..TrainSettings::default() };
        assert_eq!(c.lr_at(0, 10), 0.5);
        assert_eq!(c.lr_at(9, 10), 0.5);
    }
}
