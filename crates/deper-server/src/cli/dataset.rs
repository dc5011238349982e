//! `deper dataset stats|split`.

use clap::{Args, Subcommand};
use deper_core::dataset::Dataset;
use deper_core::split::{apply_splits, SplitConfig, SplitFractions, UnseenChoice, DEFAULT_SHOTS};
use deper_core::stats::dataset_stats;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Print counts and means of a dataset.
    Stats {
        dir: PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Assign image splits, choose unseen subjects and their K-shot support sets (writes splits.json).
    Split(SplitArgs),
}

#[derive(Debug, Args)]
pub struct SplitArgs {
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
                super::print_json(&stats)
            } else {
                println!("dataset      {} ({})", stats.name, stats.source);
                println!("triplets     {}", stats.triplets);
                println!("subjects     {}", stats.subjects);
                println!("images       {} ({} with files)", stats.images, stats.images_with_files);
                println!("empty traj.  {}", stats.empty_trajectories);
                println!("mean steps   {:.2} (max {})", stats.mean_steps, stats.max_steps);
                println!("mean dwell   {:.3} s", stats.mean_step_duration);
                println!("mean words   {:.1}", stats.mean_description_words);
                for (split, n) in &stats.splits {
                    println!("split {split:<6} {n}");
                }
                Ok(())
            }
        }
        DatasetCommand::Split(args) => {
            let ds = Dataset::open(&args.dir)?;
            let splits = apply_splits(&ds, &args.config())?;
            super::print_json(&splits)
        }
    }
}
