//! `deper dataset stats|split`.

use super::{print_json, print_text};
use clap::{Args, Subcommand};
use deper_core::dataset::Dataset;
use deper_core::split::{SplitConfig, SplitFractions, UnseenChoice, DEFAULT_SHOTS};
use deper_core::stats::{dataset_stats, DatasetStats};
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Print counts and means of a dataset.
    #[command(after_help = "Example:\n  deper dataset stats deper-data/synth --json")]
    Stats {
        /// Dataset folder.
        dir: PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Assign image splits, choose unseen subjects and their K-shot support sets (writes splits.json).
    Split(SplitArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  deper dataset split data --unseen-fraction 0.25 --shots 5\n  deper dataset split coco-ln --keep-image-splits --unseen alice,bob"
)]
pub struct SplitArgs {
    /// Dataset folder.
    pub dir: PathBuf,
    /// Fraction of images in the validation split.
    #[arg(long, default_value_t = 0.1)]
    pub val: f64,
    /// Fraction of images in the test split.
    #[arg(long, default_value_t = 0.1)]
    pub test: f64,
    /// Keep the triplets' current image splits (e.g. the official train/val files).
    #[arg(long)]
    pub keep_image_splits: bool,
    /// Unseen (held-out) subjects, comma separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "unseen_fraction")]
    pub unseen: Option<Vec<String>>,
    /// Fraction of subjects held out as unseen, chosen by seed.
    #[arg(long, default_value_t = 0.25)]
    pub unseen_fraction: f64,
    /// Support triplets per unseen subject.
    #[arg(long, default_value_t = DEFAULT_SHOTS)]
    pub shots: usize,
    /// Seed of the image splits and of the unseen-subject choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SplitArgs {
    pub fn config(&self) -> SplitConfig {
        SplitConfig {
            seed: self.seed,
            fractions: SplitFractions { val: self.val, test: self.test },
            unseen: match &self.unseen {
                Some(list) => UnseenChoice::List(list.clone()),
                None => UnseenChoice::Fraction(self.unseen_fraction),
            },
            shots: self.shots,
            keep_image_splits: self.keep_image_splits,
        }
    }
}

pub fn run(cmd: DatasetCommand) -> anyhow::Result<()> {
    match cmd {
        DatasetCommand::Stats { dir, json } => {
            let stats = dataset_stats(&Dataset::open(&dir)?)?;
            if json {
                print_json(&stats)
            } else {
                print_text(&stats_table(&stats))
            }
        }
        DatasetCommand::Split(args) => print_json(&deper_pipeline::dataset::split(&args.dir, &args.config())?),
    }
}

/// The human-readable form of `deper dataset stats`, with the triplets of each subject.
fn stats_table(stats: &DatasetStats) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(out, "dataset      {} ({})", stats.name, stats.source);
    let _ = writeln!(out, "triplets     {}", stats.triplets);
    let _ = writeln!(out, "subjects     {}", stats.subjects);
    let _ = writeln!(out, "images       {} ({} with files)", stats.images, stats.images_with_files);
    let _ = writeln!(out, "empty traj.  {}", stats.empty_trajectories);
    let _ = writeln!(out, "mean steps   {:.2} (max {})", stats.mean_steps, stats.max_steps);
    let _ = writeln!(out, "mean dwell   {:.3} s", stats.mean_step_duration);
    let _ = writeln!(out, "mean words   {:.1}", stats.mean_description_words);
    for (split, n) in &stats.splits {
        let _ = writeln!(out, "split {split:<6} {n}");
    }
    let width = stats.per_subject.keys().map(String::len).max().unwrap_or(0);
    let _ = writeln!(out, "triplets per subject:");
    for (subject, n) in &stats.per_subject {
        let _ = writeln!(out, "  {subject:<width$}  {n}");
    }
    out
}
