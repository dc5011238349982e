//! `deper bench stage1-memory`: does stage-1 training memory grow with the dataset?
//!
//! For each size, a dataset of that many images is generated (one triplet per image, 20
//! subjects, 10-step trajectories, no picture files) with a feature cache of random values in
//! the real cache format, then one epoch of stage 1 (tiny preset) runs in a fresh process of this
//! binary, which reports its peak resident memory (VmHWM). Features are read an image at a time,
//! so the two peaks should match; what still grows with the dataset is the triplet list itself.

use clap::Args;
use deper_core::dataset::DatasetWriter;
use deper_core::rng::seeded;
use deper_core::{AttentionStep, BBox, Description, ImageInfo, Split, Subject, Trajectory, TrajectorySource, Triplet};
use deper_train::features::{CacheDtype, CacheSource, CacheWriter, FeatureMeta};
use rand::Rng;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct Stage1MemoryArgs {
    /// Dataset sizes in images (= triplets), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2000,20000")]
    images: Vec<usize>,
    /// Feature grid side (grid × grid patches).
    #[arg(long, default_value_t = 14)]
    grid: usize,
    /// Feature width per patch (384 = DINOv3 ViT-S).
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Work folder (default: a temporary folder, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    /// Internal: train on the dataset in this folder and print the peak memory (the child process).
    #[arg(long, hide = true)]
    train_only: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct SizeRun {
    images: usize,
    cache_mb: f64,
    train_seconds: f64,
    peak_rss_mb: f64,
}

const CACHE: &str = "bench";

pub fn run(args: Stage1MemoryArgs) -> anyhow::Result<()> {
    if let Some(data) = &args.train_only {
        return train_and_report(data);
    }
    let tmp;
    let work = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut runs = Vec::new();
    for &n in &args.images {
        let data = work.join(format!("bench_{n}"));
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        let cache_bytes = generate(&data, n, args.grid, args.dim)?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["bench", "stage1-memory", "--train-only"])
            .arg(&data)
            .output()?;
        anyhow::ensure!(
            child.status.success(),
            "training on {n} images failed: {}",
            String::from_utf8_lossy(&child.stderr)
        );
        let (seconds, peak): (f64, f64) = serde_json::from_slice(&child.stdout)?;
        runs.push(SizeRun { images: n, cache_mb: cache_bytes as f64 / 1e6, train_seconds: seconds, peak_rss_mb: peak });
        std::fs::remove_dir_all(&data)?;
    }
    let ratio = match (runs.first(), runs.last()) {
        (Some(a), Some(b)) if a.peak_rss_mb > 0.0 => b.peak_rss_mb / a.peak_rss_mb,
        _ => f64::NAN,
    };
    if args.json {
        let out = serde_json::json!({"runs": runs, "rss_ratio_largest_over_smallest": ratio});
        return super::super::print_json(&out);
    }
    for r in &runs {
        println!(
            "{:>7} images  cache {:>8.1} MB  one epoch {:>7.1} s  peak RSS {:>7.1} MiB",
            r.images, r.cache_mb, r.train_seconds, r.peak_rss_mb
        );
    }
    println!("peak RSS ratio, largest / smallest: {ratio:.3}");
    Ok(())
}

/// The child: one epoch of stage 1 (tiny preset) on `data`, then `[seconds, peak MiB]` on stdout.
fn train_and_report(data: &Path) -> anyhow::Result<()> {
    let out = data.join("run");
    let mut config = deper_train::stage1::Stage1Config {
        model: deper_train::stage1::ModelSettings::preset("tiny").unwrap_or_default(),
        ..Default::default()
    };
    config.train.backbone = CACHE.into();
    config.train.override_with(Some(1), Some(32), Some(0));
    let job = deper_pipeline::stage1::Stage1Job { data: data.into(), out, config, resume: false, devices: None };
    super::reset_peak_rss();
    let start = Instant::now();
    deper_pipeline::stage1::train_stage1(job, deper_pipeline::DeviceKind::Cpu, &AtomicBool::new(false), &mut |_| {})?;
    let seconds = start.elapsed().as_secs_f64();
    let peak = super::peak_rss_mb().unwrap_or(f64::NAN);
    println!("{}", serde_json::to_string(&(seconds, peak))?);
    Ok(())
}

/// A dataset of `n` images, one triplet each, with splits and a random f16 feature cache; returns
/// the cache's size in bytes.
fn generate(data: &Path, n: usize, grid: usize, dim: usize) -> anyhow::Result<u64> {
    let mut rng = seeded(7, "bench-stage1-memory");
    let subjects = 20;
    let mut writer = DatasetWriter::create(data, "bench", "bench")?;
    for s in 0..subjects {
        writer.add_subject(Subject { id: format!("s{s:02}"), name: None, notes: None });
    }
    let words = ["a", "red", "car", "next", "to", "the", "tall", "building", "and", "tree", "person", "dog"];
    for i in 0..n {
        let image = format!("img{i:06}");
        writer.add_image(ImageInfo { id: image.clone(), file: None, width: Some(448), height: Some(448) });
        let steps = (0..10)
            .map(|_| {
                let (x, y) = (rng.gen::<f64>() * 0.8, rng.gen::<f64>() * 0.8);
                AttentionStep {
                    bbox: BBox { x1: x, y1: y, x2: x + 0.2, y2: y + 0.2 },
                    duration: 0.1 + rng.gen::<f64>(),
                    start: None,
                    words: vec![],
                }
            })
            .collect();
        let text: Vec<&str> = (0..24).map(|_| words[rng.gen_range(0..words.len())]).collect();
        let split = match i % 10 {
            0 => Split::Val,
            1 => Split::Test,
            _ => Split::Train,
        };
        writer.push(&Triplet {
            id: format!("t{i:06}"),
            image,
            subject: format!("s{:02}", i % subjects),
            description: Description { text: text.join(" "), utterances: vec![] },
            trajectory: Trajectory { source: TrajectorySource::Mouse, steps },
            split,
        })?;
    }
    writer.finish()?;
    deper_pipeline::dataset::split(data, &deper_core::split::SplitConfig::default())?;
    let meta = FeatureMeta {
        backbone: CACHE.into(),
        grid_h: grid,
        grid_w: grid,
        dim,
        images: 0,
        dtype: CacheDtype::F16,
        source: CacheSource {
            extractor: "random".into(),
            model_dir: String::new(),
            fingerprint: String::new(),
            image_size: [448, 448],
        },
    };
    let mut cache = CacheWriter::open(data, meta, None)?;
    for i in 0..n {
        let values: Vec<f32> = (0..grid * grid * dim).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
        cache.push(format!("img{i:06}"), values)?;
    }
    cache.finish()?;
    let bytes = std::fs::read_dir(deper_train::features::cache_dir(data, CACHE))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(bytes)
}
