//! `deper synth`: the synthetic personas world, the embedded default data set.

use super::{print_json, Bars};
use clap::Args;
use deper_pipeline::dataset::{synthesize, SynthSettings};
use deper_synth::SynthConfig;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  deper synth --out deper-data/synth --subjects 12 --images 160")]
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
    /// Seed of the world and of the unseen-subject choice.
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
    let settings = SynthSettings {
        out: args.out.clone(),
        world: SynthConfig {
            subjects: args.subjects,
            images: args.images,
            coverage: args.coverage,
            seed: args.seed,
            ..SynthConfig::default()
        },
        unseen_fraction: args.unseen_fraction,
        shots: args.shots,
        force: args.force,
    };
    let mut bars = Bars::new();
    let outcome = synthesize(&settings, &mut bars.callback())?;
    drop(bars);
    eprintln!(
        "wrote {} ({} triplets, {} subjects of which unseen: {})",
        args.out.display(),
        outcome.stats.triplets,
        outcome.stats.subjects,
        outcome.unseen_subjects.join(", ")
    );
    print_json(&outcome.stats)
}
