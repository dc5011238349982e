//! Argument parsing and dispatch of the `deper` command line.

mod bench;
mod dataset;
mod import;
mod personal;
mod serve;
mod synth;
pub(crate) mod train;
mod vlm;

pub(crate) use train::with_backend;
pub use train::DeviceKind;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Personalized image descriptions from attention sequences (DEPER).
#[derive(Debug, Parser)]
#[command(name = "deper", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate the synthetic personas world (scenes, subjects, traces, descriptions) and print its stats.
    Synth(synth::SynthArgs),
    /// Import a dataset from another format.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Inspect and split datasets.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Image patch features.
    #[command(subcommand)]
    Features(train::FeaturesCommand),
    /// Train DEPER.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Evaluate a stage-1 run: seen-subject accuracy, 5-shot unseen accuracy, trajectory box IoU.
    EvalFewshot(train::EvalFewShotArgs),
    /// Write one mean z_s per subject from K support triplets (works for subjects never trained on).
    Embed(train::EmbedArgs),
    /// Train the tiny frozen captioner (Qwen2-VL architecture, Hugging Face layout) on the synthetic world.
    PretrainVlm(personal::PretrainVlmArgs),
    /// Evaluate stage-2 runs and the zero-shot VLM: captions, metrics, report (Markdown, JSON, HTML).
    Eval(personal::EvalArgs),
    /// Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) of candidates against references, pycocoevalcap-style.
    Metrics(personal::MetricsArgs),
    /// The whole pipeline on the embedded defaults: world, captioner, stage 1, stage 2, baselines, report.
    Demo(personal::DemoArgs),
    /// Caption an image with a Hugging Face Qwen2-VL folder, optionally with persona vectors.
    Caption(vlm::CaptionArgs),
    /// Low-level VLM tools.
    #[command(subcommand)]
    Vlm(vlm::VlmCommand),
    /// Run the study server: researcher API, participant API, jobs, the browser app.
    Serve(serve::ServeArgs),
    /// Benchmarks that print throughput and memory.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Synth(args) => synth::run(args),
        Command::Import(cmd) => import::run(cmd),
        Command::Dataset(cmd) => dataset::run(cmd),
        Command::Features(cmd) => train::features(cmd),
        Command::Train(cmd) => train::train(cmd),
        Command::EvalFewshot(args) => train::eval_fewshot(args),
        Command::Embed(args) => train::embed(args),
        Command::PretrainVlm(args) => personal::pretrain_vlm(args),
        Command::Eval(args) => personal::eval(args),
        Command::Metrics(args) => personal::metrics(args),
        Command::Demo(args) => personal::demo(args),
        Command::Caption(args) => vlm::caption(args),
        Command::Vlm(cmd) => vlm::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Serve(args) => serve::run(args),
    }
}

/// Removes `dir` when it holds a deper dataset (and only then), for `--force`.
fn remove_existing_dataset(dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.join(deper_core::dataset::MANIFEST_FILE).is_file() {
        anyhow::bail!(
            "{} exists and is not a deper dataset; refusing to delete it (choose another --out)",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

/// Prints a value as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) fn default_data_dir() -> PathBuf {
    PathBuf::from("deper-data")
}
