//! The report folder: `report.json`, `captions.json`, and the Markdown/HTML report with its
//! tables, embedding map, trajectories, caption examples and training curves.

use super::captions::Collected;
use super::methods::MethodRun;
use super::scores::RunSpread;
use super::{EvalRequest, MethodScores, CAPTION_NLL, REPORT_KEYS};
use anyhow::Context;
use deper_core::dataset::find_image_file;
use deper_report::{
    CaptionExample, EmbeddingPoint, MetricRow, MetricTable, Report, Step, TrainingCurve, TrajectoryExample,
};
use deper_train::stage2::{GeneratedCaption, Method};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

type Splits = BTreeMap<String, BTreeMap<String, MethodScores>>;
type Spreads = BTreeMap<String, BTreeMap<String, RunSpread>>;

/// Writes `report.json`, `captions.json` and the report into `request.out`.
pub(super) fn write(
    request: &EvalRequest,
    methods: &[MethodRun],
    collected: &Collected,
    splits: &Splits,
    spreads: &Spreads,
    report_json: &Value,
) -> anyhow::Result<()> {
    let (out, data) = (&request.out, &request.data);
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(report_json)? + "\n")?;
    std::fs::write(out.join("captions.json"), serde_json::to_string_pretty(&collected.captions)? + "\n")?;
    let report = Report {
        title: "DEPER: personalized captions".into(),
        command: request.command.clone(),
        created: now_utc(),
        tables: tables(collected, splits, spreads),
        embeddings: collected.embeddings.clone(),
        trajectories: collected.trajectories.clone(),
        captions: caption_examples(&collected.captions, data)?,
        curves: curves(methods),
        notes: notes(methods, request.shots, spreads),
    };
    report.write(out).with_context(|| format!("writing the report into {}", out.display()))?;
    Ok(())
}

/// What the report's reader needs to know about the protocol.
fn notes(methods: &[MethodRun], shots: usize, spreads: &Spreads) -> Vec<String> {
    let mut notes = vec![
        "Each caption is scored against the description its own subject wrote for that image (pycocoevalcap conventions; METEOR with exact + stem matching only, see deper-eval's README for its gap to the jar).".to_string(),
        format!("Unseen subjects: z_s is the mean over {shots} support triplets, no retraining. The PT baseline learns one embedding per training subject and cannot describe unseen subjects (n/a)."),
        "subject_acc: the encoder's classifier on held-out images of seen subjects; nearest-centroid over the unseen subjects' support means for unseen subjects.".to_string(),
        "personalization: fraction of (image, subject) pairs, on images described by several subjects, whose reference ranks its own subject's prediction first (CIDEr-D).".to_string(),
        format!("caption_nll: mean negative log-likelihood per token (nats; lower is better) of each subject's own test description (its first {} tokens and the end-of-turn token) given the image and the method's persona, teacher-forced; zero_shot keeps the persona token's own embedding. It scores the persona without greedy decoding's noise.", deper_vlm::persona::MAX_CAPTION_TOKENS),
    ];
    if !spreads.is_empty() {
        notes.push("A method given as several runs (stage-2 seeds, say) has a row per run, the second and later named METHOD:RUN_FOLDER, and the mean and sample standard deviation over its runs in their own tables (`over_runs` in report.json).".into());
    }
    if !methods.iter().any(|m| m.info.method == Method::Pt) {
        notes.push("No PT run was given.".into());
    }
    notes
}

/// The seen and unseen tables, the mean and deviation over runs, and trajectory reconstruction.
fn tables(collected: &Collected, splits: &Splits, spreads: &Spreads) -> Vec<MetricTable> {
    let all_captions = &collected.captions;
    let trajectory_rows = &collected.trajectory_rows;
    ["seen", "unseen"]
        .iter()
        .map(|split| MetricTable {
            split: split.to_string(),
            rows: table_rows(splits.get(*split), all_captions, *split == "unseen"),
            lower_is_better: [CAPTION_NLL.to_string()].into_iter().collect(),
        })
        .chain(spreads.iter().flat_map(|(split, methods)| {
            let table = |label: &str, pick: &dyn Fn(&RunSpread) -> BTreeMap<String, Option<f64>>, lower: bool| {
                let rows: Vec<MetricRow> = methods
                    .iter()
                    .map(|(m, s)| MetricRow { method: format!("{m} ({} runs)", s.runs), metrics: pick(s) })
                    .collect();
                // The smallest spread is the one worth marking.
                let lower_is_better = if lower {
                    rows.iter().flat_map(|r| r.metrics.keys().cloned()).collect()
                } else {
                    [CAPTION_NLL.to_string()].into_iter().collect()
                };
                MetricTable { split: format!("{split}, {label} over the runs of each method"), rows, lower_is_better }
            };
            [table("mean", &|s| s.mean.clone(), false), table("standard deviation", &|s| s.sd.clone(), true)]
        }))
        .chain((!trajectory_rows.is_empty()).then(|| MetricTable {
            split: "trajectory reconstruction (seen subjects, test images)".into(),
            rows: trajectory_rows.clone(),
            lower_is_better: ["dtw".to_string()].into_iter().collect(),
        }))
        .collect()
}

fn table_rows(
    split: Option<&BTreeMap<String, MethodScores>>,
    all: &BTreeMap<String, Vec<GeneratedCaption>>,
    unseen: bool,
) -> Vec<MetricRow> {
    let mut rows = Vec::new();
    for method in all.keys() {
        match split.and_then(|s| s.get(method)) {
            Some(scores) => rows.push(MetricRow { method: method.clone(), metrics: scores.metrics.clone() }),
            // A method with no captions on this split (PT on unseen subjects): every metric n/a.
            None if unseen => rows.push(MetricRow {
                method: method.clone(),
                metrics: REPORT_KEYS.iter().map(|k| (k.to_string(), None)).collect(),
            }),
            None => {}
        }
    }
    rows
}

/// Box IoU per step, DTW of box centres (lower is better), ScanMatch-style sequence score and
/// edit-distance similarity on a 5×5 grid, averaged over `set`, of `predicted` against the truth.
pub(super) fn scanpath_scores(
    prep: &deper_train::stage1::Prepared,
    set: &[usize],
    predicted: &[Vec<deper_core::BBox>],
) -> anyhow::Result<BTreeMap<String, Option<f64>>> {
    use deper_eval::scanpath::{dtw, scanmatch, string_edit_distance, Fixation, ScanMatchParams};
    let centre =
        |b: &deper_core::BBox, d: f64| Fixation { x: (b.x1 + b.x2) / 2.0, y: (b.y1 + b.y2) / 2.0, duration: d };
    let (mut iou, mut steps) = (0.0, 0usize);
    let (mut d_sum, mut s_sum, mut e_sum, mut n) = (0.0, 0.0, 0.0, 0usize);
    for (&i, pred) in set.iter().zip(predicted) {
        let truth = &prep.samples[i].trajectory.to_trajectory();
        let (sum, count) = deper_train::eval::trajectory_iou(pred, truth);
        iou += sum;
        steps += count;
        if truth.steps.is_empty() || pred.is_empty() {
            continue;
        }
        let a: Vec<Fixation> = truth.steps.iter().map(|s| centre(&s.bbox, s.duration)).collect();
        let b: Vec<Fixation> = pred.iter().map(|p| centre(p, 1.0)).collect();
        d_sum += dtw(&a, &b)?;
        s_sum += scanmatch(&a, &b, &ScanMatchParams::default())?;
        e_sum += string_edit_distance(&a, &b, (5, 5))?.similarity;
        n += 1;
    }
    let mean = |v: f64, k: usize| (k > 0).then(|| v / k as f64);
    Ok([
        ("box_iou".to_string(), mean(iou, steps)),
        ("dtw".to_string(), mean(d_sum, n)),
        ("sequence_score".to_string(), mean(s_sum, n)),
        ("edit_similarity".to_string(), mean(e_sum, n)),
    ]
    .into_iter()
    .collect())
}

/// The embedding map's points: the z_s of each of `samples` (indices into `prep.samples`).
pub(super) fn embedding_points(
    prep: &deper_train::stage1::Prepared,
    samples: &[usize],
    z_s: &[Vec<f32>],
) -> Vec<EmbeddingPoint> {
    samples
        .iter()
        .zip(z_s)
        .map(|(&i, vector)| {
            let s = &prep.samples[i];
            EmbeddingPoint {
                subject: s.subject.clone(),
                vector: vector.clone(),
                seen: !prep.splits.is_unseen(&s.subject),
                label: Some(s.triplet_id.clone()),
            }
        })
        .collect()
}

fn read_image_png(data: &Path, image: &str) -> Option<Vec<u8>> {
    let dir = data.join("images");
    let file = find_image_file(&dir, image)?;
    std::fs::read(dir.join(file)).ok()
}

/// Ground truth vs the decoder's reconstruction for one test triplet per subject (up to 6).
pub(super) fn trajectory_examples(
    prep: &deper_train::stage1::Prepared,
    set: &[usize],
    boxes: &[Vec<deper_core::BBox>],
    data: &Path,
) -> anyhow::Result<Vec<TrajectoryExample>> {
    let mut out = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for (k, &i) in set.iter().enumerate() {
        let s = &prep.samples[i];
        if out.len() >= 6 || !done.insert(s.subject.clone()) {
            continue;
        }
        let Some(png) = read_image_png(data, &s.image) else { continue };
        let gt = s.trajectory.to_trajectory().steps.iter().map(Step::from).collect();
        let rec =
            boxes[k].iter().map(|b| Step { x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2, duration: f64::NAN }).collect();
        out.push(TrajectoryExample {
            image_id: s.image.clone(),
            subject: s.subject.clone(),
            image_png: png,
            ground_truth: gt,
            reconstructed: rec,
        });
    }
    Ok(out)
}

/// One image per subject with every method's caption beside the subject's own description.
fn caption_examples(all: &BTreeMap<String, Vec<GeneratedCaption>>, data: &Path) -> anyhow::Result<Vec<CaptionExample>> {
    let Some(zero) = all.get("zero_shot") else { return Ok(Vec::new()) };
    let mut done = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for c in zero {
        if !done.insert(c.subject.clone()) {
            continue;
        }
        let predictions = all
            .iter()
            .filter_map(|(m, caps)| {
                caps.iter().find(|x| x.triplet_id == c.triplet_id).map(|x| (m.clone(), x.prediction.clone()))
            })
            .collect();
        out.push(CaptionExample {
            image_id: c.image.clone(),
            image_png: read_image_png(data, &c.image),
            subject: c.subject.clone(),
            reference: c.reference.clone(),
            predictions,
        });
    }
    Ok(out)
}

/// Training curves of the stage-2 runs and their stage-1 runs.
fn curves(methods: &[MethodRun]) -> Vec<TrainingCurve> {
    let mut out = Vec::new();
    let mut read = |run: &Path, name: &str, keys: &[&str]| {
        let Ok(text) = std::fs::read_to_string(run.join("metrics.jsonl")) else { return };
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        for key in keys {
            let points: Vec<(f64, f64)> =
                lines.iter().filter_map(|v| Some((v.get("epoch")?.as_f64()?, v.get(*key)?.as_f64()?))).collect();
            if !points.is_empty() {
                out.push(TrainingCurve { run: name.to_string(), metric: key.to_string(), points });
            }
        }
    };
    for m in methods {
        read(&m.run, &format!("{} (stage 2)", m.name), &["train_nll", "val_nll"]);
        if let Some(s1) = &m.info.stage1 {
            read(Path::new(s1), &format!("{} (stage 1)", m.name), &["train_loss", "val_subject_acc", "val_box_iou"]);
        }
    }
    out
}

/// The current time as `YYYY-MM-DD HH:MM UTC` (civil-from-days, proleptic Gregorian).
fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}
