//! `deper synth`: the synthetic personas world, the embedded default data set.

use crate::progress::count_bar;
use clap::Args;
use deper_core::dataset::Dataset;
use deper_core::split::{apply_splits, SplitConfig, UnseenChoice};
use deper_core::stats::dataset_stats;
use deper_synth::SynthConfig;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output dataset folder.
    #[arg(long, default_value_os_t = super::default_data_dir().join("synth"))]
    pub out: PathBuf,
    /// Number of simulated subjects (personas).
    #[arg(long, default_value_t = SynthConfig::default().subjects)]
    pub subjects: usize,
    /// Number of rendered scenes.
    #[arg(long, default_value_t = SynthConfig::default().images)]
    pub images: usize,
    /// Probability that a subject describes a given image.
    #[arg(long, default_value_t = SynthConfig::default().coverage)]
    pub coverage: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of subjects held out as unseen.
    #[arg(long, default_value_t = 0.25)]
    pub unseen_fraction: f64,
    /// Support triplets per unseen subject.
    #[arg(long, default_value_t = deper_core::split::DEFAULT_SHOTS)]
    pub shots: usize,
    /// Replace an existing dataset in --out.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let stats = build(args)?;
    super::print_json(&stats)
}

/// Generates the world and its splits; returns the dataset stats.
pub fn build(args: SynthArgs) -> anyhow::Result<deper_core::stats::DatasetStats> {
    if args.force {
        super::remove_existing_dataset(&args.out)?;
    }
    let config = SynthConfig {
        subjects: args.subjects,
        images: args.images,
        coverage: args.coverage,
        seed: args.seed,
        ..SynthConfig::default()
    };
    let bar = count_bar(args.images as u64, "scenes");
    deper_synth::generate(&config, &args.out, &mut |done, _total| bar.set_position(done as u64))?;
    bar.finish_and_clear();

    let ds = Dataset::open(&args.out)?;
    // The generator already assigned image splits; choose unseen subjects and support sets.
    let split = SplitConfig {
        seed: args.seed,
        unseen: UnseenChoice::Fraction(args.unseen_fraction),
        shots: args.shots,
        keep_image_splits: true,
        ..SplitConfig::default()
    };
    let splits = apply_splits(&ds, &split)?;
    let stats = dataset_stats(&ds)?;
    eprintln!(
        "wrote {} ({} triplets, {} subjects of which unseen: {})",
        args.out.display(),
        stats.triplets,
        stats.subjects,
        splits.unseen_subjects.join(", ")
    );
    Ok(stats)
}
