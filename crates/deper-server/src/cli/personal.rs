//! `deper pretrain-vlm`, `deper train stage2`, `deper eval` and `deper demo`: the personalized-caption loop.

use crate::cli::train::{with_backend, DeviceKind};
use crate::progress::count_bar;
use anyhow::Context;
use clap::Args;
use deper_train::captioner::{self, CaptionerConfig, CaptionerProgress};
use deper_train::stage2::{self, Method, Stage2Config, Stage2Epoch, Stage2Progress};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PretrainVlmArgs {
    /// Dataset folder of the synthetic world (with scenes.jsonl).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder to write the Hugging Face model into.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// JSON file with any subset of the captioner settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
}

pub fn pretrain_vlm(args: PretrainVlmArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
            serde_json::from_str::<CaptionerConfig>(&text).with_context(|| path.display().to_string())?
        }
        None => CaptionerConfig::default(),
    };
    if let Some(e) = args.epochs {
        config.epochs = e;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    let epochs = run_pretrain(&args.data, &args.out, &config, args.device)?;
    if let Some(last) = epochs.last() {
        super::print_json(last)?;
    }
    Ok(())
}

pub(crate) fn run_pretrain(
    data: &std::path::Path,
    out: &std::path::Path,
    config: &CaptionerConfig,
    device: DeviceKind,
) -> anyhow::Result<Vec<captioner::CaptionerEpoch>> {
    let mut bar = None;
    let mut on_progress = |p: CaptionerProgress| match p {
        CaptionerProgress::Start { epochs, batches_per_epoch } => {
            bar = Some(count_bar((epochs * batches_per_epoch) as u64, "captioner"));
        }
        CaptionerProgress::Batch { epoch, loss, .. } => {
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(format!("ep {epoch} {loss:.3}"));
            }
        }
        CaptionerProgress::Epoch(m) => {
            if let Some(b) = &bar {
                b.println(format!(
                    "epoch {:>3}  loss {:.4}  val loss {:.4}  {:.0} samples/s  e.g. \"{}\"",
                    m.epoch, m.train_loss, m.val_loss, m.samples_per_s, m.example
                ));
            }
        }
    };
    let epochs = with_backend!(device, B, AD, device => {
        captioner::pretrain::<AD>(data, out, config, &device, &mut on_progress)
            .with_context(|| format!("pretraining the captioner into {}", out.display()))
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(epochs)
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum MethodArg {
    /// Subject encoder (from --stage1) + adapter.
    Deper,
    /// One learned persona-token embedding per subject ("VLM + PT").
    Pt,
}

#[derive(Debug, Args)]
pub struct Stage2Args {
    /// Dataset folder (with splits.json and cached features).
    #[arg(long)]
    pub data: PathBuf,
    /// The stage-1 run whose encoder gives z_s (method deper).
    #[arg(long)]
    pub stage1: Option<PathBuf>,
    /// The frozen VLM: a Hugging Face Qwen2-VL folder whose tokenizer has <|persona|>.
    #[arg(long)]
    pub vlm: PathBuf,
    /// Run folder to create (or continue with --resume).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = MethodArg::Deper)]
    pub method: MethodArg,
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// JSON file with any subset of the stage-2 settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub resume: bool,
}

pub fn train_stage2(args: Stage2Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Stage2Config::load(path)?,
        None => Stage2Config::default(),
    };
    if let Some(e) = args.epochs {
        config.epochs = e;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    let method = match args.method {
        MethodArg::Deper => Method::Deper,
        MethodArg::Pt => Method::Pt,
    };
    let metrics = run_stage2(&args.data, args.stage1.as_deref(), &args.vlm, &args.out, method, config, args.resume, args.device)?;
    if let Some(last) = metrics.last() {
        super::print_json(last)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run_stage2(
    data: &std::path::Path,
    stage1: Option<&std::path::Path>,
    vlm: &std::path::Path,
    out: &std::path::Path,
    method: Method,
    config: Stage2Config,
    resume: bool,
    device: DeviceKind,
) -> anyhow::Result<Vec<Stage2Epoch>> {
    let label = match method {
        Method::Deper => "stage 2",
        Method::Pt => "stage 2 (PT)",
    };
    let mut bar = None;
    let mut on_progress = |p: Stage2Progress| match p {
        Stage2Progress::Start { epochs, batches_per_epoch, first_epoch } => {
            let remaining = epochs.saturating_sub(first_epoch - 1) * batches_per_epoch;
            bar = Some(count_bar(remaining as u64, label));
        }
        Stage2Progress::Batch { epoch, loss, .. } => {
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(format!("ep {epoch} {loss:.3}"));
            }
        }
        Stage2Progress::Epoch(m) => {
            if let Some(b) = &bar {
                b.println(format!(
                    "epoch {:>3}  loss {:.4}  nll {:.4}  val nll {:.4}  {:.0} samples/s",
                    m.epoch, m.train_loss, m.train_nll, m.val_nll, m.samples_per_s
                ));
            }
        }
    };
    let metrics = with_backend!(device, B, AD, device => {
        stage2::train::<AD>(data, stage1, vlm, out, method, config, resume, &device, &mut on_progress)
            .with_context(|| format!("training stage 2 into {}", out.display()))
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(metrics)
}
