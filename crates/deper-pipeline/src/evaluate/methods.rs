//! The stage-2 runs under evaluation: their method names and the one VLM they share.

use anyhow::{bail, Context};
use deper_train::stage2::{self, Method, Stage2Info};
use std::path::{Path, PathBuf};

pub(super) struct MethodRun {
    pub name: String,
    pub run: PathBuf,
    pub info: Stage2Info,
}

fn method_name(info: &Stage2Info) -> &'static str {
    match info.method {
        Method::Pt => "pt",
        Method::Deper if info.stage1_info.as_ref().is_some_and(|i| i.config.model.no_trajectory) => "deper_no_traj",
        Method::Deper if info.stage1_info.as_ref().is_some_and(|i| i.config.loss.w_traj == 0.0) => {
            "deper_no_decoder_loss"
        }
        Method::Deper => "deper",
    }
}

/// Reads each run's `run.json`; a second run of a method is named `METHOD:RUN_FOLDER`. Runs of
/// different subject lists cannot be compared and are refused.
pub(super) fn load(runs: &[PathBuf]) -> anyhow::Result<Vec<MethodRun>> {
    if runs.is_empty() {
        bail!("give at least one stage-2 run with --runs");
    }
    let mut methods: Vec<MethodRun> = Vec::new();
    for run in runs {
        let info = Stage2Info::load(run).with_context(|| format!("--runs {}", run.display()))?;
        let mut name = method_name(&info).to_string();
        if methods.iter().any(|m| m.name == name) {
            name = format!("{name}:{}", run.file_name().map_or_else(String::new, |f| f.to_string_lossy().into()));
        }
        methods.push(MethodRun { name, run: run.clone(), info });
    }
    let first = &methods[0];
    for m in &methods[1..] {
        if m.info.subjects != first.info.subjects {
            bail!(
                "runs {} and {} were trained on different subject lists ({} vs {} subjects); evaluate runs of one dataset together",
                first.run.display(),
                m.run.display(),
                first.info.subjects.len(),
                m.info.subjects.len()
            );
        }
    }
    Ok(methods)
}

/// The VLM folder the runs recorded (which must exist and be the same for all), or `given`: the
/// runs were moved away from the VLM they recorded; their persona width is still checked against it.
pub(super) fn vlm_folder(methods: &[MethodRun], given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    for m in methods {
        if !Path::new(&m.info.vlm).is_dir() {
            bail!(
                "the VLM folder {} recorded in {} does not exist (moved?); name it with --vlm DIR",
                m.info.vlm,
                m.run.join("run.json").display()
            );
        }
    }
    let first = &methods[0];
    for m in &methods[1..] {
        if !stage2::same_folder(&m.info.vlm, &first.info.vlm) {
            bail!(
                "runs {} and {} use different VLMs ({} vs {})",
                first.run.display(),
                m.run.display(),
                first.info.vlm,
                m.info.vlm
            );
        }
    }
    Ok(PathBuf::from(&first.info.vlm))
}
