//! `deper features extract`, `deper train stage1|stage2`, `deper eval-fewshot`, `deper embed`.

use super::{print_json, print_text, Bars, DEVICE_HELP};
use clap::{Args, Subcommand};
use deper_pipeline::stage1::{embed_subjects, eval_fewshot as run_eval_fewshot, train_stage1, Stage1Job};
use deper_pipeline::DeviceKind;
use deper_train::features::{CacheDtype, ExtractSettings};
use deper_train::stage1::{ModelSettings, Stage1Config};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Debug, Subcommand)]
pub enum FeaturesCommand {
    /// Compute and cache image patch features for a dataset (DIR/features/NAME/), resuming an interrupted run.
    #[command(
        after_help = "Examples:\n  deper features extract --data deper-data/synth\n  deper features extract --data coco-ln --backbone dinov3 --model dinov3-convnext-tiny-pretrain-lvd1689m --device cuda --batch-size 64"
    )]
    Extract(ExtractArgs),
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Dataset folder.
    #[arg(long)]
    data: PathBuf,
    /// `pixel-stats` (parameter-free, for the synthetic world) or `dinov3` (a Hugging Face DINOv3
    /// ViT or ConvNeXt folder given with --model).
    #[arg(long, default_value = deper_train::features::PIXEL_STATS)]
    backbone: String,
    /// The DINOv3 checkpoint folder as downloaded (config.json, model.safetensors, preprocessor_config.json).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Square input side in pixels (the authors resize every image to 448×448).
    #[arg(long, default_value_t = deper_train::features::DEFAULT_IMAGE_SIZE)]
    image_size: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = ExtractSettings::default().batch_size)]
    batch_size: usize,
    /// Cache name under DATA/features/ (what `train stage1 --backbone` reads); defaults to --backbone.
    #[arg(long)]
    name: Option<String>,
    /// Values on disk: f32, or f16 for half the disk.
    #[arg(long, default_value = "f32")]
    dtype: CacheDtype,
    /// Images per shard file (default: about 256 MiB each); an interrupted extraction keeps its finished shards.
    #[arg(long)]
    images_per_shard: Option<usize>,
    #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
    device: DeviceKind,
}

pub fn features(cmd: FeaturesCommand) -> anyhow::Result<()> {
    match cmd {
        FeaturesCommand::Extract(args) => {
            let settings = ExtractSettings {
                backbone: args.backbone,
                name: args.name,
                model: args.model,
                image_size: args.image_size,
                batch_size: args.batch_size,
                dtype: args.dtype,
                images_per_shard: args.images_per_shard,
            };
            let mut bars = Bars::new();
            let meta = deper_pipeline::features::extract(&args.data, &settings, args.device, &mut bars.callback())?;
            drop(bars);
            print_json(&meta)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BackboneCommand {
    /// `last_hidden_state` for given pixels: IN holds `pixel_values` f32 [N, 3, H, W] (preprocessed, any H and W
    /// the model's stride divides); OUT gets `last_hidden_state` f32 [N, T, C]. The family is the folder's
    /// `model_type` (dinov3_vit, dinov3_convnext).
    #[command(
        after_help = "Example:\n  deper backbone forward --model dinov3-convnext-tiny-pretrain-lvd1689m --inputs pixels.safetensors --out hidden.safetensors"
    )]
    Forward {
        /// Hugging Face DINOv3 model folder.
        #[arg(long)]
        model: PathBuf,
        /// safetensors file with `pixel_values`.
        #[arg(long)]
        inputs: PathBuf,
        /// safetensors file to write `last_hidden_state` to.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
        device: DeviceKind,
    },
}

pub fn backbone(cmd: BackboneCommand) -> anyhow::Result<()> {
    match cmd {
        BackboneCommand::Forward { model, inputs, out, device } => {
            let shape = deper_pipeline::features::backbone_forward(&model, &inputs, &out, device)?;
            eprintln!("wrote {} (last_hidden_state {shape:?})", out.display());
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Stage 1: the subject encoder (trajectory reconstruction + subject classification + contrastive).
    #[command(
        after_help = "Examples:\n  deper train stage1 --data deper-data/synth --out runs/stage1 --preset tiny\n  deper train stage1 --data coco-ln --out runs/stage1 --preset paper --device cuda --devices 0,1\n  deper train stage1 --data coco-ln --out runs/stage1 --resume\n  deper train stage1 --data coco-ln --out runs/stage1 --preset paper --text-embeddings Qwen2-VL-2B-Instruct"
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
    /// Feature cache to read (DATA/features/NAME/, as `features extract` named it; overrides the config).
    #[arg(long)]
    pub backbone: Option<String>,
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
    /// Read captions as the authors do: tokenised with this VLM folder's tokenizer.json (Qwen2-VL,
    /// Qwen2.5-VL or Idefics3/SmolVLM) and embedded with its frozen input-embedding table
    /// (memory-mapped; only the rows used are read), cut to 256 tokens unless the config sets
    /// train.max_caption_tokens. run.json records the folder: eval-fewshot, embed and stage 2 read it.
    /// Default: a word vocabulary of the training captions.
    #[arg(long, value_name = "VLM_DIR")]
    pub text_embeddings: Option<PathBuf>,
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
        if let Some(backbone) = &self.backbone {
            config.train.backbone.clone_from(backbone);
        }
        if self.no_trajectory {
            config.model.no_trajectory = true;
        }
        if self.no_trajectory_loss {
            config.loss.w_traj = 0.0;
        }
        if let Some(dir) = &self.text_embeddings {
            config.train.text_embeddings = Some(dir.clone());
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

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use super::*;
    use clap::Parser;

    fn stage1_config(flags: &[&str]) -> Stage1Config {
        let args = ["deper", "train", "stage1", "--data", "d", "--out", "o"].iter().chain(flags);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Train(TrainCommand::Stage1(args)) => args.config().unwrap(),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn text_embeddings_flag_sets_the_vlm_text_side() {
        let config = stage1_config(&["--text-embeddings", "models/qwen"]);
        assert_eq!(config.train.text_embeddings, Some(PathBuf::from("models/qwen")));
        assert_eq!(config.train.caption_tokens(), deper_model::run::VLM_MAX_CAPTION_TOKENS);
        let config = stage1_config(&[]);
        assert_eq!(config.train.text_embeddings, None);
        assert_eq!(config.train.caption_tokens(), deper_model::run::DEFAULT_MAX_CAPTION_TOKENS);
    }
}
