//! The run folder that stage 1, stage 2 and evaluation share: its file names, `run.json`'s stage
//! check, checked weight loading, and the per-epoch checkpoint that `--resume` continues from.
//!
//! ```text
//! RUN/run.json        what the run is: its stage first, then that stage's settings (written once, at start)
//! RUN/metrics.jsonl   one JSON object per completed epoch
//! RUN/model.mpk       the latest weights (burn named MessagePack, full precision)
//! RUN/optimizer.mpk   the optimizer state, for --resume
//! RUN/state.json      epochs completed, for --resume
//! ```
//!
//! An epoch's checkpoint is written weights first and its metrics line last, so a line in
//! `metrics.jsonl` means its weights are on disk; a folder holding `run.json` is a run.

use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use deper_core::dataset::write_json_atomic;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Result, TrainError};

pub const RUN_FILE: &str = "run.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const MODEL_FILE: &str = "model";
pub const OPTIMIZER_FILE: &str = "optimizer";
pub const STATE_FILE: &str = "state.json";

/// `RUN/state.json`: how far a run got.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TrainState {
    pub(crate) epochs_done: usize,
}

impl TrainState {
    /// Reads `RUN/state.json`.
    pub(crate) fn load(run: &Path) -> Result<Self> {
        let path = run.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Io { path: path.clone(), source: e })?;
        serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint { path, message: e.to_string() })
    }
}

/// How many epochs the run in `run` has finished (`None`: no readable `state.json` yet).
pub fn epochs_done(run: &Path) -> Option<usize> {
    TrainState::load(run).ok().map(|s| s.epochs_done)
}

/// The recorder of every weight and optimizer file of a run.
pub(crate) fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
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

/// A fresh run must not write over another: `run` may hold a run only when resuming it.
pub(crate) fn check_new_run(run: &Path, resume: bool) -> Result<()> {
    if !resume && run.join(RUN_FILE).exists() {
        return Err(TrainError::Config(format!(
            "{} already holds a run; pass --resume to continue it or choose another --out",
            run.display()
        )));
    }
    Ok(())
}

/// Creates the run folder and writes `run.json` (`info`).
pub(crate) fn write_run_json<T: Serialize>(run: &Path, info: &T) -> Result<()> {
    std::fs::create_dir_all(run).map_err(|e| TrainError::Io { path: run.into(), source: e })?;
    write_json_atomic(&run.join(RUN_FILE), info)?;
    Ok(())
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

/// Writes `model` as `FOLDER/model.mpk` (a run, or an exported encoder).
pub(crate) fn save_model<B: Backend, M: Module<B>>(folder: &Path, model: M) -> Result<()> {
    let model_path = folder.join(MODEL_FILE);
    model
        .save_file(model_path.clone(), &recorder())
        .map_err(|e| TrainError::Checkpoint { path: model_path, message: e.to_string() })
}

/// `optim` with the state saved in `RUN/optimizer.mpk` (for `--resume`).
pub(crate) fn load_optimizer<B, M, O>(run: &Path, optim: O, device: &B::Device) -> Result<O>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let opt_path = run.join(OPTIMIZER_FILE);
    let record = Recorder::<B>::load(&recorder(), opt_path.clone(), device)
        .map_err(|e| TrainError::Checkpoint { path: opt_path.with_extension("mpk"), message: e.to_string() })?;
    Ok(optim.load_record(record))
}

/// Writes an epoch's checkpoint (weights, optimizer state, `state.json`), then its metrics line.
pub(crate) fn save_epoch<B, M, O, T>(run: &Path, model: &M, optim: &O, epoch: usize, metrics: &T) -> Result<()>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    T: Serialize,
{
    save_model::<B, M>(run, model.clone())?;
    let opt_path = run.join(OPTIMIZER_FILE);
    Recorder::<B>::record(&recorder(), optim.to_record(), opt_path.clone())
        .map_err(|e| TrainError::Checkpoint { path: opt_path, message: e.to_string() })?;
    write_json_atomic(&run.join(STATE_FILE), &TrainState { epochs_done: epoch })?;
    append_jsonl(&run.join(METRICS_FILE), metrics)
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
