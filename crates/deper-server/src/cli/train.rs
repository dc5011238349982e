//! `deper features extract`, `deper train stage1|stage2`, `deper eval-fewshot`, `deper embed`.

use super::{print_json, print_text, Bars, DEVICE_HELP};
use clap::{Args, Subcommand};
use deper_pipeline::stage1::{embed_subjects, eval_fewshot as run_eval_fewshot, train_stage1, Stage1Job};
use deper_pipeline::DeviceKind;
use deper_train::stage1::{ModelSettings, Stage1Config};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Debug, Subcommand)]
pub enum FeaturesCommand {
    /// Compute and cache image patch features for a dataset (DIR/features/).
    #[command(after_help = "Example:\n  deper features extract --data deper-data/synth")]
    Extract {
        /// Dataset folder.
        #[arg(long)]
        data: PathBuf,
        /// Backbone: `pixel-stats` (parameter-free, for the synthetic world).
        #[arg(long, default_value = deper_train::features::PIXEL_STATS)]
        backbone: String,
    },
}

pub fn features(cmd: FeaturesCommand) -> anyhow::Result<()> {
    match cmd {
        FeaturesCommand::Extract { data, backbone } => {
            let mut bars = Bars::new();
            let meta = deper_pipeline::features::extract_features(&data, &backbone, &mut bars.callback())?;
            drop(bars);
            print_json(&meta)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Stage 1: the subject encoder (trajectory reconstruction + subject classification + contrastive).
    #[command(
        after_help = "Examples:\n  deper train stage1 --data deper-data/synth --out runs/stage1 --preset tiny\n  deper train stage1 --data coco-ln --out runs/stage1 --preset paper --device cuda --devices 0,1\n  deper train stage1 --data coco-ln --out runs/stage1 --resume"
    )]
    Stage1(Stage1Args),
    /// Stage 2: condition the frozen VLM on z_s through the adapter (or the per-subject PT baseline).
    #[command(
        after_help = "Examples:\n  deper train stage2 --data deper-data/demo/world --stage1 runs/stage1 --vlm deper-data/demo/captioner --out runs/deper\n  deper train stage2 --data deper-data/demo/world --method pt --vlm deper-data/demo/captioner --out runs/pt"
    )]
    Stage2(super::personal::Stage2Args),
}

#[derive(Debug, Args)]
pub struct Stage1Args {
    /// Dataset folder (with splits.json and cached features).
    #[arg(long)]
    pub data: PathBuf,
    /// Run folder to create (or continue with --resume).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
    pub device: DeviceKind,
    /// JSON file with `train`, `model` and `loss` sections (any subset of fields).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Network size preset: `paper` (D = 384) or `tiny` (D = 64, for CPUs and CI). The model
    /// fields a `--config` file sets go over it.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(ModelSettings::PRESETS))]
    pub preset: Option<String>,
    /// Epochs (overrides the config).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Triplets per batch (overrides the config).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed of initialisation and shuffling (overrides the config).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The ablation without the trajectory stream.
    #[arg(long)]
    pub no_trajectory: bool,
    /// The ablation without the trajectory decoder loss (its weight set to 0).
    #[arg(long)]
    pub no_trajectory_loss: bool,
    /// Continue the run in --out from its last completed epoch.
    #[arg(long)]
    pub resume: bool,
    /// Train data-parallel on several devices of --device's kind, by index (e.g. `--device cuda
    /// --devices 0,1`): each global batch is split between them and the gradients are averaged
    /// with burn's collective all-reduce. On `cpu` the indices only count training threads.
    /// Several machines: see `train.ddp` in the config.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub devices: Option<Vec<usize>>,
}

impl Stage1Args {
    /// The config file over the preset (or the preset alone), then the flags.
    fn config(&self) -> anyhow::Result<Stage1Config> {
        let preset = self.preset.as_deref().and_then(ModelSettings::preset);
        let mut config = match &self.config {
            Some(path) => Stage1Config::load_over_preset(path, preset)?,
            None => Stage1Config { model: preset.unwrap_or_default(), ..Stage1Config::default() },
        };
        config.train.override_with(self.epochs, self.batch_size, self.seed);
        if self.no_trajectory {
            config.model.no_trajectory = true;
        }
        if self.no_trajectory_loss {
            config.loss.w_traj = 0.0;
        }
        Ok(config)
    }
}

pub fn train(cmd: TrainCommand) -> anyhow::Result<()> {
    match cmd {
        TrainCommand::Stage2(args) => super::personal::train_stage2(args),
        TrainCommand::Stage1(args) => {
            let job = Stage1Job {
                config: args.config()?,
                data: args.data,
                out: args.out,
                resume: args.resume,
                devices: args.devices,
            };
            let mut bars = Bars::new();
            let metrics = train_stage1(job, args.device, &AtomicBool::new(false), &mut bars.callback())?;
            drop(bars);
            match metrics.last() {
                Some(last) => print_json(last),
                None => {
                    eprintln!("nothing to do: the run already has all its epochs");
                    Ok(())
                }
            }
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  deper eval-fewshot --run runs/stage1 --data deper-data/synth")]
pub struct EvalFewShotArgs {
    /// Stage-1 run folder (or a stage-2 DEPER run's exported encoder).
    #[arg(long)]
    pub run: PathBuf,
    /// Dataset folder the run was trained on.
    #[arg(long)]
    pub data: PathBuf,
    /// Support triplets per unseen subject.
    #[arg(long, default_value_t = deper_core::split::DEFAULT_SHOTS)]
    pub shots: usize,
    #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
    pub device: DeviceKind,
    /// Print one JSON object (the default output is a short table).
    #[arg(long)]
    pub json: bool,
}

pub fn eval_fewshot(args: EvalFewShotArgs) -> anyhow::Result<()> {
    let report = run_eval_fewshot(&args.run, &args.data, args.shots, args.device)?;
    if args.json {
        return print_json(&report);
    }
    print_text(&format!(
        "seen subjects, held-out images: accuracy {:.3}, macro-F1 {:.3} ({} samples)\n\
         unseen subjects, {}-shot nearest centroid: accuracy {:.3}, macro-F1 {:.3} ({} subjects, {} queries)\n\
         trajectory box IoU {:.3} (per-subject mean trajectory: {:.3})\n",
        report.seen_acc,
        report.seen_macro_f1,
        report.seen_samples,
        report.shots,
        report.unseen_acc,
        report.unseen_macro_f1,
        report.unseen_subjects,
        report.unseen_queries,
        report.box_iou,
        report.mean_trajectory_iou
    ))
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  deper embed --run runs/stage1 --data deper-data/synth --out embeddings.json")]
pub struct EmbedArgs {
    /// Stage-1 run folder whose encoder computes z_s.
    #[arg(long)]
    pub run: PathBuf,
    /// Dataset folder with the subjects' triplets.
    #[arg(long)]
    pub data: PathBuf,
    /// Only these subjects (comma separated); default all.
    #[arg(long, value_delimiter = ',')]
    pub subjects: Option<Vec<String>>,
    /// Support triplets averaged per subject.
    #[arg(long, default_value_t = deper_core::split::DEFAULT_SHOTS)]
    pub shots: usize,
    /// JSON file to write the embeddings to.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
    pub device: DeviceKind,
}

pub fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    let emb = embed_subjects(&args.run, &args.data, args.subjects.as_deref(), args.shots, args.device)?;
    deper_core::dataset::write_json_atomic(&args.out, &emb)?;
    eprintln!("wrote {} subject embeddings (dim {}) to {}", emb.subjects.len(), emb.dim, args.out.display());
    Ok(())
}
