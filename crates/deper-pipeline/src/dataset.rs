//! Datasets: the synthetic personas world, splits, and the guard that keeps `--force` from
//! deleting anything but a deper dataset. A stage that finds no `splits.json` says to run
//! `deper dataset split` (`deper_core::split::Splits::load`).

use crate::progress::{counted, Event, OnEvent};
use anyhow::Context;
use deper_core::dataset::Dataset;
use deper_core::split::{apply_splits, SplitConfig, UnseenChoice};
use deper_core::stats::{dataset_stats, DatasetStats};
use deper_synth::SynthConfig;
use std::path::{Path, PathBuf};

/// The synthetic world to generate and how to split it.
#[derive(Debug, Clone)]
pub struct SynthSettings {
    /// Output dataset folder.
    pub out: PathBuf,
    pub world: SynthConfig,
    /// Fraction of subjects held out as unseen.
    pub unseen_fraction: f64,
    /// Support triplets per unseen subject.
    pub shots: usize,
    /// Replace an existing dataset in `out`.
    pub force: bool,
}

impl SynthSettings {
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            world: SynthConfig::default(),
            unseen_fraction: 0.25,
            shots: deper_core::split::DEFAULT_SHOTS,
            force: false,
        }
    }
}

/// What [`synthesize`] made.
#[derive(Debug, Clone)]
pub struct SynthOutcome {
    pub stats: DatasetStats,
    pub unseen_subjects: Vec<String>,
}

/// Generates the world and its splits (the generator assigns image splits; this chooses the unseen
/// subjects and their support sets).
pub fn synthesize(settings: &SynthSettings, on: OnEvent<'_>) -> anyhow::Result<SynthOutcome> {
    if settings.force {
        remove_existing_dataset(&settings.out)?;
    }
    deper_synth::generate(&settings.world, &settings.out, &mut counted("scenes", "scenes", &mut *on))?;
    on(Event::End);
    let ds = Dataset::open(&settings.out)?;
    let split = SplitConfig {
        seed: settings.world.seed,
        unseen: UnseenChoice::Fraction(settings.unseen_fraction),
        shots: settings.shots,
        keep_image_splits: true,
        ..SplitConfig::default()
    };
    let splits = apply_splits(&ds, &split)?;
    Ok(SynthOutcome { stats: dataset_stats(&ds)?, unseen_subjects: splits.unseen_subjects })
}

/// Removes `dir` when it holds a deper dataset (and only then), for `--force`.
pub fn remove_existing_dataset(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.join(deper_core::dataset::MANIFEST_FILE).is_file() {
        anyhow::bail!(
            "{} exists and is not a deper dataset; refusing to delete it (choose another --out)",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| dir.display().to_string())
}

/// Assigns image splits, chooses the unseen subjects and their K-shot support sets, and writes
/// `splits.json` (`deper dataset split`).
pub fn split(dir: &Path, config: &SplitConfig) -> anyhow::Result<deper_core::split::Splits> {
    Ok(apply_splits(&Dataset::open(dir)?, config)?)
}
