//! Benchmarks that print throughput and peak memory.
//!
//! * `deper bench import`: generates LN-schema files (a small and a large one, same record
//!   shape), imports each into a fresh dataset exactly as `deper import ln` does, and prints
//!   records/s, MB/s and the peak resident memory of each run. Memory is flat in the file size
//!   when the large run peaks no higher than the small one.
//! * `deper bench stage1-memory` ([`stage1_memory`]): stage-1 training memory against the number
//!   of images in the feature cache.

use clap::Subcommand;
use deper_core::dataset::DatasetWriter;
use deper_core::import::ln::{import_ln, LnOptions};
use deper_core::rng::seeded;
use rand::Rng;
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod stage1_memory;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// LN import throughput (records/s) and peak memory on generated files.
    Import {
        /// Records in the large file (the small one has a fifth).
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// Trace points per record (real COCO-LN records are larger; see the README).
        #[arg(long, default_value_t = 90)]
        points: usize,
        /// Work folder that keeps the generated input files (default: a temporary folder, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print one JSON object instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Stage-1 training's peak memory on generated datasets and feature caches of two sizes
    /// (one triplet per image, a fresh process each): flat when the ratio is ~1.
    #[command(name = "stage1-memory")]
    Stage1Memory(stage1_memory::Stage1MemoryArgs),
}

#[derive(Debug, Serialize)]
struct ImportRun {
    records: usize,
    /// Distinct images (and so manifest entries, the one thing an import keeps per record kind).
    distinct_images: usize,
    file_mb: f64,
    seconds: f64,
    records_per_s: f64,
    mb_per_s: f64,
    /// Peak resident set during the import (Linux VmHWM after a reset), MiB.
    peak_rss_mb: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ImportBench {
    small: ImportRun,
    large: ImportRun,
    /// large peak RSS / small peak RSS: ~1 means memory is flat in the file size.
    rss_ratio_large_over_small: Option<f64>,
    target_records_per_s: f64,
    meets_target: bool,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Stage1Memory(args) => stage1_memory::run(args),
        BenchCommand::Import { records, points, dir, json } => {
            let tmp;
            let keep_inputs = dir.is_some();
            let work = match dir {
                Some(d) => {
                    std::fs::create_dir_all(&d)?;
                    d
                }
                None => {
                    tmp = tempfile::tempdir()?;
                    tmp.path().to_path_buf()
                }
            };
            let small = bench_one(&work, (records / 5).max(1), points, "small", keep_inputs)?;
            let large = bench_one(&work, records, points, "large", keep_inputs)?;

            let ratio = match (small.peak_rss_mb, large.peak_rss_mb) {
                (Some(s), Some(l)) if s > 0.0 => Some(l / s),
                _ => None,
            };
            let target = 50_000.0;
            let result = ImportBench {
                meets_target: large.records_per_s >= target,
                rss_ratio_large_over_small: ratio,
                target_records_per_s: target,
                small,
                large,
            };
            if json {
                super::print_json(&result)
            } else {
                for (name, r) in [("small", &result.small), ("large", &result.large)] {
                    println!(
                        "{name:>6}: {} records ({} images), {:.0} MB in {:.2} s: {:.0} records/s, {:.0} MB/s, peak RSS {}",
                        r.records,
                        r.distinct_images,
                        r.file_mb,
                        r.seconds,
                        r.records_per_s,
                        r.mb_per_s,
                        r.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.1} MiB"))
                    );
                }
                if let Some(ratio) = result.rss_ratio_large_over_small {
                    println!("peak RSS large/small: {ratio:.2}× for 5× the records");
                }
                println!("throughput vs target {target:.0} records/s: {:.2}×", result.large.records_per_s / target);
                Ok(())
            }
        }
    }
}

fn bench_one(work: &Path, records: usize, points: usize, tag: &str, keep_input: bool) -> anyhow::Result<ImportRun> {
    let input = work.join(format!("bench_{tag}_localized_narratives.jsonl"));
    write_ln_file(&input, records, points, 17)?;
    let out = work.join(format!("bench_{tag}_dataset"));
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    let bytes = std::fs::metadata(&input)?.len();
    reset_peak_rss();
    let start = Instant::now();
    let mut writer = DatasetWriter::create(&out, tag, "localized_narratives")?;
    let report = {
        let mut sink = |t| writer.push(&t);
        import_ln(&input, &LnOptions::default(), &mut sink, &mut |_| {})?
    };
    let distinct_images = writer.finish()?.images.len();
    let seconds = start.elapsed().as_secs_f64();
    let peak = peak_rss_mb();
    anyhow::ensure!(report.triplets == records, "imported {} of {records} records", report.triplets);
    std::fs::remove_dir_all(&out)?;
    if !keep_input {
        std::fs::remove_file(&input)?;
    }
    let mb = bytes as f64 / 1e6;
    Ok(ImportRun {
        records,
        distinct_images,
        file_mb: mb,
        seconds,
        records_per_s: records as f64 / seconds,
        mb_per_s: mb / seconds,
        peak_rss_mb: peak,
    })
}

/// Writes `records` LN narratives with `points` trace points in three segments each.
fn write_ln_file(path: &Path, records: usize, points: usize, seed: u64) -> anyhow::Result<()> {
    let mut rng = seeded(seed, "bench-ln");
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let words = ["a", "man", "is", "standing", "next", "to", "the", "red", "car", "in", "front", "of", "building"];
    let mut line = String::with_capacity(8192);
    for i in 0..records {
        line.clear();
        let image_id = 100_000 + i / 5;
        let annotator = i % 97;
        let n_utt = 8;
        let mut caption = String::new();
        let mut timed = String::new();
        for u in 0..n_utt {
            let w = words[rng.gen_range(0..words.len())];
            if u > 0 {
                caption.push(' ');
                timed.push(',');
            }
            caption.push_str(w);
            let t0 = u as f64 * 0.8;
            timed.push_str(&format!(r#"{{"utterance":"{w}","start_time":{t0:.3},"end_time":{:.3}}}"#, t0 + 0.6));
        }
        let mut traces = String::new();
        let per_segment = points.div_ceil(3).max(1);
        let (mut x, mut y, mut t) = (0.5f64, 0.5f64, 0.0f64);
        for s in 0..3 {
            if s > 0 {
                traces.push(',');
            }
            traces.push('[');
            for p in 0..per_segment {
                if p > 0 {
                    traces.push(',');
                }
                if rng.gen_bool(0.1) {
                    x = rng.gen_range(-0.02..1.02);
                    y = rng.gen_range(-0.02..1.02);
                } else {
                    x += rng.gen_range(-0.004..0.004);
                    y += rng.gen_range(-0.004..0.004);
                }
                t += 0.04;
                traces.push_str(&format!(r#"{{"x":{x:.4},"y":{y:.4},"t":{t:.3}}}"#));
            }
            traces.push(']');
            t += 0.5;
        }
        line.push_str(&format!(
            r#"{{"dataset_id":"mscoco","image_id":"{image_id}","annotator_id":{annotator},"caption":"{caption}","timed_caption":[{timed}],"traces":[{traces}],"voice_recording":"coco_val/coco_val_{image_id}_{annotator}.ogg"}}"#
        ));
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// Resets the kernel's peak-RSS counter of this process (Linux); a no-op elsewhere.
pub(super) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, MiB (Linux `VmHWM`).
pub(super) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
