//! Writes a demo report from synthetic data, to look at the layout:
//! `cargo run -p deper-report --example demo -- /tmp/deper-report-demo`.

use deper_report::{
    CaptionExample, EmbeddingPoint, MetricRow, MetricTable, Report, Step, TrainingCurve, TrajectoryExample,
};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "deper-report-demo".into()));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let subjects = 12;
    // Each subject: a centre in 32-D; triplet embeddings scatter around it.
    let centres: Vec<Vec<f32>> = (0..subjects).map(|_| (0..32).map(|_| rng.gen_range(-3.0..3.0)).collect()).collect();
    let embeddings = (0..subjects * 15)
        .map(|i| {
            let s = i % subjects;
            EmbeddingPoint {
                subject: format!("subject-{s:02}"),
                vector: centres[s].iter().map(|c| c + rng.gen_range(-0.8..0.8)).collect(),
                seen: s < 9,
                label: Some(format!("image-{i}")),
            }
        })
        .collect();
    let metrics = |vals: &[(&str, Option<f64>)]| vals.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let table = |split: &str, pt: Option<f64>| MetricTable {
        split: split.into(),
        rows: vec![
            MetricRow {
                method: "Qwen2-VL (zero-shot)".into(),
                metrics: metrics(&[
                    ("Bleu_1", Some(0.41)),
                    ("Bleu_4", Some(0.08)),
                    ("CIDEr", Some(0.21)),
                    ("subject_acc", None),
                ]),
            },
            MetricRow {
                method: "PT (per subject)".into(),
                metrics: metrics(&[
                    ("Bleu_1", pt),
                    ("Bleu_4", pt.map(|v| v / 5.0)),
                    ("CIDEr", pt),
                    ("subject_acc", None),
                ]),
            },
            MetricRow {
                method: "DEPER".into(),
                metrics: metrics(&[
                    ("Bleu_1", Some(0.52)),
                    ("Bleu_4", Some(0.13)),
                    ("CIDEr", Some(0.44)),
                    ("subject_acc", Some(0.71)),
                ]),
            },
        ],
        ..Default::default()
    };
    let step = |x: f64, y: f64, d: f64| Step { x1: x, y1: y, x2: x + 0.25, y2: y + 0.2, duration: d };
    let report = Report {
        title: "DEPER demo report".into(),
        command: "cargo run -p deper-report --example demo".into(),
        created: "demo".into(),
        tables: vec![table("seen", Some(0.47)), table("unseen", None)],
        embeddings,
        trajectories: vec![TrajectoryExample {
            image_id: "image-0".into(),
            subject: "subject-00".into(),
            image_png: Vec::new(),
            ground_truth: vec![step(0.1, 0.1, 0.4), step(0.5, 0.3, 1.5), step(0.3, 0.6, 0.8)],
            reconstructed: vec![step(0.12, 0.15, 0.5), step(0.45, 0.35, 1.1), step(0.35, 0.7, 0.6)],
        }],
        captions: vec![CaptionExample {
            image_id: "image-0".into(),
            image_png: None,
            subject: "subject-00".into(),
            reference: "A dog runs on the grass next to a red ball.".into(),
            predictions: vec![
                ("Qwen2-VL".into(), "A dog on a lawn.".into()),
                ("DEPER".into(), "A dog runs across the grass towards a red ball.".into()),
            ],
        }],
        curves: ["stage1", "stage1-cosine"]
            .iter()
            .enumerate()
            .flat_map(|(k, run)| {
                let loss = (0..20).map(|e| (e as f64, 2.0 * (-(e as f64) / (6.0 + k as f64)).exp() + 0.3)).collect();
                let acc =
                    (0..20).map(|e| (e as f64, 0.7 * (1.0 - (-(e as f64) / 5.0).exp()) + 0.05 * k as f64)).collect();
                [
                    TrainingCurve { run: run.to_string(), metric: "loss".into(), points: loss },
                    TrainingCurve { run: run.to_string(), metric: "subject_acc".into(), points: acc },
                ]
            })
            .collect(),
        notes: vec!["Synthetic data: the numbers mean nothing.".into()],
    };
    let paths = report.write(&dir)?;
    for p in paths {
        println!("{}", p.display());
    }
    Ok(())
}
