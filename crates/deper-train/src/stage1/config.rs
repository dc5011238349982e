//! Stage-1 settings (`deper train stage1 --config FILE`): optimisation, model sizes and the loss,
//! with the paper's values as defaults.

use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::backend::AutodiffBackend;
/// The `config.model` section lives in deper-model, shared with the browser.
pub use deper_model::run::ModelSettings;
use deper_model::run::{DEFAULT_BATCH_SIZE, DEFAULT_MAX_CAPTION_TOKENS, VLM_MAX_CAPTION_TOKENS};
use deper_model::{Deper, Stage1LossConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::features;
use crate::{Result, TrainError};

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
    /// Captions are cut to this many tokens; unset: 64 with a word vocabulary, 256 (the authors'
    /// limit) with `text_embeddings` (see [`TrainSettings::caption_tokens`]). A new run records
    /// the number it uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_caption_tokens: Option<usize>,
    /// A VLM folder (Qwen2-VL, Qwen2.5-VL or Idefics3) whose `tokenizer.json` and frozen
    /// input-embedding table read the captions, as the authors do; unset: a word vocabulary built
    /// from the training captions (the synthetic world's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_embeddings: Option<PathBuf>,
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
            max_caption_tokens: None,
            text_embeddings: None,
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

    /// How many tokens a caption is cut to: `max_caption_tokens`, else the default of the text side.
    pub fn caption_tokens(&self) -> usize {
        let default = if self.text_embeddings.is_some() { VLM_MAX_CAPTION_TOKENS } else { DEFAULT_MAX_CAPTION_TOKENS };
        self.max_caption_tokens.unwrap_or(default)
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
        if t.max_caption_tokens == Some(0) {
            return bad("train.max_caption_tokens must be at least 1".into());
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
    fn caption_length_defaults_to_the_text_side() {
        let mut t = TrainSettings::default();
        assert_eq!(t.caption_tokens(), DEFAULT_MAX_CAPTION_TOKENS);
        t.text_embeddings = Some("vlm".into());
        assert_eq!(t.caption_tokens(), 256);
        t.max_caption_tokens = Some(12);
        assert_eq!(t.caption_tokens(), 12);
        let read: TrainSettings = serde_json::from_str(r#"{"max_caption_tokens": 40}"#).unwrap();
        assert_eq!((read.max_caption_tokens, read.text_embeddings), (Some(40), None));
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
