//! `deper features extract`, `deper train stage1`, `deper eval-fewshot`, `deper embed`.

use crate::progress::{count_bar, EpochBar};
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use deper_train::stage1::{self, ModelSettings, Progress, Stage1Config};
use std::path::PathBuf;

/// Where tensors live. Backends are chosen here, at the entry point.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Wgpu,
    Cuda,
}

/// Runs `$body` with `$B` (inference backend), `$AD` (its autodiff) and `$device`
/// bound for the chosen device (and, in the second form, `$nth`: a function giving the device of
/// that kind with index `i`, for `--devices`); backends not compiled in give an error naming the
/// feature.
macro_rules! with_backend {
    ($kind:expr, $B:ident, $AD:ident, $device:ident => $body:expr) => {
        crate::cli::train::with_backend!($kind, $B, $AD, $device, _nth => $body)
    };
    ($kind:expr, $B:ident, $AD:ident, $device:ident, $nth:ident => $body:expr) => {
        match $kind {
            DeviceKind::Cpu => {
                type $B = burn::backend::NdArray;
                #[allow(dead_code)]
                type $AD = burn::backend::Autodiff<$B>;
                let $device = Default::default();
                // One CPU device: several "devices" are several training threads on it.
                let $nth = |_: usize| -> burn::backend::ndarray::NdArrayDevice { Default::default() };
                $body
            }
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => {
                type $B = burn::backend::Cuda;
                #[allow(dead_code)]
                type $AD = burn::backend::Autodiff<$B>;
                let $device = burn::backend::cuda::CudaDevice::default();
                crate::cli::train::probe_device::<$B>(&$device, "cuda")?;
                let $nth = burn::backend::cuda::CudaDevice::new;
                $body
            }
            #[cfg(feature = "wgpu")]
            DeviceKind::Wgpu => {
                type $B = burn::backend::Wgpu;
                #[allow(dead_code)]
                type $AD = burn::backend::Autodiff<$B>;
                let $device = burn::backend::wgpu::WgpuDevice::default();
                crate::cli::train::probe_device::<$B>(&$device, "wgpu")?;
                let $nth = burn::backend::wgpu::WgpuDevice::DiscreteGpu;
                $body
            }
            #[allow(unreachable_patterns)]
            other => Err(crate::cli::train::missing_backend(other)),
        }
    };
}
pub(crate) use with_backend;

/// Runs one tiny operation on `device`: GPU runtimes panic when no driver is
/// found, and that must be a clear error, not a crash.
#[allow(dead_code)] // used only with a GPU feature
pub(crate) fn probe_device<B: burn::tensor::backend::Backend>(device: &B::Device, name: &str) -> anyhow::Result<()> {
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        burn::tensor::Tensor::<B, 1>::ones([1], device).into_data().convert::<f32>().to_vec::<f32>().ok()
    }));
    std::panic::set_hook(previous_hook);
    match probe {
        Ok(Some(v)) if v == [1.0] => Ok(()),
        _ => anyhow::bail!(
            "--device {name}: the {name} runtime could not start on this machine (is a GPU driver installed and are its libraries on the library path?)"
        ),
    }
}

pub(crate) fn missing_backend(device: DeviceKind) -> anyhow::Error {
    let name = format!("{device:?}").to_lowercase();
    anyhow::anyhow!("--device {name}: this build has no {name} backend; rebuild with `cargo build --release -p deper-server --features {name}`")
}

#[derive(Debug, Subcommand)]
pub enum FeaturesCommand {
    /// Compute and cache image patch features for a dataset (DIR/features/).
    Extract {
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
            let ds = deper_core::dataset::Dataset::open(&data)?;
            let bar = count_bar(ds.manifest.images.len() as u64, "features");
            let meta = deper_train::features::extract(&ds, &backbone, &mut |done, _| bar.set_position(done as u64))?;
            bar.finish_and_clear();
            super::print_json(&meta)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Stage 1: the subject encoder (trajectory reconstruction + subject classification + contrastive).
    Stage1(Stage1Args),
    /// Stage 2: condition the frozen VLM on z_s through the adapter (or the per-subject PT baseline).
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
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// JSON file with `train`, `model` and `loss` sections (any subset of fields).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Network size preset: `paper` (D = 384) or `tiny` (D = 64, for CPUs and CI). The model
    /// fields a `--config` file sets go over it.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(ModelSettings::PRESETS))]
    pub preset: Option<String>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
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

pub fn train(cmd: TrainCommand) -> anyhow::Result<()> {
    match cmd {
        TrainCommand::Stage2(args) => super::personal::train_stage2(args),
        TrainCommand::Stage1(args) => {
            let preset = args.preset.as_deref().and_then(ModelSettings::preset);
            let mut config = match &args.config {
                Some(path) => Stage1Config::load_over_preset(path, preset)?,
                None => Stage1Config { model: preset.unwrap_or_default(), ..Stage1Config::default() },
            };
            config.train.override_with(args.epochs, args.batch_size, args.seed);
            if args.no_trajectory {
                config.model.no_trajectory = true;
            }
            if args.no_trajectory_loss {
                config.loss.w_traj = 0.0;
            }
            let metrics = run_stage1(&args.data, &args.out, config, args.resume, args.device, args.devices.as_deref())?;
            match metrics.last() {
                Some(last) => super::print_json(last),
                None => {
                    eprintln!("nothing to do: the run already has all its epochs");
                    Ok(())
                }
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalFewShotArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = deper_core::split::DEFAULT_SHOTS)]
    pub shots: usize,
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Print one JSON object (the default output is a short table).
    #[arg(long)]
    pub json: bool,
}

pub fn eval_fewshot(args: EvalFewShotArgs) -> anyhow::Result<()> {
    let report = with_backend!(args.device, B, AD, device => {
        deper_train::eval::eval_fewshot::<B>(&args.run, &args.data, args.shots, &device).map_err(anyhow::Error::from)
    })?;
    if args.json {
        return super::print_json(&report);
    }
    println!(
        "seen subjects, held-out images: accuracy {:.3}, macro-F1 {:.3} ({} samples)",
        report.seen_acc, report.seen_macro_f1, report.seen_samples
    );
    println!(
        "unseen subjects, {}-shot nearest centroid: accuracy {:.3}, macro-F1 {:.3} ({} subjects, {} queries)",
        report.shots, report.unseen_acc, report.unseen_macro_f1, report.unseen_subjects, report.unseen_queries
    );
    println!(
        "trajectory box IoU {:.3} (per-subject mean trajectory: {:.3})",
        report.box_iou, report.mean_trajectory_iou
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// Only these subjects (comma separated); default all.
    #[arg(long, value_delimiter = ',')]
    pub subjects: Option<Vec<String>>,
    /// Support triplets averaged per subject.
    #[arg(long, default_value_t = deper_core::split::DEFAULT_SHOTS)]
    pub shots: usize,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
}

pub fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    if args.shots == 0 {
        anyhow::bail!("--shots must be at least 1");
    }
    let emb = with_backend!(args.device, B, AD, device => {
        deper_train::eval::embed::<B>(&args.run, &args.data, args.subjects.as_deref(), args.shots, &device)
            .map_err(anyhow::Error::from)
    })?;
    deper_core::dataset::write_json_atomic(&args.out, &emb)?;
    eprintln!("wrote {} subject embeddings (dim {}) to {}", emb.subjects.len(), emb.dim, args.out.display());
    Ok(())
}

/// Stage-1 training with a progress bar and a summary line per epoch.
pub(crate) fn run_stage1(
    data: &std::path::Path,
    out: &std::path::Path,
    config: Stage1Config,
    resume: bool,
    device: DeviceKind,
    devices: Option<&[usize]>,
) -> anyhow::Result<Vec<stage1::EpochMetrics>> {
    if let Some(ids) = devices {
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if ids.is_empty() || (unique.len() != ids.len() && device != DeviceKind::Cpu) {
            anyhow::bail!("--devices {ids:?}: name each device once");
        }
    }
    let label = if config.model.no_trajectory { "stage 1 (no traj)" } else { "stage 1" };
    let mut bar = EpochBar::new(label);
    let mut on_progress = |p: Progress| match p {
        Progress::Start { epochs, batches_per_epoch, first_epoch } => bar.start(epochs, first_epoch, batches_per_epoch),
        Progress::Batch { epoch, loss, .. } => bar.batch(epoch, loss),
        Progress::Epoch(m) => bar.epoch(format!(
            "epoch {:>3}  loss {:.4}  val acc {:.3}  f1 {:.3}  box IoU {:.3}  {:.0} samples/s",
            m.epoch, m.train_loss, m.val_subject_acc, m.val_macro_f1, m.val_box_iou, m.samples_per_s
        )),
    };
    let metrics: Vec<stage1::EpochMetrics> = with_backend!(device, B, AD, device, nth => {
        let devices: Vec<_> = match devices {
            Some(ids) => ids.iter().map(|&i| nth(i)).collect(),
            None => vec![device],
        };
        let never = std::sync::atomic::AtomicBool::new(false);
        stage1::train_data_parallel::<AD>(data, out, config, resume, &devices, &mut on_progress, &never)
            .with_context(|| format!("training stage 1 into {}", out.display()))
    })?;
    bar.finish();
    Ok(metrics)
}
