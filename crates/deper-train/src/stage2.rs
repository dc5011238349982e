//! Stage 2: conditioning the frozen VLM on the subject (`deper train stage2`), and the caption
//! generation every method is evaluated with.
//!
//! Methods (one run folder each):
//! - `deper`: the stage-1 subject encoder (fine-tuned) gives z_s; the adapter Linear(D → VLM hidden,
//!   no bias) turns it into the persona token's embedding in "… in the style of <|persona|>.". Loss =
//!   caption NLL + 1.0·cls + 0.1·con. The encoder sees a *different* triplet of the same subject than
//!   the one being captioned, so z_s has to carry the person, not the content; the adapter gets the
//!   mean of that z_s and the subject's recent ones ([`Stage2Config::persona_shots`]), as evaluation
//!   gives it means.
//! - `pt` ("VLM + PT"): one learned persona embedding per training subject, NLL only. It cannot
//!   describe subjects it was not trained on.
//!
//! The zero-shot baseline needs no run: the same prompt with the persona token's own embedding.
//!
//! The VLM stays frozen (its parameters get no gradients); its image features are computed once per
//! image. At evaluation a seen subject's z_s is the mean over its training triplets, an unseen
//! subject's the mean over its K support triplets (no retraining).
//!
//! Run folder: `run.json` (stage `stage2`, method, settings, stage-1 run, VLM folder, subjects),
//! `model.mpk`, `optimizer.mpk`, `state.json`, `metrics.jsonl` (epoch, train_loss, train_nll,
//! val_nll, …).

use burn::module::{AutodiffModule, Module};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use deper_core::dataset::write_json_atomic;
use deper_core::Split;
use deper_model::loss::{cross_entropy, supcon_loss};
use deper_model::{Deper, SubjectMemoryBank};
use deper_vlm::pipeline::PERSONA_TOKEN;
use deper_vlm::train::CaptionBatch;
use deper_vlm::{Persona, PixelValues, Qwen2Vl, Qwen2VlTokenizer, Vlm};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::data::{make_batch, Sample};
use crate::eval::{mean_vector, run_model};
use crate::persona_slot::{greedy, load_pixels, prompt_ids, target_ids, MAX_CAPTION_TOKENS, PERSONA_PROMPT};
use crate::stage1::{self, append_jsonl, recorder, LrSchedule, Prepared, RunInfo, TrainSettings};
use crate::{Result, TrainError};

pub const STAGE2: &str = "stage2";

/// What a stage-2 run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Subject encoder + adapter.
    Deper,
    /// One learned persona embedding per subject.
    Pt,
}

/// Everything `--config FILE` may set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stage2Config {
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub weight_decay: f64,
    pub clip_norm: f32,
    pub seed: u64,
    pub w_cls: f64,
    pub w_con: f64,
    pub temperature: f64,
    pub bank_capacity: usize,
    /// Fine-tune the stage-1 encoder with the adapter (otherwise only the adapter learns).
    pub finetune_encoder: bool,
    /// DEPER: the adapter is trained on the mean z_s of this many triplets of the subject, the
    /// partner triplet encoded in this batch (with gradient) and the subject's most recent z_s from
    /// earlier batches (detached), since evaluation feeds it means too (the K support triplets of an
    /// unseen subject, all training triplets of a seen one). 1: the partner's z_s alone.
    pub persona_shots: usize,
}

impl Default for Stage2Config {
    fn default() -> Self {
        Self {
            epochs: 4,
            batch_size: 16,
            grad_accum: 1,
            lr: 2e-3,
            lr_schedule: LrSchedule::Cosine,
            weight_decay: 0.0,
            clip_norm: 1.0,
            seed: 0,
            w_cls: 1.0,
            w_con: 0.1,
            temperature: 0.07,
            bank_capacity: 4096,
            finetune_encoder: true,
            persona_shots: deper_core::split::DEFAULT_SHOTS,
        }
    }
}

impl Stage2Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io { path: path.into(), source: e })?;
        serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
    }

    fn schedule(&self) -> TrainSettings {
        TrainSettings { lr: self.lr, lr_schedule: self.lr_schedule, ..TrainSettings::default() }
    }
}

/// `RUN/run.json` of a stage-2 run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage2Info {
    pub stage: String,
    pub method: Method,
    pub config: Stage2Config,
    /// The stage-1 run the encoder came from (`deper` only).
    pub stage1: Option<String>,
    /// Its description, so the encoder can be rebuilt without the stage-1 folder.
    pub stage1_info: Option<RunInfo>,
    pub vlm: String,
    pub data: String,
    /// Trained subjects, sorted (the stage-1 run's for `deper`).
    pub subjects: Vec<String>,
    pub hidden_size: usize,
}

impl Stage2Info {
    pub fn load(run: &Path) -> Result<Self> {
        let (path, mut value) = stage1::read_run_json(run, STAGE2, " (pass a `deper train stage2` run)")?;
        if let Some(stage1) = value.get_mut("stage1_info").filter(|v| v.is_object()) {
            deper_model::run::legacy_model_defaults(stage1);
        }
        serde_json::from_value(value).map_err(|e| TrainError::Checkpoint { path, message: e.to_string() })
    }
}

/// The trained part of stage 2.
#[derive(Module, Debug)]
pub struct Personalizer<B: Backend> {
    pub encoder: Option<Deper<B>>,
    /// z_s → persona embedding.
    pub adapter: Option<Linear<B>>,
    /// PT: subject → persona embedding.
    pub table: Option<Embedding<B>>,
}

impl<B: Backend> Personalizer<B> {
    /// The (fine-tuned) subject encoder of a DEPER run.
    pub fn encoder(&self) -> Option<&Deper<B>> {
        self.encoder.as_ref()
    }

    fn new(info: &Stage2Info, encoder: Option<Deper<B>>, device: &B::Device) -> Self {
        match info.method {
            Method::Deper => {
                let d = info.stage1_info.as_ref().map_or(384, |i| i.config.model.d_model);
                Personalizer {
                    encoder,
                    adapter: Some(LinearConfig::new(d, info.hidden_size).with_bias(false).init(device)),
                    table: None,
                }
            }
            Method::Pt => Personalizer {
                encoder: None,
                adapter: None,
                // Zeros, like the adapter's near-zero start: no subject begins with a random soft prompt.
                table: Some(
                    EmbeddingConfig::new(info.subjects.len(), info.hidden_size)
                        .with_initializer(burn::nn::Initializer::Zeros)
                        .init(device),
                ),
            },
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    epochs_done: usize,
}

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

/// The frozen VLM with what stage 2 needs of it: persona prompt, token ids, image features.
#[derive(Debug)]
pub struct FrozenVlm<B: Backend> {
    pub vlm: Vlm<B>,
    pub persona_prompt: Vec<u32>,
    pub persona_token: u32,
    pub grid: [usize; 3],
    /// Per image: `[image_tokens · hidden]` features.
    pub features: BTreeMap<String, Vec<f32>>,
    pub pixels: BTreeMap<String, PixelValues>,
    pub image_tokens: usize,
}

impl<B: Backend> FrozenVlm<B> {
    /// Loads the VLM folder and computes the image features of `images` once.
    pub fn load(dir: &Path, data: &Path, images: &[String], device: &B::Device) -> Result<Self> {
        let vlm_err = |e: deper_vlm::VlmError| TrainError::Config(format!("{}: {e}", dir.display()));
        let vlm = Vlm::<B>::load(dir, device).map_err(vlm_err)?;
        let persona_token = vlm.tokenizer.token_id(PERSONA_TOKEN).ok_or_else(|| {
            TrainError::Config(format!(
                "{}: the tokenizer has no {PERSONA_TOKEN} token (add it to tokenizer.json's added_tokens)",
                dir.display()
            ))
        })?;
        let pixel_list = load_pixels(data, images, &vlm.processor)?;
        let grid = pixel_list.first().map_or([1, 2, 2], |p| p.grid_thw);
        if let Some((i, p)) = pixel_list.iter().enumerate().find(|(_, p)| p.grid_thw != grid) {
            return Err(TrainError::Config(format!(
                "image `{}` preprocesses to grid {:?}, others to {grid:?}: stage 2 needs one image size (set min_pixels = max_pixels)",
                images[i], p.grid_thw
            )));
        }
        let persona_prompt = prompt_ids(&vlm.tokenizer, PERSONA_PROMPT, grid)?;
        let mut features = BTreeMap::new();
        let mut pixels = BTreeMap::new();
        let mut image_tokens = 0;
        for (id, px) in images.iter().zip(pixel_list) {
            let f = vlm.model.visual.forward(px.to_tensor(device), &[grid]).map_err(vlm_err)?;
            image_tokens = f.dims()[0];
            let values =
                f.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| TrainError::Config(format!("{e:?}")))?;
            features.insert(id.clone(), values);
            pixels.insert(id.clone(), px);
        }
        Ok(Self { vlm, persona_prompt, persona_token, grid, features, pixels, image_tokens })
    }

    fn image_features(&self, images: &[&str], device: &B::Device) -> Result<Tensor<B, 2>> {
        let hidden = self.vlm.config.text.hidden_size;
        let mut values = Vec::with_capacity(images.len() * self.image_tokens * hidden);
        for im in images {
            values.extend_from_slice(
                self.features.get(*im).ok_or_else(|| TrainError::MissingImage { image: im.to_string() })?,
            );
        }
        Ok(Tensor::from_data(TensorData::new(values, [images.len() * self.image_tokens, hidden]), device))
    }

    pub fn tokenizer(&self) -> &Qwen2VlTokenizer {
        &self.vlm.tokenizer
    }
}

/// Everything a stage-2 run and its evaluation read from the dataset.
#[derive(Debug)]
pub struct Stage2Data<B: Backend> {
    pub prep: Prepared,
    pub frozen: FrozenVlm<B>,
    /// Target ids per sample (same order as `prep.samples`).
    pub targets: Vec<Vec<u32>>,
}

/// Prepares samples (with the stage-1 vocabulary when there is one), the frozen VLM and targets.
pub fn prepare_stage2<B: Backend>(
    data: &Path,
    vlm: &Path,
    stage1_info: Option<&RunInfo>,
    device: &B::Device,
) -> Result<Stage2Data<B>> {
    let (backbone, vocab, max_tokens, subjects) = match stage1_info {
        Some(info) => (
            info.config.train.backbone.clone(),
            info.vocab(),
            info.config.train.max_caption_tokens,
            info.subjects.clone(),
        ),
        None => {
            let splits = deper_core::split::Splits::load(data)?;
            let mut seen = splits.seen_subjects.clone();
            seen.sort();
            let s = TrainSettings::default();
            (s.backbone, crate::text::WordVocab::from_words(vec![]), s.max_caption_tokens, seen)
        }
    };
    let prep = stage1::prepare(data, &backbone, &vocab, max_tokens, &subjects)?;
    let mut images: Vec<String> = prep.samples.iter().map(|s| s.image.clone()).collect();
    images.sort();
    images.dedup();
    let frozen = FrozenVlm::load(vlm, data, &images, device)?;
    let ds = deper_core::dataset::Dataset::open(data)?;
    let captions: BTreeMap<String, String> =
        ds.load_triplets()?.into_iter().map(|t| (t.id, t.description.text)).collect();
    let targets = prep
        .samples
        .iter()
        .map(|s| {
            target_ids(frozen.tokenizer(), captions.get(&s.triplet_id).map_or("", String::as_str), MAX_CAPTION_TOKENS)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Stage2Data { prep, frozen, targets })
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
    let never = std::sync::atomic::AtomicBool::new(false);
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
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Vec<Stage2Epoch>> {
    if config.epochs == 0 || config.batch_size == 0 || config.grad_accum == 0 {
        return Err(TrainError::Config("epochs, batch_size and grad_accum must be at least 1".into()));
    }
    let stage1_info = match (method, stage1_run) {
        (Method::Deper, Some(s1)) => {
            let info = RunInfo::load(s1)?;
            if info.stage != stage1::STAGE1 {
                return Err(TrainError::Checkpoint {
                    path: s1.join(stage1::RUN_FILE),
                    message: format!("run is `{}`, not stage1 (--stage1 takes a `deper train stage1` run)", info.stage),
                });
            }
            Some(info)
        }
        (Method::Deper, None) => return Err(TrainError::Config("method deper needs --stage1 RUN".into())),
        (Method::Pt, _) => None,
    };
    if !resume && run.join(stage1::RUN_FILE).exists() {
        return Err(TrainError::Config(format!(
            "{} already holds a run; pass --resume to continue it or choose another --out",
            run.display()
        )));
    }
    let sd = prepare_stage2::<B>(data, vlm, stage1_info.as_ref(), device)?;
    let subjects = match &stage1_info {
        Some(i) => i.subjects.clone(),
        None => {
            let mut s: Vec<String> = sd.prep.splits.seen_subjects.clone();
            s.sort();
            s
        }
    };
    let info = Stage2Info {
        stage: STAGE2.into(),
        method,
        config: config.clone(),
        // Absolute, so `deper eval` finds them from any working directory.
        stage1: stage1_run.map(absolute),
        stage1_info: stage1_info.clone(),
        vlm: absolute(vlm),
        data: data.display().to_string(),
        subjects,
        hidden_size: sd.frozen.vlm.config.text.hidden_size,
    };
    if resume {
        let previous = Stage2Info::load(run)?;
        if previous.method != method || previous.subjects != info.subjects {
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
    }
    std::fs::create_dir_all(run).map_err(|e| TrainError::Io { path: run.into(), source: e })?;
    write_json_atomic(&run.join(stage1::RUN_FILE), &info)?;

    B::seed(device, config.seed);
    let encoder = match (&stage1_info, stage1_run) {
        (Some(i), Some(s1)) => Some(stage1::load_model::<B>(s1, i, device)?),
        _ => None,
    };
    let mut model = Personalizer::new(&info, encoder, device);
    if !config.finetune_encoder {
        model.encoder = model.encoder.map(|e| e.no_grad());
    }
    let mut optim = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .with_grad_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(config.clip_norm)))
        .init::<B, Personalizer<B>>();
    let mut state = State::default();
    if resume {
        model = load_personalizer::<B>(run, &info, device)?;
        let opt_path = run.join(stage1::OPTIMIZER_FILE);
        let record = Recorder::<B>::load(&recorder(), opt_path.clone(), device)
            .map_err(|e| TrainError::Checkpoint { path: opt_path.with_extension("mpk"), message: e.to_string() })?;
        optim = optim.load_record(record);
        let path = run.join(stage1::STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Io { path: path.clone(), source: e })?;
        state = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint { path, message: e.to_string() })?;
    }
    let vlm_model = sd.frozen.vlm.model.clone().no_grad();

    let prep = &sd.prep;
    let train_set: Vec<usize> = prep.partition.train.clone();
    if train_set.is_empty() {
        return Err(TrainError::Config("no training triplets for stage 2".into()));
    }
    let mut by_subject: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in &train_set {
        if let Some(l) = prep.samples[i].label {
            by_subject.entry(l).or_default().push(i);
        }
    }
    let mut bank = SubjectMemoryBank::new(config.bank_capacity);
    let mut recent = RecentEmbeddings::new(config.persona_shots.saturating_sub(1));
    let batches_per_epoch = train_set.len().div_ceil(config.batch_size);
    let total_steps = batches_per_epoch.div_ceil(config.grad_accum) * config.epochs;
    let mut step = batches_per_epoch.div_ceil(config.grad_accum) * state.epochs_done;
    let schedule = config.schedule();
    progress(Stage2Progress::Start { epochs: config.epochs, batches_per_epoch, first_epoch: state.epochs_done + 1 });
    let mut all = Vec::new();
    for epoch in state.epochs_done + 1..=config.epochs {
        let started = std::time::Instant::now();
        let mut rng = deper_core::rng::seeded(config.seed, &format!("stage2-epoch-{epoch}"));
        let mut order = train_set.clone();
        order.shuffle(&mut rng);
        let mut acc = GradientsAccumulator::<Personalizer<B>>::new();
        let (mut sum, mut sum_nll, mut sum_cls, mut sum_con, mut n) = (0.0, 0.0, 0.0, 0.0, 0usize);
        for (b, chunk) in order.chunks(config.batch_size).enumerate() {
            let labels: Vec<usize> = chunk.iter().map(|&i| prep.samples[i].label.unwrap_or(0)).collect();
            // The encoder sees another triplet of the same subject (when the subject has one).
            let partners: Vec<usize> = chunk
                .iter()
                .zip(&labels)
                .map(|(&i, l)| {
                    let pool = &by_subject[l];
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
                .collect();
            let (persona, cls, con, z) =
                persona_vectors(&model, prep, &partners, &labels, &bank, &recent, &config, device)?;
            let images: Vec<&str> = chunk.iter().map(|&i| prep.samples[i].image.as_str()).collect();
            let caption = CaptionBatch {
                prompt_ids: sd.frozen.persona_prompt.clone(),
                grid_thw: sd.frozen.grid,
                image_features: sd.frozen.image_features(&images, device)?,
                targets: chunk.iter().map(|&i| sd.targets[i].clone()).collect(),
                persona: Some((sd.frozen.persona_token, persona)),
            };
            let (nll, _) = vlm_model.caption_nll(&caption).map_err(|e| TrainError::Config(e.to_string()))?;
            let mut total = nll.clone();
            if let (Some(cls), Some(con)) = (&cls, &con) {
                total = total + cls.clone().mul_scalar(config.w_cls) + con.clone().mul_scalar(config.w_con);
            }
            let value = scalar(&total);
            if !value.is_finite() {
                return Err(TrainError::Config(format!("stage 2 diverged at epoch {epoch}, batch {b}: loss {value}")));
            }
            sum += value;
            sum_nll += scalar(&nll);
            sum_cls += cls.as_ref().map_or(0.0, scalar);
            sum_con += con.as_ref().map_or(0.0, scalar);
            n += 1;
            let grads = GradientsParams::from_grads(total.backward(), &model);
            acc.accumulate(&model, grads);
            if (b + 1) % config.grad_accum == 0 || b + 1 == batches_per_epoch {
                model = optim.step(schedule.lr_at(step, total_steps), model, acc.grads());
                step += 1;
            }
            if let Some(z) = z {
                remember(z, &labels, &mut bank, &mut recent)?;
            }
            progress(Stage2Progress::Batch { epoch, batch: b + 1, loss: value });
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let val_nll = validation_nll(&model, &vlm_model, &sd, &info, device)?;
        let nf = n.max(1) as f64;
        let m = Stage2Epoch {
            epoch,
            train_loss: sum / nf,
            train_nll: sum_nll / nf,
            train_cls_loss: sum_cls / nf,
            train_con_loss: sum_con / nf,
            val_nll,
            seconds: started.elapsed().as_secs_f64(),
            samples_per_s: train_set.len() as f64 / train_seconds.max(1e-9),
        };
        let model_path = run.join(stage1::MODEL_FILE);
        model
            .clone()
            .save_file(model_path.clone(), &recorder())
            .map_err(|e| TrainError::Checkpoint { path: model_path, message: e.to_string() })?;
        let opt_path = run.join(stage1::OPTIMIZER_FILE);
        Recorder::<B>::record(&recorder(), optim.to_record(), opt_path.clone())
            .map_err(|e| TrainError::Checkpoint { path: opt_path, message: e.to_string() })?;
        write_json_atomic(&run.join(stage1::STATE_FILE), &State { epochs_done: epoch })?;
        append_jsonl(&run.join(stage1::METRICS_FILE), &m)?;
        progress(Stage2Progress::Epoch(m.clone()));
        all.push(m);
    }
    Ok(all)
}

type PersonaParts<B> = (Tensor<B, 2>, Option<Tensor<B, 1>>, Option<Tensor<B, 1>>, Option<Tensor<B, 2>>);

/// The last `keep` raw (unnormalised) z_s of each subject, newest last: the detached part of the
/// mean a training persona is made from ([`Stage2Config::persona_shots`]).
#[derive(Debug, Clone, Default)]
pub struct RecentEmbeddings {
    keep: usize,
    by_subject: BTreeMap<usize, std::collections::VecDeque<Vec<f32>>>,
}

impl RecentEmbeddings {
    pub fn new(keep: usize) -> Self {
        Self { keep, by_subject: BTreeMap::new() }
    }

    /// Adds one embedding of subject `label`, dropping that subject's oldest beyond `keep`.
    pub fn push(&mut self, z: &[f32], label: usize) {
        if self.keep == 0 {
            return;
        }
        let queue = self.by_subject.entry(label).or_default();
        queue.push_back(z.to_vec());
        while queue.len() > self.keep {
            queue.pop_front();
        }
    }

    /// `(sum of the stored vectors, how many)` for `label`, or `None` when it has none.
    pub fn sum(&self, label: usize) -> Option<(Vec<f32>, usize)> {
        let queue = self.by_subject.get(&label).filter(|q| !q.is_empty())?;
        let mut sum = vec![0.0f32; queue[0].len()];
        for v in queue {
            sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        }
        Some((sum, queue.len()))
    }

    /// Per row `i`: `(z_i + Σ recent z of labels[i]) / (1 + count)`, with gradient through `z` only.
    pub fn mean_with<B: Backend>(&self, z: Tensor<B, 2>, labels: &[usize]) -> Tensor<B, 2> {
        let [n, d] = z.dims();
        let (mut scale, mut offset) = (Vec::with_capacity(n), Vec::with_capacity(n * d));
        for &label in labels {
            match self.sum(label).filter(|(s, _)| s.len() == d) {
                Some((sum, count)) => {
                    let w = 1.0 / (1 + count) as f32;
                    scale.push(w);
                    offset.extend(sum.iter().map(|x| x * w));
                }
                None => {
                    scale.push(1.0);
                    offset.extend(std::iter::repeat_n(0.0, d));
                }
            }
        }
        let device = z.device();
        let scale = Tensor::<B, 2>::from_data(TensorData::new(scale, [n, 1]), &device);
        let offset = Tensor::<B, 2>::from_data(TensorData::new(offset, [n, d]), &device);
        z * scale + offset
    }
}

/// Adds a batch of z_s `[n, d]` (one label per row) to the contrastive bank and to the recent
/// embeddings, read back from the device once for both.
fn remember<B: Backend>(
    z: Tensor<B, 2>,
    labels: &[usize],
    bank: &mut SubjectMemoryBank,
    recent: &mut RecentEmbeddings,
) -> Result<()> {
    let [n, d] = z.dims();
    if n != labels.len() {
        return Err(TrainError::Config(format!("{n} embeddings but {} labels", labels.len())));
    }
    let values =
        z.detach().into_data().convert::<f32>().to_vec::<f32>().map_err(|e| TrainError::Config(format!("{e:?}")))?;
    for (row, &label) in values.chunks_exact(d.max(1)).zip(labels) {
        bank.push(row, label);
        recent.push(row, label);
    }
    Ok(())
}

/// Persona embeddings of a training batch, with the encoder's classification and contrastive losses.
#[allow(clippy::too_many_arguments)]
fn persona_vectors<B: Backend>(
    model: &Personalizer<B>,
    prep: &Prepared,
    encoder_samples: &[usize],
    labels: &[usize],
    bank: &SubjectMemoryBank,
    recent: &RecentEmbeddings,
    config: &Stage2Config,
    device: &B::Device,
) -> Result<PersonaParts<B>> {
    match (&model.encoder, &model.adapter, &model.table) {
        (Some(encoder), Some(adapter), _) => {
            let samples: Vec<&Sample> = encoder_samples.iter().map(|&i| &prep.samples[i]).collect();
            let batch = make_batch::<B>(&samples, &prep.features, device)?;
            let out = encoder.forward(batch.patches, batch.caption_ids, batch.caption_mask, &batch.trajectory);
            let cls = cross_entropy(out.subject_logits.clone(), labels);
            let con = supcon_loss(out.z_s.clone(), labels, bank, config.temperature);
            let persona = adapter.forward(recent.mean_with(out.z_s.clone(), labels));
            Ok((persona, Some(cls), Some(con), Some(out.z_s.detach())))
        }
        (_, _, Some(table)) => {
            let ids: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [labels.len(), 1]), device);
            let n = labels.len();
            let rows = table.forward(ids); // [n, 1, hidden]
            let hidden = rows.dims()[2];
            Ok((rows.reshape([n, hidden]), None, None, None))
        }
        _ => Err(TrainError::Config("stage-2 model has neither an encoder with adapter nor a persona table".into())),
    }
}

fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_scalar().elem::<f64>()
}

/// `path` made absolute when it exists (as given otherwise), for `run.json`.
fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

/// Whether two recorded paths name the same folder: runs trained from different working
/// directories, or before paths were recorded absolute, spell the same VLM differently.
pub fn same_folder(a: &str, b: &str) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Loads a stage-2 run's weights.
pub fn load_personalizer<B: Backend>(run: &Path, info: &Stage2Info, device: &B::Device) -> Result<Personalizer<B>> {
    let encoder = info.stage1_info.as_ref().map(|i| i.model_config().init::<B>(device));
    let model = Personalizer::new(info, encoder, device);
    stage1::load_checked(run, model, device, |_| {}, "the weights do not match the model described by run.json")
}

/// Writes the fine-tuned subject encoder of a `deper` stage-2 run as a stage-1 run folder
/// (`run.json` and `model.mpk`) in `out`, so everything that reads stage-1 runs (`deper embed`, the
/// browser's in-page encoder) computes the z_s this run's adapter was trained on.
pub fn export_encoder(run: &Path, out: &Path) -> Result<()> {
    let info = Stage2Info::load(run)?;
    let stage1_info = info.stage1_info.clone().ok_or_else(|| TrainError::Checkpoint {
        path: run.join(stage1::RUN_FILE),
        message: format!("a `{:?}` run has no subject encoder to export", info.method),
    })?;
    let device = Default::default();
    let personalizer = load_personalizer::<burn::backend::NdArray>(run, &info, &device)?;
    let encoder = personalizer.encoder.ok_or_else(|| TrainError::Checkpoint {
        path: run.join(stage1::RUN_FILE),
        message: "the run's weights hold no encoder".into(),
    })?;
    std::fs::create_dir_all(out).map_err(|e| TrainError::Io { path: out.into(), source: e })?;
    let model_path = out.join(stage1::MODEL_FILE);
    encoder
        .save_file(model_path.clone(), &stage1::recorder())
        .map_err(|e| TrainError::Checkpoint { path: model_path, message: e.to_string() })?;
    // run.json last: a folder with run.json is a complete run.
    write_json_atomic(&out.join(stage1::RUN_FILE), &stage1_info)?;
    Ok(())
}

/// Persona embedding `[hidden]` per subject for evaluation: seen subjects from their training
/// triplets (DEPER: mean z_s; PT: their row), unseen subjects (DEPER only) from their K support
/// triplets. Subjects a method cannot serve are absent.
pub fn subject_personas<B: Backend>(
    model: &Personalizer<B>,
    info: &Stage2Info,
    prep: &Prepared,
    shots: usize,
    device: &B::Device,
) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut out = BTreeMap::new();
    match (&model.encoder, &model.adapter, &model.table) {
        (Some(encoder), Some(adapter), _) => {
            let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (i, s) in prep.samples.iter().enumerate() {
                let use_it = if prep.splits.is_unseen(&s.subject) {
                    prep.partition.support.contains(&i)
                } else {
                    s.split == Split::Train
                };
                if use_it {
                    groups.entry(s.subject.as_str()).or_default().push(i);
                }
            }
            for (subject, mut ids) in groups {
                if prep.splits.is_unseen(subject) {
                    ids.truncate(shots.max(1));
                }
                let z = run_model(encoder, prep, &ids, 32, device)?.z_s;
                let mean = mean_vector(&z.iter().collect::<Vec<_>>());
                let d = mean.len();
                let t = Tensor::<B, 2>::from_data(TensorData::new(mean, [1, d]), device);
                let p = adapter
                    .forward(t)
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .map_err(|e| TrainError::Config(format!("{e:?}")))?;
                out.insert(subject.to_string(), p);
            }
        }
        (_, _, Some(table)) => {
            let w = table.weight.val();
            let [n, h] = w.dims();
            let values =
                w.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| TrainError::Config(format!("{e:?}")))?;
            for (k, subject) in info.subjects.iter().enumerate().take(n) {
                out.insert(subject.clone(), values[k * h..(k + 1) * h].to_vec());
            }
        }
        _ => {}
    }
    Ok(out)
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

/// Summed caption NLL (nats) and the number of caption tokens it covers, of the triplets `set`
/// (indices into `sd.prep.samples`) with each one's own reference as target (its first
/// [`MAX_CAPTION_TOKENS`] tokens and the end-of-turn token, as in training), teacher-forced. With
/// `personas`, the persona token's embedding is overwritten by its subject's (every subject in `set`
/// must have one); without, the prompt keeps the token's own embedding (the zero-shot captioner).
/// Unlike greedy captions this has no decoding noise: it says how likely each method finds what the
/// subject actually wrote.
pub fn caption_nll<B: Backend>(
    vlm: &Qwen2Vl<B>,
    sd: &Stage2Data<B>,
    set: &[usize],
    personas: Option<&BTreeMap<String, Vec<f32>>>,
    device: &B::Device,
) -> Result<(f64, usize)> {
    let hidden = sd.frozen.vlm.config.text.hidden_size;
    let (mut sum, mut count) = (0.0, 0usize);
    for chunk in set.chunks(32) {
        let persona = match personas {
            None => None,
            Some(personas) => {
                let mut values = Vec::with_capacity(chunk.len() * hidden);
                for &i in chunk {
                    let subject = &sd.prep.samples[i].subject;
                    let p = personas.get(subject).ok_or_else(|| {
                        TrainError::Config(format!(
                            "no persona for subject {subject} (triplet {})",
                            sd.prep.samples[i].triplet_id
                        ))
                    })?;
                    check_persona_width(subject, p, hidden)?;
                    values.extend_from_slice(p);
                }
                let persona = Tensor::<B, 2>::from_data(TensorData::new(values, [chunk.len(), hidden]), device);
                Some((sd.frozen.persona_token, persona))
            }
        };
        let images: Vec<&str> = chunk.iter().map(|&i| sd.prep.samples[i].image.as_str()).collect();
        let caption = CaptionBatch {
            prompt_ids: sd.frozen.persona_prompt.clone(),
            grid_thw: sd.frozen.grid,
            image_features: sd.frozen.image_features(&images, device)?,
            targets: chunk.iter().map(|&i| sd.targets[i].clone()).collect(),
            persona,
        };
        let (nll, n) = vlm.caption_nll(&caption).map_err(|e| TrainError::Config(e.to_string()))?;
        sum += scalar(&nll) * n as f64;
        count += n;
    }
    Ok((sum, count))
}

/// One generated caption.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratedCaption {
    pub triplet_id: String,
    pub image: String,
    pub subject: String,
    pub seen: bool,
    pub reference: String,
    pub prediction: String,
}

/// Which test triplets to caption: seen subjects' test-split triplets and unseen subjects' queries
/// (their val/test triplets, never their support set).
pub fn evaluation_set(prep: &Prepared) -> Vec<usize> {
    let mut set = prep.partition.test.clone();
    set.extend(prep.samples.iter().enumerate().filter_map(|(i, s)| {
        (prep.splits.is_unseen(&s.subject) && s.split == Split::Test && !prep.partition.support.contains(&i))
            .then_some(i)
    }));
    set
}

/// A persona must be as wide as the VLM's hidden size (a run trained with another VLM is not).
fn check_persona_width(subject: &str, persona: &[f32], hidden: usize) -> Result<()> {
    if persona.len() == hidden {
        return Ok(());
    }
    Err(TrainError::Config(format!(
        "persona of {subject} has {} values, the VLM's hidden size is {hidden} (was the run trained with another VLM?)",
        persona.len()
    )))
}

/// Greedy captions of `set` with per-subject persona vectors (`None` = the zero-shot prompt with the
/// persona token's own embedding). Subjects without a persona are skipped.
pub fn generate<B: Backend>(
    frozen: &FrozenVlm<B>,
    prep: &Prepared,
    references: &BTreeMap<String, String>,
    set: &[usize],
    personas: Option<&BTreeMap<String, Vec<f32>>>,
    device: &B::Device,
    on_caption: &mut dyn FnMut(),
) -> Result<Vec<GeneratedCaption>> {
    let mut out = Vec::new();
    let hidden = frozen.vlm.config.text.hidden_size;
    for &i in set {
        let s = &prep.samples[i];
        let persona = match personas {
            Some(map) => match map.get(&s.subject) {
                Some(v) => {
                    check_persona_width(&s.subject, v, hidden)?;
                    Some(Persona {
                        embeddings: Tensor::from_data(TensorData::new(v.clone(), [1, hidden]), device),
                        token_ids: vec![frozen.persona_token],
                    })
                }
                None => continue,
            },
            None => None,
        };
        let pixels = frozen.pixels.get(&s.image).ok_or_else(|| TrainError::MissingImage { image: s.image.clone() })?;
        let prediction =
            greedy(&frozen.vlm.model, frozen.tokenizer(), &frozen.persona_prompt, pixels, device, persona)?;
        out.push(GeneratedCaption {
            triplet_id: s.triplet_id.clone(),
            image: s.image.clone(),
            subject: s.subject.clone(),
            seen: !prep.splits.is_unseen(&s.subject),
            reference: references.get(&s.triplet_id).cloned().unwrap_or_default(),
            prediction,
        });
        on_caption();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type B = Autodiff<NdArray>;

    fn rows(t: Tensor<B, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    #[test]
    fn training_personas_average_the_subjects_recent_embeddings() {
        let device = Default::default();
        let mut recent = RecentEmbeddings::new(2);
        let mut bank = SubjectMemoryBank::new(16);
        // Subject 0 gets three vectors; only the last two stay. Subject 1 gets one.
        let seen = Tensor::<B, 2>::from_data(
            TensorData::new(vec![100.0f32, 100.0, 1.0, 2.0, 3.0, 4.0, 10.0, 20.0], [4, 2]),
            &device,
        );
        remember(seen, &[0, 0, 0, 1], &mut bank, &mut recent).unwrap();
        // The contrastive bank got the same batch (latest per subject + all four in its FIFO).
        assert_eq!(bank.len(), 2 + 4);
        assert_eq!(recent.sum(0), Some((vec![4.0, 6.0], 2)));
        assert_eq!(recent.sum(1), Some((vec![10.0, 20.0], 1)));
        assert_eq!(recent.sum(2), None);

        let z = Tensor::<B, 2>::from_data(TensorData::new(vec![7.0f32, 9.0, 2.0, 2.0, 5.0, 5.0], [3, 2]), &device)
            .require_grad();
        let mean = recent.mean_with(z.clone(), &[0, 1, 2]);
        let got = rows(mean.clone());
        // (z + 4, 6 … ) / 3; (z + 10, 20) / 2; a subject with nothing stored keeps its own z.
        let want = [11.0 / 3.0, 15.0 / 3.0, 6.0, 11.0, 5.0, 5.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        // The gradient reaches z scaled by its weight in the mean; the stored vectors get none.
        let grads = mean.sum().backward();
        let dz = rows(z.grad(&grads).map(Tensor::from_inner).unwrap());
        let want = [1.0 / 3.0, 1.0 / 3.0, 0.5, 0.5, 1.0, 1.0];
        for (g, w) in dz.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{dz:?} vs {want:?}");
        }

        // persona_shots = 1 keeps nothing: the persona is the partner's z_s alone.
        let mut none = RecentEmbeddings::new(0);
        none.push(&[1.0, 1.0], 0);
        assert_eq!(none.sum(0), None);
        assert!(remember(Tensor::<B, 2>::ones([2, 2], &device), &[0], &mut bank, &mut recent).is_err());
    }
}
