//! `deper pretrain-vlm`, `deper train stage2`, `deper eval`, `deper metrics` and `deper demo`: the
//! personalized-caption loop.

use super::{print_json, Bars, DEVICE_HELP};
use anyhow::Context;
use clap::Args;
use deper_pipeline::demo::captioner::CaptionerConfig;
use deper_pipeline::demo::DemoSettings;
use deper_pipeline::evaluate::{evaluate, EvalRequest};
use deper_pipeline::stage2::{train_stage2 as run_stage2, Stage2Job};
use deper_pipeline::DeviceKind;
use deper_train::stage2::{Method, Stage2Config};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  deper pretrain-vlm --data deper-data/synth --out deper-data/captioner")]
pub struct PretrainVlmArgs {
    /// Dataset folder of the synthetic world (with scenes.jsonl).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder to write the Hugging Face model into.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
    pub device: DeviceKind,
    /// JSON file with any subset of the captioner settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Epochs (overrides the config).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Seed (overrides the config).
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
    let mut bars = Bars::new();
    let epochs =
        deper_pipeline::demo::pretrain_captioner(&args.data, &args.out, &config, args.device, &mut bars.callback())?;
    drop(bars);
    match epochs.last() {
        Some(last) => print_json(last),
        None => Ok(()),
    }
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
    /// What conditions the VLM: DEPER's encoder and adapter, or the per-subject PT baseline.
    #[arg(long, value_enum, default_value_t = MethodArg::Deper)]
    pub method: MethodArg,
    #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
    pub device: DeviceKind,
    /// JSON file with any subset of the stage-2 settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Epochs (overrides the config).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Seed (overrides the config).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue the run in --out from its last completed epoch.
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
    let job = Stage2Job {
        data: args.data,
        stage1: args.stage1,
        vlm: args.vlm,
        out: args.out,
        method: match args.method {
            MethodArg::Deper => Method::Deper,
            MethodArg::Pt => Method::Pt,
        },
        config,
        resume: args.resume,
    };
    let mut bars = Bars::new();
    let metrics = run_stage2(job, args.device, &AtomicBool::new(false), &mut bars.callback())?;
    drop(bars);
    match metrics.last() {
        Some(last) => print_json(last),
        None => Ok(()),
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  deper eval --data deper-data/demo/world --runs runs/deper runs/pt --out report\n  (open report/report.html)"
)]
pub struct EvalArgs {
    /// Dataset folder the runs were trained on.
    #[arg(long)]
    pub data: PathBuf,
    /// Stage-2 run folders (deper, deper without trajectory, pt); the zero-shot VLM is always added.
    #[arg(long, num_args = 1.., required = true)]
    pub runs: Vec<PathBuf>,
    /// Report folder (report.json, report.md, report.html, report_full.json, captions.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Support triplets per unseen subject.
    #[arg(long, default_value_t = deper_core::split::DEFAULT_SHOTS)]
    pub shots: usize,
    /// VLM folder, instead of the one the runs recorded (for run folders moved with their VLM).
    #[arg(long)]
    pub vlm: Option<PathBuf>,
    #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
    pub device: DeviceKind,
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let request = EvalRequest {
        data: args.data,
        runs: args.runs,
        out: args.out,
        shots: args.shots,
        vlm: args.vlm,
        command: command_line(),
    };
    let mut bars = Bars::new();
    let evaluation = evaluate(&request, args.device, &mut bars.callback())?;
    drop(bars);
    eprintln!("report: {}", request.out.join("report.html").display());
    print_json(&evaluation.report_json)
}

/// The command line as typed, for the report.
fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  deper metrics --refs refs.json --cands cands.json --out scores.json")]
pub struct MetricsArgs {
    /// `{"image_id": ["reference", …]}`
    #[arg(long)]
    pub refs: PathBuf,
    /// `{"image_id": "candidate"}`
    #[arg(long)]
    pub cands: PathBuf,
    /// Also write the JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `deper metrics`: BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) with pycocoevalcap's conventions.
pub fn metrics(args: MetricsArgs) -> anyhow::Result<()> {
    let scores = deper_eval::captions::score_files(&args.refs, &args.cands)?;
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&scores)? + "\n")
            .with_context(|| out.display().to_string())?;
    }
    print_json(&scores)
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  deper demo                               ~20 minutes on 2 CPU cores; report in deper-data/demo/report\n  deper demo --stage2-seeds 4              spreads over four stage-2 seeds (reuses what is trained)\n  deper demo --out deper-data/small --images 24 --stage1-epochs 2 --captioner-epochs 2 --stage2-epochs 1"
)]
pub struct DemoArgs {
    /// Folder for the world, the models, the runs and the report.
    #[arg(long, default_value_os_t = super::default_data_dir().join("demo"))]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
    pub device: DeviceKind,
    /// Scenes in the synthetic world.
    #[arg(long, default_value_t = DemoSettings::default().images)]
    pub images: usize,
    /// Subjects in the synthetic world (a quarter of them unseen).
    #[arg(long, default_value_t = DemoSettings::default().subjects)]
    pub subjects: usize,
    /// Stage-1 epochs (each of the two stage-1 runs).
    #[arg(long, default_value_t = DemoSettings::default().stage1_epochs)]
    pub stage1_epochs: usize,
    /// Captioner pretraining epochs.
    #[arg(long, default_value_t = DemoSettings::default().captioner_epochs)]
    pub captioner_epochs: usize,
    /// Stage-2 epochs (each of the stage-2 runs).
    #[arg(long, default_value_t = DemoSettings::default().stage2_epochs)]
    pub stage2_epochs: usize,
    /// Train each stage-2 method with this many seeds (0, 1, …; the runs of seed k > 0 are
    /// `runs/METHOD_seedK`); the report adds each method's mean and standard deviation over them.
    /// Raising it on a finished demo trains only the new seeds.
    #[arg(long, default_value_t = DemoSettings::default().stage2_seeds, value_parser = clap::value_parser!(u64).range(1..))]
    pub stage2_seeds: u64,
    /// Start over: delete --out first (only if it holds a previous demo).
    #[arg(long)]
    pub force: bool,
}

/// `deper demo`: world → captioner → stage 1 (with and without trajectories) → stage 2 (DEPER, DEPER
/// without trajectories, PT) → evaluation report. Finished steps are kept and skipped on a rerun.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let settings = DemoSettings {
        images: args.images,
        subjects: args.subjects,
        stage1_epochs: args.stage1_epochs,
        captioner_epochs: args.captioner_epochs,
        stage2_epochs: args.stage2_epochs,
        stage2_seeds: args.stage2_seeds,
    };
    let mut bars = Bars::new();
    let evaluation = deper_pipeline::demo::run(
        &args.out,
        &settings,
        args.force,
        args.device,
        &command_line(),
        &mut bars.callback(),
    )?;
    drop(bars);
    eprintln!(
        "report: {}  ({:.1} min)",
        args.out.join("report").join("report.html").display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    print_json(&evaluation.report_json)
}
