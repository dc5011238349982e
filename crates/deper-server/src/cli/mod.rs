//! Argument parsing and dispatch of the `deper` command line: clap definitions and progress bars
//! over `deper_pipeline`, which holds every stage.

mod bench;
mod dataset;
mod import;
mod personal;
mod progress;
mod serve;
mod synth;
mod train;
mod vlm;

pub use progress::Bars;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

/// Help text of every `--device` option.
const DEVICE_HELP: &str = "Device: cpu, wgpu (a build with `--features wgpu`) or cuda (a build with `--features cuda`)";

/// Personalized image descriptions from attention sequences (DEPER): run browser studies that record
/// where people look and what they say, train a subject encoder on (image, description, trajectory)
/// triplets, and personalize a frozen vision-language model's captions from a few examples.
#[derive(Debug, Parser)]
#[command(
    name = "deper",
    version,
    propagate_version = true,
    after_help = "Start here:\n  deper serve                  the study server with the demo study and caption preview\n  deper demo                   the whole pipeline on the synthetic world, with a report\n\nYour own data:\n  deper import ln --jsonl narratives.jsonl --images IMAGES --out data\n  deper dataset split data\n  deper features extract --data data\n  deper train stage1 --data data --out runs/stage1 --preset paper --device cuda\n  deper train stage2 --data data --stage1 runs/stage1 --vlm Qwen2-VL-2B-Instruct --out runs/stage2\n  deper eval --data data --runs runs/stage2 --out report"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate the synthetic personas world (scenes, subjects, traces, descriptions) and print its stats.
    Synth(synth::SynthArgs),
    /// Import a dataset from another format (Localized Narratives, the authors' JSON, raw gaze).
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Inspect and split datasets.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Image patch features.
    #[command(subcommand)]
    Features(train::FeaturesCommand),
    /// Low-level image backbone tools (DINOv3 ViT and ConvNeXt folders as downloaded).
    #[command(subcommand)]
    Backbone(train::BackboneCommand),
    /// Train DEPER: stage 1 (the subject encoder) and stage 2 (z_s → adapter → frozen VLM).
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
    /// Caption an image with a Hugging Face VLM folder, optionally with persona vectors.
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
        Command::Backbone(cmd) => train::backbone(cmd),
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

/// Prints a value as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    print_text(&(serde_json::to_string_pretty(value)? + "\n"))
}

/// Writes to stdout. A reader that went away (`deper … | head -1`) ends the output quietly: the
/// write error is not a failure of the command, and `println!` would panic on it.
fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub(crate) fn default_data_dir() -> PathBuf {
    PathBuf::from("deper-data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and positional argument of every subcommand, by its path (`deper train stage1 --epochs`).
    fn arguments(command: &clap::Command, path: &str, out: &mut Vec<(String, bool)>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let has_help = arg.get_help().is_some_and(|h| !h.to_string().trim().is_empty());
            out.push((format!("{path} --{id}"), has_help));
        }
        for sub in command.get_subcommands() {
            arguments(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_says_what_it_does() {
        let command = Cli::command();
        command.clone().debug_assert();
        let mut all = Vec::new();
        arguments(&command, "deper", &mut all);
        assert!(all.len() > 50, "{}", all.len());
        let missing: Vec<&String> = all.iter().filter(|(_, has)| !has).map(|(name, _)| name).collect();
        assert!(missing.is_empty(), "options without help text: {missing:?}");
    }

    #[test]
    fn the_main_commands_show_examples() {
        let command = Cli::command();
        let about = command.get_about().map(|a| a.to_string()).unwrap_or_default();
        assert!(about.starts_with("Personalized image descriptions from attention sequences"), "{about}");
        assert!(command.get_after_help().is_some());
        for path in
            [&["serve"][..], &["demo"], &["import", "ln"], &["train", "stage1"], &["train", "stage2"], &["eval"]]
        {
            let mut sub = &command;
            for name in path {
                sub = sub.find_subcommand(name).unwrap_or_else(|| panic!("no subcommand {path:?}"));
            }
            let help = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.contains(&format!("deper {}", path.join(" "))), "{path:?} has no example: {help}");
        }
    }
}
