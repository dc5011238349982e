//! `deper pretrain-vlm`, `deper train stage2`, `deper eval` and `deper demo`: the personalized-caption loop.

use crate::cli::train::{with_backend, DeviceKind};
use crate::progress::{count_bar, EpochBar};
use anyhow::Context;
use clap::Args;
use deper_pipeline::demo::captioner::{self, CaptionerConfig, CaptionerProgress};
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
    let mut bar = EpochBar::new("captioner");
    let mut on_progress = |p: CaptionerProgress| match p {
        CaptionerProgress::Start { epochs, batches_per_epoch } => bar.start(epochs, 1, batches_per_epoch),
        CaptionerProgress::Batch { epoch, loss, .. } => bar.batch(epoch, loss),
        CaptionerProgress::Epoch(m) => bar.epoch(format!(
            "epoch {:>3}  loss {:.4}  val loss {:.4}  image gain {:.3}  {:.0} samples/s  e.g. \"{}\"",
            m.epoch, m.train_loss, m.val_loss, m.val_image_gain, m.samples_per_s, m.example
        )),
    };
    let epochs = with_backend!(device, B, AD, device => {
        captioner::pretrain::<AD>(data, out, config, &device, &mut on_progress)
            .with_context(|| format!("pretraining the captioner into {}", out.display()))
    })?;
    bar.finish();
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
    let metrics =
        run_stage2(&args.data, args.stage1.as_deref(), &args.vlm, &args.out, method, config, args.resume, args.device)?;
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
    let mut bar = EpochBar::new(label);
    let mut on_progress = |p: Stage2Progress| match p {
        Stage2Progress::Start { epochs, batches_per_epoch, first_epoch } => {
            bar.start(epochs, first_epoch, batches_per_epoch)
        }
        Stage2Progress::Batch { epoch, loss, .. } => bar.batch(epoch, loss),
        Stage2Progress::Epoch(m) => bar.epoch(format!(
            "epoch {:>3}  loss {:.4}  nll {:.4}  val nll {:.4}  {:.0} samples/s",
            m.epoch, m.train_loss, m.train_nll, m.val_nll, m.samples_per_s
        )),
    };
    let metrics = with_backend!(device, B, AD, device => {
        stage2::train::<AD>(data, stage1, vlm, out, method, config, resume, &device, &mut on_progress)
            .with_context(|| format!("training stage 2 into {}", out.display()))
    })?;
    bar.finish();
    Ok(metrics)
}

#[derive(Debug, Args)]
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
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let evaluation =
        run_eval(&args.data, &args.runs, &args.out, args.shots, args.vlm.as_deref(), &command, args.device)?;
    eprintln!("report: {}", args.out.join("report.html").display());
    super::print_json(&evaluation.report_json)
}

pub(crate) fn run_eval(
    data: &std::path::Path,
    runs: &[PathBuf],
    out: &std::path::Path,
    shots: usize,
    vlm: Option<&std::path::Path>,
    command: &str,
    device: DeviceKind,
) -> anyhow::Result<crate::evaluate::Evaluation> {
    use crate::evaluate::{evaluate, EvalProgress};
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut on_progress = |p: EvalProgress| match p {
        EvalProgress::Method { method, captions } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            bar = Some(count_bar(captions as u64, &method));
        }
        EvalProgress::Caption => {
            if let Some(b) = &bar {
                b.inc(1);
            }
        }
    };
    let evaluation = with_backend!(device, B, AD, device => {
        evaluate::<B>(data, runs, out, shots, vlm, command, &device, &mut on_progress)
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(evaluation)
}

#[derive(Debug, Args)]
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
    super::print_json(&scores)
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the world, the models, the runs and the report.
    #[arg(long, default_value_os_t = super::default_data_dir().join("demo"))]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Scenes in the synthetic world.
    #[arg(long, default_value_t = 160)]
    pub images: usize,
    /// Subjects in the synthetic world (a quarter of them unseen).
    #[arg(long, default_value_t = deper_synth::SynthConfig::default().subjects)]
    pub subjects: usize,
    /// Stage-1 epochs (each of the two stage-1 runs). 12: with caption positions the encoder is
    /// still at subject accuracy ~0.3 after 6 epochs of this schedule, ~0.8 after 12.
    #[arg(long, default_value_t = 12)]
    pub stage1_epochs: usize,
    /// Captioner pretraining epochs.
    #[arg(long, default_value_t = 10)]
    pub captioner_epochs: usize,
    /// Stage-2 epochs (each of the three stage-2 runs).
    #[arg(long, default_value_t = 4)]
    pub stage2_epochs: usize,
    /// Train each stage-2 method with this many seeds (0, 1, …; the runs of seed k > 0 are
    /// `runs/METHOD_seedK`); the report adds each method's mean and standard deviation over them.
    /// Raising it on a finished demo trains only the new seeds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub stage2_seeds: u64,
    /// Start over: delete --out first (only if it holds a previous demo).
    #[arg(long)]
    pub force: bool,
}

/// `deper demo`: world → captioner → stage 1 (with and without trajectories) → stage 2 (DEPER, DEPER
/// without trajectories, PT) → evaluation report. Finished steps are kept and skipped on a rerun.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let out = &args.out;
    let marker = out.join("demo.json");
    if args.force && out.exists() {
        if !marker.is_file() {
            anyhow::bail!("{} exists and is not a deper demo folder; refusing to delete it", out.display());
        }
        std::fs::remove_dir_all(out).with_context(|| out.display().to_string())?;
    }
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let settings = serde_json::json!({
        "images": args.images, "subjects": args.subjects, "stage1_epochs": args.stage1_epochs,
        "captioner_epochs": args.captioner_epochs, "stage2_epochs": args.stage2_epochs,
    });
    if marker.is_file() {
        let mut previous: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&marker)?)?;
        // Demos made before `--subjects` existed used the default.
        if let Some(map) = previous.as_object_mut() {
            map.entry("subjects").or_insert(deper_synth::SynthConfig::default().subjects.into());
            // More or fewer stage-2 seeds reuse everything already trained.
            map.remove("stage2_seeds");
        }
        if previous != settings {
            anyhow::bail!(
                "{} holds a demo made with other settings ({previous}); pass --force to start over",
                out.display()
            );
        }
    }
    let mut recorded = settings.clone();
    recorded["stage2_seeds"] = args.stage2_seeds.into();
    std::fs::write(&marker, serde_json::to_string_pretty(&recorded)? + "\n")?;
    let step = |n: usize, what: &str| eprintln!("[{n}/7 {:>4.0} s] {what}", started.elapsed().as_secs_f64());

    let world = out.join("world");
    if !world.join(deper_core::dataset::MANIFEST_FILE).is_file() {
        step(1, "synthetic world");
        super::synth::build(super::synth::SynthArgs {
            out: world.clone(),
            subjects: args.subjects,
            images: args.images,
            coverage: deper_synth::SynthConfig::default().coverage,
            seed: 0,
            unseen_fraction: 0.25,
            shots: deper_core::split::DEFAULT_SHOTS,
            force: false,
        })?;
    }
    let backbone = deper_train::features::PIXEL_STATS;
    if !deper_train::features::cache_paths(&world, backbone).0.is_file() {
        step(2, "image features");
        let ds = deper_core::dataset::Dataset::open(&world)?;
        deper_train::features::extract(&ds, backbone, &mut |_, _| {})?;
    }
    let captioner_dir = out.join("captioner");
    if !captioner_dir.join("model.safetensors").is_file() {
        step(3, "pretraining the tiny frozen captioner");
        if captioner_dir.exists() {
            std::fs::remove_dir_all(&captioner_dir)?;
        }
        let config = CaptionerConfig { epochs: args.captioner_epochs, ..CaptionerConfig::default() };
        run_pretrain(&world, &captioner_dir, &config, args.device)?;
    }
    let runs = out.join("runs");
    for (n, name, no_traj) in [(4, "stage1", false), (4, "stage1_no_traj", true)] {
        let run = runs.join(name);
        if done(&run, args.stage1_epochs) {
            continue;
        }
        step(n, &format!("stage 1 ({name})"));
        let mut config = deper_train::stage1::Stage1Config {
            model: deper_train::stage1::ModelSettings {
                no_trajectory: no_traj,
                ..deper_train::stage1::ModelSettings::tiny()
            },
            ..Default::default()
        };
        config.train.epochs = args.stage1_epochs;
        config.train.lr_schedule = deper_train::stage1::LrSchedule::Cosine;
        let resume = run.join(deper_train::stage1::RUN_FILE).is_file();
        super::train::run_stage1(&world, &run, config, resume, args.device, None)?;
    }
    let mut stage2_runs = Vec::new();
    let methods = [
        ("deper", Some("stage1"), Method::Deper),
        ("deper_no_traj", Some("stage1_no_traj"), Method::Deper),
        ("pt", None, Method::Pt),
    ];
    // Seed 0 of every method comes first, so its report rows keep the plain method names.
    for seed in 0..args.stage2_seeds {
        for (method_name, stage1, method) in methods {
            let name = if seed == 0 { method_name.to_string() } else { format!("{method_name}_seed{seed}") };
            let run = runs.join(&name);
            stage2_runs.push(run.clone());
            if done(&run, args.stage2_epochs) {
                continue;
            }
            step(5, &format!("stage 2 ({name})"));
            let config = Stage2Config { epochs: args.stage2_epochs, seed, ..Stage2Config::default() };
            let resume = run.join(deper_train::stage1::RUN_FILE).is_file();
            let s1 = stage1.map(|s| runs.join(s));
            run_stage2(&world, s1.as_deref(), &captioner_dir, &run, method, config, resume, args.device)?;
        }
    }
    step(6, "evaluation (captions for every method)");
    let report = out.join("report");
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    // The demo's own captioner, so a demo folder that was moved still evaluates.
    let shots = deper_core::split::DEFAULT_SHOTS;
    let evaluation = run_eval(&world, &stage2_runs, &report, shots, Some(&captioner_dir), &command, args.device)?;
    step(7, "done");
    eprintln!("report: {}  ({:.1} min)", report.join("report.html").display(), started.elapsed().as_secs_f64() / 60.0);
    super::print_json(&evaluation.report_json)
}

/// The demo's pieces `deper serve` runs on.
#[derive(Debug, Clone)]
pub struct DemoPaths {
    pub world: PathBuf,
    pub captioner: PathBuf,
    /// The stage-2 DEPER run (adapter; its fine-tuned encoder is the page's encoder).
    pub persona_run: PathBuf,
    pub encoder: PathBuf,
}

/// Builds the demo in `out` unless a finished one is there (its settings are kept: a demo made with
/// `deper demo --images 24` is served as it is), then names its parts.
pub fn ensure_demo(out: &std::path::Path, device: DeviceKind) -> anyhow::Result<DemoPaths> {
    // The defaults `deper demo` itself has, from its clap definition.
    let matches = <DemoArgs as Args>::augment_args(clap::Command::new("demo")).get_matches_from(["demo"]);
    let defaults = <DemoArgs as clap::FromArgMatches>::from_arg_matches(&matches)?;
    let mut args = DemoArgs { out: out.to_path_buf(), device, ..defaults };
    let marker = out.join("demo.json");
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let previous: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not a demo marker", marker.display()))?;
        let get =
            |key: &str, default: usize| previous.get(key).and_then(|v| v.as_u64()).map_or(default, |v| v as usize);
        args.images = get("images", args.images);
        args.subjects = get("subjects", args.subjects);
        args.stage1_epochs = get("stage1_epochs", args.stage1_epochs);
        args.captioner_epochs = get("captioner_epochs", args.captioner_epochs);
        args.stage2_epochs = get("stage2_epochs", args.stage2_epochs);
        args.stage2_seeds = get("stage2_seeds", args.stage2_seeds as usize) as u64;
    }
    if !out.join("report").join("report.json").is_file() {
        eprintln!(
            "first start: building the demo models in {} (once; `deper serve --no-demo` skips this)",
            out.display()
        );
        demo(args)?;
    }
    Ok(DemoPaths {
        world: out.join("world"),
        captioner: out.join("captioner"),
        persona_run: out.join("runs").join("deper"),
        encoder: out.join("runs").join("deper"),
    })
}

/// Whether a run folder finished `epochs` epochs.
fn done(run: &std::path::Path, epochs: usize) -> bool {
    std::fs::read_to_string(run.join(deper_train::stage1::STATE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("epochs_done")?.as_u64())
        .is_some_and(|e| e as usize >= epochs)
}
