//! `deper demo`: the whole pipeline on the synthetic world with embedded defaults: world → image
//! features → the tiny frozen captioner → stage 1 (with and without trajectories) → stage 2 (DEPER,
//! DEPER without trajectories, PT; one or more seeds) → the evaluation report. Finished steps are
//! kept and skipped on a rerun, so an interrupted demo continues where it stopped.
//!
//! [`DemoSettings::default`] holds the demo's defaults: the command line's flags and the server's
//! first start read them from here.

pub mod captioner;

use crate::backend::{with_backend, DeviceKind};
use crate::evaluate::{evaluate, EvalRequest, Evaluation};
use crate::progress::{EpochEvents, Event, OnEvent};
use crate::stage1::{train_stage1, Stage1Job};
use crate::stage2::{train_stage2, Stage2Job};
use anyhow::Context;
use captioner::{CaptionerConfig, CaptionerEpoch, CaptionerProgress};
use deper_train::stage2::{Method, Stage2Config};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// The marker file of a demo folder: the settings it was made with.
pub const MARKER_FILE: &str = "demo.json";

/// The demo's steps, as reported by [`Event::Step`].
pub const STEPS: usize = 7;

/// What the demo builds. The sizes are the ones the report in `docs/experiments/` was made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DemoSettings {
    /// Scenes in the synthetic world.
    pub images: usize,
    /// Subjects in the synthetic world (a quarter of them unseen).
    pub subjects: usize,
    /// Stage-1 epochs (each of the two stage-1 runs). 12: with caption positions the encoder is
    /// still at subject accuracy ~0.3 after 6 epochs of this schedule, ~0.8 after 12.
    pub stage1_epochs: usize,
    /// Captioner pretraining epochs.
    pub captioner_epochs: usize,
    /// Stage-2 epochs (each of the stage-2 runs).
    pub stage2_epochs: usize,
    /// Each stage-2 method is trained with this many seeds (0, 1, …; the runs of seed k > 0 are
    /// `runs/METHOD_seedK`); the report adds each method's mean and deviation over them. Raising it
    /// on a finished demo trains only the new seeds.
    pub stage2_seeds: u64,
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self {
            images: 160,
            subjects: deper_synth::SynthConfig::default().subjects,
            stage1_epochs: 12,
            captioner_epochs: 10,
            stage2_epochs: 4,
            stage2_seeds: 1,
        }
    }
}

impl DemoSettings {
    /// The settings that decide the demo's models: all but the number of stage-2 seeds, whose
    /// change reuses everything already trained.
    fn identity(&self) -> serde_json::Value {
        serde_json::json!({
            "images": self.images, "subjects": self.subjects, "stage1_epochs": self.stage1_epochs,
            "captioner_epochs": self.captioner_epochs, "stage2_epochs": self.stage2_epochs,
        })
    }

    /// The settings a demo folder was made with (its marker), `None` for a folder without one.
    pub fn recorded(out: &Path) -> anyhow::Result<Option<Self>> {
        let marker = out.join(MARKER_FILE);
        let Ok(text) = std::fs::read_to_string(&marker) else {
            return Ok(None);
        };
        // Fields a demo made by an older version did not record take today's defaults.
        serde_json::from_str(&text).map(Some).with_context(|| format!("{}: not a demo marker", marker.display()))
    }
}

/// The demo's pieces `deper serve` runs on.
#[derive(Debug, Clone)]
pub struct DemoPaths {
    pub world: PathBuf,
    pub captioner: PathBuf,
    /// The stage-2 DEPER run (adapter; its fine-tuned encoder is the page's encoder).
    pub persona_run: PathBuf,
    pub encoder: PathBuf,
    pub report: PathBuf,
}

impl DemoPaths {
    pub fn new(out: &Path) -> Self {
        Self {
            world: out.join("world"),
            captioner: out.join("captioner"),
            persona_run: out.join("runs").join("deper"),
            encoder: out.join("runs").join("deper"),
            report: out.join("report"),
        }
    }

    /// Whether the demo in this folder is finished (its report is written).
    pub fn is_complete(&self) -> bool {
        self.report.join("report.json").is_file()
    }
}

/// Runs the demo in `out` (`force`: start over, deleting a previous demo there first).
pub fn run(
    out: &Path,
    settings: &DemoSettings,
    force: bool,
    device: DeviceKind,
    command: &str,
    on: OnEvent<'_>,
) -> anyhow::Result<Evaluation> {
    prepare_folder(out, settings, force)?;
    let paths = DemoPaths::new(out);
    build_world(&paths.world, settings, &mut *on)?;
    build_captioner(&paths.captioner, &paths.world, settings, device, &mut *on)?;
    let runs = out.join("runs");
    train_stage1_runs(&paths.world, &runs, settings, device, &mut *on)?;
    let stage2_runs = train_stage2_runs(&paths.world, &paths.captioner, &runs, settings, device, &mut *on)?;
    on(Event::Step { index: 6, count: STEPS, name: "evaluation (captions for every method)".into() });
    let request = EvalRequest {
        data: paths.world.clone(),
        runs: stage2_runs,
        out: paths.report.clone(),
        shots: deper_core::split::DEFAULT_SHOTS,
        // The demo's own captioner, so a demo folder that was moved still evaluates.
        vlm: Some(paths.captioner.clone()),
        command: command.to_string(),
    };
    let evaluation = evaluate(&request, device, &mut *on)?;
    on(Event::Step { index: 7, count: STEPS, name: "done".into() });
    Ok(evaluation)
}

/// Builds the demo in `out` unless a finished one is there, and names its parts. A demo folder
/// keeps the settings it was made with (one made with `deper demo --images 24` is served as it is);
/// an unfinished one is finished with them.
pub fn ensure(out: &Path, device: DeviceKind, on: OnEvent<'_>) -> anyhow::Result<DemoPaths> {
    let paths = DemoPaths::new(out);
    if !paths.is_complete() {
        let settings = DemoSettings::recorded(out)?.unwrap_or_default();
        run(out, &settings, false, device, "deper serve (first start: the demo)", on)?;
    }
    Ok(paths)
}

/// Creates `out` and its marker; refuses a folder holding a demo of other settings.
fn prepare_folder(out: &Path, settings: &DemoSettings, force: bool) -> anyhow::Result<()> {
    let marker = out.join(MARKER_FILE);
    if force && out.exists() {
        if !marker.is_file() {
            anyhow::bail!("{} exists and is not a deper demo folder; refusing to delete it", out.display());
        }
        std::fs::remove_dir_all(out).with_context(|| out.display().to_string())?;
    }
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    if let Some(previous) = DemoSettings::recorded(out)? {
        if previous.identity() != settings.identity() {
            anyhow::bail!(
                "{} holds a demo made with other settings ({}); pass --force to start over",
                out.display(),
                previous.identity()
            );
        }
    }
    deper_core::dataset::write_json_atomic(&marker, settings)?;
    Ok(())
}

fn build_world(world: &Path, settings: &DemoSettings, on: OnEvent<'_>) -> anyhow::Result<()> {
    if !world.join(deper_core::dataset::MANIFEST_FILE).is_file() {
        on(Event::Step { index: 1, count: STEPS, name: "synthetic world".into() });
        let mut synth = crate::dataset::SynthSettings::new(world);
        synth.world.subjects = settings.subjects;
        synth.world.images = settings.images;
        synth.world.seed = 0;
        let outcome = crate::dataset::synthesize(&synth, &mut *on)?;
        on(Event::Note {
            line: format!(
                "wrote {} ({} triplets, {} subjects of which unseen: {})",
                world.display(),
                outcome.stats.triplets,
                outcome.stats.subjects,
                outcome.unseen_subjects.join(", ")
            ),
            detail: serde_json::json!({"event": "world"}),
        });
    }
    let backbone = deper_train::features::PIXEL_STATS;
    if !deper_train::features::is_complete(world, backbone) {
        on(Event::Step { index: 2, count: STEPS, name: "image features".into() });
        crate::features::extract_features(world, backbone, &mut *on)?;
    }
    Ok(())
}

fn build_captioner(
    captioner_dir: &Path,
    world: &Path,
    settings: &DemoSettings,
    device: DeviceKind,
    on: OnEvent<'_>,
) -> anyhow::Result<()> {
    if captioner_dir.join("model.safetensors").is_file() {
        return Ok(());
    }
    on(Event::Step { index: 3, count: STEPS, name: "pretraining the tiny frozen captioner".into() });
    if captioner_dir.exists() {
        std::fs::remove_dir_all(captioner_dir)?;
    }
    let config = CaptionerConfig { epochs: settings.captioner_epochs, ..CaptionerConfig::default() };
    pretrain_captioner(world, captioner_dir, &config, device, on)?;
    Ok(())
}

/// Pretrains the tiny frozen captioner on the synthetic world into `out` (Hugging Face layout).
pub fn pretrain_captioner(
    data: &Path,
    out: &Path,
    config: &CaptionerConfig,
    device: DeviceKind,
    on: OnEvent<'_>,
) -> anyhow::Result<Vec<CaptionerEpoch>> {
    let mut events = EpochEvents::new("captioner", on);
    let mut on_progress = |p: CaptionerProgress| match p {
        CaptionerProgress::Start { epochs, batches_per_epoch } => events.start(epochs, 1, batches_per_epoch),
        CaptionerProgress::Batch { epoch, batch, loss } => events.batch(epoch, batch, loss),
        CaptionerProgress::Epoch(m) => events.epoch(
            format!(
                "epoch {}  loss {:.4}  val loss {:.4}  image gain {:.3}  {:.0} samples/s  e.g. \"{}\"",
                m.epoch, m.train_loss, m.val_loss, m.val_image_gain, m.samples_per_s, m.example
            ),
            &m,
        ),
    };
    let epochs = with_backend!(device, B, AD, device => {
        captioner::pretrain::<AD>(data, out, config, &device, &mut on_progress)
            .with_context(|| format!("pretraining the captioner into {}", out.display()))
    })?;
    events.end();
    Ok(epochs)
}

/// Stage 1 with and without the trajectory stream.
fn train_stage1_runs(
    world: &Path,
    runs: &Path,
    settings: &DemoSettings,
    device: DeviceKind,
    on: OnEvent<'_>,
) -> anyhow::Result<()> {
    use deper_train::stage1::{LrSchedule, ModelSettings, Stage1Config, RUN_FILE};
    for (name, no_trajectory) in [("stage1", false), ("stage1_no_traj", true)] {
        let run = runs.join(name);
        if done(&run, settings.stage1_epochs) {
            continue;
        }
        on(Event::Step { index: 4, count: STEPS, name: format!("stage 1 ({name})") });
        let mut config =
            Stage1Config { model: ModelSettings { no_trajectory, ..ModelSettings::tiny() }, ..Default::default() };
        config.train.epochs = settings.stage1_epochs;
        config.train.lr_schedule = LrSchedule::Cosine;
        let resume = run.join(RUN_FILE).is_file();
        let job = Stage1Job { data: world.to_path_buf(), out: run, config, resume, devices: None };
        train_stage1(job, device, &AtomicBool::new(false), &mut *on)?;
    }
    Ok(())
}

/// Stage 2 of every method and seed; returns the run folders, seed 0 of every method first (so its
/// report rows keep the plain method names).
fn train_stage2_runs(
    world: &Path,
    captioner: &Path,
    runs: &Path,
    settings: &DemoSettings,
    device: DeviceKind,
    on: OnEvent<'_>,
) -> anyhow::Result<Vec<PathBuf>> {
    let methods = [
        ("deper", Some("stage1"), Method::Deper),
        ("deper_no_traj", Some("stage1_no_traj"), Method::Deper),
        ("pt", None, Method::Pt),
    ];
    let mut stage2_runs = Vec::new();
    for seed in 0..settings.stage2_seeds {
        for (method_name, stage1, method) in methods {
            let name = if seed == 0 { method_name.to_string() } else { format!("{method_name}_seed{seed}") };
            let run = runs.join(&name);
            stage2_runs.push(run.clone());
            if done(&run, settings.stage2_epochs) {
                continue;
            }
            on(Event::Step { index: 5, count: STEPS, name: format!("stage 2 ({name})") });
            let job = Stage2Job {
                data: world.to_path_buf(),
                stage1: stage1.map(|s| runs.join(s)),
                vlm: captioner.to_path_buf(),
                resume: run.join(deper_train::stage1::RUN_FILE).is_file(),
                out: run,
                method,
                config: Stage2Config { epochs: settings.stage2_epochs, seed, ..Stage2Config::default() },
            };
            train_stage2(job, device, &AtomicBool::new(false), &mut *on)?;
        }
    }
    Ok(stage2_runs)
}

/// Whether a run folder finished `epochs` epochs.
fn done(run: &Path, epochs: usize) -> bool {
    deper_train::run_folder::epochs_done(run).is_some_and(|e| e >= epochs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_marker_of_an_older_demo_takes_todays_defaults_for_what_it_did_not_record() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MARKER_FILE), r#"{"images": 24, "stage1_epochs": 2}"#).unwrap();
        let recorded = DemoSettings::recorded(dir.path()).unwrap().unwrap();
        assert_eq!(recorded, DemoSettings { images: 24, stage1_epochs: 2, ..DemoSettings::default() });
        assert_eq!(DemoSettings::recorded(&dir.path().join("none")).unwrap(), None);
    }

    #[test]
    fn a_folder_with_a_demo_of_other_settings_is_refused_but_more_seeds_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DemoSettings { images: 24, ..DemoSettings::default() };
        prepare_folder(dir.path(), &settings, false).unwrap();
        prepare_folder(dir.path(), &DemoSettings { stage2_seeds: 3, ..settings.clone() }, false).unwrap();
        let err = prepare_folder(dir.path(), &DemoSettings::default(), false).unwrap_err().to_string();
        assert!(err.contains("other settings") && err.contains("--force"), "{err}");
        // --force starts over in a demo folder, and never deletes anything else.
        prepare_folder(dir.path(), &DemoSettings::default(), true).unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("keep.txt"), "x").unwrap();
        assert!(prepare_folder(other.path(), &settings, true).is_err());
        assert!(other.path().join("keep.txt").is_file());
    }
}
