//! `deper eval`: personalized-caption evaluation of stage-2 runs and the zero-shot VLM, written as the
//! report folder (`report.json`, `report.md`, `report_full.json`, `report.html`, `captions.json`).
//!
//! Protocol (the paper's): captions are generated greedily for the test images of seen subjects and
//! for the val/test triplets of unseen subjects (never their support triplets). Each generated caption
//! is scored against the description *its* subject wrote for that image (pycocoevalcap conventions,
//! `deper-eval`). Seen subjects' z_s is the mean over their training triplets; unseen subjects' the
//! mean over their K support triplets. The PT baseline has no persona for unseen subjects.
//! Subject accuracy comes from the (fine-tuned) encoder: its classifier for seen subjects, K-shot
//! nearest centroid (cosine) among the unseen subjects for unseen ones. The personalisation score asks,
//! for images several subjects described, whether each subject's reference ranks its own subject's
//! prediction first (CIDEr-D).

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use deper_core::dataset::{find_image_file, Dataset};
use deper_eval::captions::score_corpus;
use deper_eval::personalization::{personalization_score, PerSubject, SentenceMetric};
use deper_report::{
    CaptionExample, EmbeddingPoint, MetricRow, MetricTable, Report, Step, TrainingCurve, TrajectoryExample,
};
use deper_train::eval::run_model;
use deper_train::stage2::{self, evaluation_set, GeneratedCaption, Method, Stage2Info};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Metric keys of `report.json`, per split and method. `caption_nll` is the mean NLL per token
/// (nats) of the subjects' own test descriptions (their first `MAX_CAPTION_TOKENS` tokens and the
/// end-of-turn token, as stage 2 trains on) under the method's persona, teacher-forced: lower is
/// better, and unlike the caption metrics it carries no greedy-decoding noise.
pub const REPORT_KEYS: [&str; 6] = ["Bleu_4", "CIDEr", "METEOR", "ROUGE_L", "subject_acc", CAPTION_NLL];

/// The teacher-forced caption NLL's metric key.
pub const CAPTION_NLL: &str = "caption_nll";

/// What the evaluation reports as it goes.
#[derive(Debug)]
pub enum EvalProgress {
    Method { method: String, captions: usize },
    Caption,
}

/// A method's scores on one split.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MethodScores {
    pub metrics: BTreeMap<String, Option<f64>>,
    pub captions: usize,
}

/// The whole outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// split → method → scores.
    pub splits: BTreeMap<String, BTreeMap<String, MethodScores>>,
    pub report_json: Value,
}

/// Mean and sample standard deviation of each metric over the runs of one method on one split
/// (several stage-2 seeds, say). A metric without finite values has neither; the deviation needs
/// two values.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSpread {
    pub runs: usize,
    pub mean: BTreeMap<String, Option<f64>>,
    pub sd: BTreeMap<String, Option<f64>>,
}

/// The method a table row belongs to: the second and later runs of a method are named
/// `METHOD:RUN_FOLDER`.
fn base_method(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// split → method → spread, for the methods given as more than one run.
fn over_runs(
    splits: &BTreeMap<String, BTreeMap<String, MethodScores>>,
) -> BTreeMap<String, BTreeMap<String, RunSpread>> {
    let mut out: BTreeMap<String, BTreeMap<String, RunSpread>> = BTreeMap::new();
    for (split, methods) in splits {
        let mut groups: BTreeMap<&str, Vec<&MethodScores>> = BTreeMap::new();
        for (name, scores) in methods {
            groups.entry(base_method(name)).or_default().push(scores);
        }
        for (method, runs) in groups.into_iter().filter(|(_, runs)| runs.len() > 1) {
            let keys: std::collections::BTreeSet<&String> = runs.iter().flat_map(|r| r.metrics.keys()).collect();
            let mut spread = RunSpread { runs: runs.len(), ..RunSpread::default() };
            for key in keys {
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| r.metrics.get(key).copied().flatten())
                    .filter(|v| v.is_finite())
                    .collect();
                let n = values.len() as f64;
                let mean = (!values.is_empty()).then(|| values.iter().sum::<f64>() / n);
                let sd = mean
                    .filter(|_| values.len() > 1)
                    .map(|m| (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0)).sqrt());
                spread.mean.insert(key.clone(), mean);
                spread.sd.insert(key.clone(), sd);
            }
            out.entry(split.clone()).or_default().insert(method.to_string(), spread);
        }
    }
    out
}

struct MethodRun {
    name: String,
    run: PathBuf,
    info: Stage2Info,
}

fn method_name(info: &Stage2Info) -> &'static str {
    match info.method {
        Method::Pt => "pt",
        Method::Deper if info.stage1_info.as_ref().is_some_and(|i| i.config.model.no_trajectory) => "deper_no_traj",
        Method::Deper if info.stage1_info.as_ref().is_some_and(|i| i.config.loss.w_traj == 0.0) => {
            "deper_no_decoder_loss"
        }
        Method::Deper => "deper",
    }
}

/// Evaluates `runs` (stage-2 run folders) on `data` and writes the report into `out`. The VLM is the
/// one the runs recorded (all the same folder), or `vlm` when given.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Backend>(
    data: &Path,
    runs: &[PathBuf],
    out: &Path,
    shots: usize,
    vlm: Option<&Path>,
    command: &str,
    device: &B::Device,
    progress: &mut dyn FnMut(EvalProgress),
) -> anyhow::Result<Evaluation> {
    if runs.is_empty() {
        bail!("give at least one stage-2 run with --runs");
    }
    let mut methods: Vec<MethodRun> = Vec::new();
    for run in runs {
        let info = Stage2Info::load(run).with_context(|| format!("--runs {}", run.display()))?;
        let mut name = method_name(&info).to_string();
        if methods.iter().any(|m| m.name == name) {
            name = format!("{name}:{}", run.file_name().map_or_else(String::new, |f| f.to_string_lossy().into()));
        }
        methods.push(MethodRun { name, run: run.clone(), info });
    }
    let first = &methods[0];
    for m in &methods[1..] {
        if m.info.subjects != first.info.subjects {
            bail!(
                "runs {} and {} were trained on different subject lists ({} vs {} subjects); evaluate runs of one dataset together",
                first.run.display(),
                m.run.display(),
                first.info.subjects.len(),
                m.info.subjects.len()
            );
        }
    }
    let vlm_dir = match vlm {
        // Given: the runs were moved away from the VLM they recorded; their persona width is still
        // checked against it.
        Some(dir) => dir.to_path_buf(),
        None => {
            for m in &methods {
                if !Path::new(&m.info.vlm).is_dir() {
                    bail!(
                        "the VLM folder {} recorded in {} does not exist (moved?); name it with --vlm DIR",
                        m.info.vlm,
                        m.run.join("run.json").display()
                    );
                }
            }
            for m in &methods[1..] {
                if !stage2::same_folder(&m.info.vlm, &first.info.vlm) {
                    bail!(
                        "runs {} and {} use different VLMs ({} vs {})",
                        first.run.display(),
                        m.run.display(),
                        first.info.vlm,
                        m.info.vlm
                    );
                }
            }
            PathBuf::from(&first.info.vlm)
        }
    };
    let ds = Dataset::open(data)?;
    let references: BTreeMap<String, String> =
        ds.load_triplets()?.into_iter().map(|t| (t.id, t.description.text)).collect();

    let mut all_captions: BTreeMap<String, Vec<GeneratedCaption>> = BTreeMap::new();
    // method → split → mean caption NLL per token.
    let mut nll: BTreeMap<String, BTreeMap<&'static str, f64>> = BTreeMap::new();
    let mut subject_acc: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut embeddings: Vec<EmbeddingPoint> = Vec::new();
    let mut trajectories: Vec<TrajectoryExample> = Vec::new();
    let mut trajectory_rows: Vec<MetricRow> = Vec::new();

    // Zero-shot: the persona prompt with the persona token's own embedding.
    {
        let stage1 = methods.iter().find_map(|m| m.info.stage1_info.as_ref());
        let sd = stage2::prepare_stage2::<B>(data, &vlm_dir, stage1, device)?;
        let set = evaluation_set(&sd.prep);
        if set.is_empty() {
            bail!("{}: no test triplets to caption (check splits.json)", data.display());
        }
        progress(EvalProgress::Method { method: "zero_shot".into(), captions: set.len() });
        let caps = stage2::generate(&sd.frozen, &sd.prep, &references, &set, None, device, &mut || {
            progress(EvalProgress::Caption)
        })?;
        all_captions.insert("zero_shot".into(), caps);
        nll.insert("zero_shot".into(), nll_by_split(&sd, &set, None, device)?);
    }

    for m in &methods {
        let sd = stage2::prepare_stage2::<B>(data, &vlm_dir, m.info.stage1_info.as_ref(), device)?;
        let model = stage2::load_personalizer::<B>(&m.run, &m.info, device)?;
        let personas = stage2::subject_personas(&model, &m.info, &sd.prep, shots, device)?;
        let set: Vec<usize> = evaluation_set(&sd.prep)
            .into_iter()
            .filter(|&i| personas.contains_key(&sd.prep.samples[i].subject))
            .collect();
        progress(EvalProgress::Method { method: m.name.clone(), captions: set.len() });
        let caps = stage2::generate(&sd.frozen, &sd.prep, &references, &set, Some(&personas), device, &mut || {
            progress(EvalProgress::Caption)
        })?;
        all_captions.insert(m.name.clone(), caps);
        nll.insert(m.name.clone(), nll_by_split(&sd, &set, Some(&personas), device)?);

        if let Some(encoder) = &model.encoder {
            let prep = &sd.prep;
            let seen_set = prep.partition.test.clone();
            // One encoder pass over every held-out triplet: the seen subjects' test images first,
            // then the unseen subjects' queries and supports (few-shot centroids, embedding map).
            let held_out: Vec<usize> =
                seen_set.iter().chain(&prep.partition.unseen_queries).chain(&prep.partition.support).copied().collect();
            let outputs = run_model(encoder, prep, &held_out, 32, device)?;
            let position: HashMap<usize, usize> = held_out.iter().enumerate().map(|(k, &i)| (i, k)).collect();
            let unseen = deper_train::eval::unseen_fewshot_with(prep, shots, |ids| {
                ids.iter()
                    .map(|i| {
                        position.get(i).map(|&k| outputs.z_s[k].clone()).ok_or_else(|| {
                            deper_train::TrainError::Config(format!("triplet {i} is not among the held-out ones"))
                        })
                    })
                    .collect()
            })?;
            let n_seen = seen_set.len();
            let truth: Vec<usize> = seen_set.iter().map(|&i| prep.samples[i].label.unwrap_or(usize::MAX)).collect();
            let seen_acc =
                deper_eval::subjects::accuracy(&truth, &outputs.predicted_subject[..n_seen]).unwrap_or(f64::NAN);
            let unseen_acc = if unseen.queries == 0 || unseen.subjects == 0 { f64::NAN } else { unseen.accuracy };
            subject_acc.insert(m.name.clone(), (seen_acc, unseen_acc));
            let predicted: Vec<Vec<deper_core::BBox>> = outputs.boxes[..n_seen]
                .iter()
                .zip(&outputs.valid_steps[..n_seen])
                .map(|(b, &n)| b[..n.clamp(1, b.len())].to_vec())
                .collect();
            trajectory_rows
                .push(MetricRow { method: m.name.clone(), metrics: scanpath_scores(prep, &seen_set, &predicted)? });
            if !trajectory_rows.iter().any(|r| r.method == "mean_trajectory") {
                let means = deper_train::eval::mean_trajectories(prep, &prep.partition.train);
                let baseline: Vec<Vec<deper_core::BBox>> = seen_set
                    .iter()
                    .map(|&i| means.get(&prep.samples[i].subject).cloned().unwrap_or_default())
                    .collect();
                trajectory_rows.push(MetricRow {
                    method: "mean_trajectory".into(),
                    metrics: scanpath_scores(prep, &seen_set, &baseline)?,
                });
            }
            if m.name == "deper" || embeddings.is_empty() {
                embeddings = embedding_points(prep, &held_out, &outputs.z_s);
                // The steps the validity head keeps, as scored above (not all 30 decoded slots).
                trajectories = trajectory_examples(prep, &seen_set, &predicted, data)?;
            }
        }
    }

    // Scores per split and method.
    let mut splits: BTreeMap<String, BTreeMap<String, MethodScores>> = BTreeMap::new();
    for (method, caps) in &all_captions {
        for (split, seen) in [("seen", true), ("unseen", false)] {
            let part: Vec<&GeneratedCaption> = caps.iter().filter(|c| c.seen == seen).collect();
            if part.is_empty() {
                continue;
            }
            let mut refs = BTreeMap::new();
            let mut cands = BTreeMap::new();
            for c in &part {
                if c.reference.trim().is_empty() {
                    bail!("triplet {} has an empty reference description; cannot score it", c.triplet_id);
                }
                refs.insert(c.triplet_id.clone(), vec![c.reference.clone()]);
                cands.insert(c.triplet_id.clone(), c.prediction.clone());
            }
            let scores = score_corpus(&refs, &cands).with_context(|| format!("scoring {method} on {split}"))?;
            let mut metrics: BTreeMap<String, Option<f64>> =
                scores.corpus.iter().map(|(k, v)| (k.clone(), Some(*v))).collect();
            let acc = subject_acc.get(method).map(|(s, u)| if seen { *s } else { *u });
            metrics.insert("subject_acc".into(), acc.filter(|v| v.is_finite()));
            metrics.insert("personalization".into(), personalization(&part)?);
            metrics.insert(CAPTION_NLL.into(), nll.get(method).and_then(|by| by.get(split)).copied());
            splits
                .entry(split.into())
                .or_default()
                .insert(method.clone(), MethodScores { metrics, captions: part.len() });
        }
    }

    let mut report_json = serde_json::Map::new();
    for (split, methods) in &splits {
        let mut per_method = serde_json::Map::new();
        for (method, scores) in methods {
            let entry: serde_json::Map<String, Value> =
                REPORT_KEYS.iter().map(|k| (k.to_string(), json!(scores.metrics.get(*k).copied().flatten()))).collect();
            per_method.insert(method.clone(), Value::Object(entry));
        }
        report_json.insert(split.clone(), Value::Object(per_method));
    }
    let spreads = over_runs(&splits);
    if !spreads.is_empty() {
        let pick = |m: &BTreeMap<String, Option<f64>>| -> Value {
            REPORT_KEYS.iter().map(|k| (k.to_string(), json!(m.get(*k).copied().flatten()))).collect()
        };
        let value: serde_json::Map<String, Value> = spreads
            .iter()
            .map(|(split, methods)| {
                let per_method: serde_json::Map<String, Value> = methods
                    .iter()
                    .map(|(m, s)| (m.clone(), json!({"runs": s.runs, "mean": pick(&s.mean), "sd": pick(&s.sd)})))
                    .collect();
                (split.clone(), Value::Object(per_method))
            })
            .collect();
        report_json.insert("over_runs".into(), Value::Object(value));
    }
    let report_json = Value::Object(report_json);

    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report_json)? + "\n")?;
    std::fs::write(out.join("captions.json"), serde_json::to_string_pretty(&all_captions)? + "\n")?;

    let mut notes = vec![
        "Each caption is scored against the description its own subject wrote for that image (pycocoevalcap conventions; METEOR with exact + stem matching only, see deper-eval's README for its gap to the jar).".to_string(),
        format!("Unseen subjects: z_s is the mean over {shots} support triplets, no retraining. The PT baseline learns one embedding per training subject and cannot describe unseen subjects (n/a)."),
        "subject_acc: the encoder's classifier on held-out images of seen subjects; nearest-centroid over the unseen subjects' support means for unseen subjects.".to_string(),
        "personalization: fraction of (image, subject) pairs, on images described by several subjects, whose reference ranks its own subject's prediction first (CIDEr-D).".to_string(),
        format!("caption_nll: mean negative log-likelihood per token (nats; lower is better) of each subject's own test description (its first {} tokens and the end-of-turn token) given the image and the method's persona, teacher-forced; zero_shot keeps the persona token's own embedding. It scores the persona without greedy decoding's noise.", deper_train::persona_slot::MAX_CAPTION_TOKENS),
    ];
    if !spreads.is_empty() {
        notes.push("A method given as several runs (stage-2 seeds, say) has a row per run, the second and later named METHOD:RUN_FOLDER, and the mean and sample standard deviation over its runs in their own tables (`over_runs` in report.json).".into());
    }
    if !methods.iter().any(|m| m.info.method == Method::Pt) {
        notes.push("No PT run was given.".into());
    }
    let report = Report {
        title: "DEPER: personalized captions".into(),
        command: command.into(),
        created: now_utc(),
        tables: ["seen", "unseen"]
            .iter()
            .map(|split| MetricTable {
                split: split.to_string(),
                rows: table_rows(splits.get(*split), &all_captions, *split == "unseen"),
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
                    MetricTable {
                        split: format!("{split}, {label} over the runs of each method"),
                        rows,
                        lower_is_better,
                    }
                };
                [table("mean", &|s| s.mean.clone(), false), table("standard deviation", &|s| s.sd.clone(), true)]
            }))
            .chain((!trajectory_rows.is_empty()).then(|| MetricTable {
                split: "trajectory reconstruction (seen subjects, test images)".into(),
                rows: trajectory_rows.clone(),
                lower_is_better: ["dtw".to_string()].into_iter().collect(),
            }))
            .collect(),
        embeddings,
        trajectories,
        captions: caption_examples(&all_captions, data)?,
        curves: curves(&methods),
        notes,
    };
    report.write(out).with_context(|| format!("writing the report into {}", out.display()))?;
    Ok(Evaluation { splits, report_json })
}

/// Mean caption NLL per token of `set`'s seen and unseen triplets (a split with no triplets is absent).
fn nll_by_split<B: Backend>(
    sd: &stage2::Stage2Data<B>,
    set: &[usize],
    personas: Option<&BTreeMap<String, Vec<f32>>>,
    device: &B::Device,
) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let mut out = BTreeMap::new();
    for (split, seen) in [("seen", true), ("unseen", false)] {
        let part: Vec<usize> =
            set.iter().copied().filter(|&i| sd.prep.splits.is_unseen(&sd.prep.samples[i].subject) != seen).collect();
        let (sum, tokens) = stage2::caption_nll(&sd.frozen.vlm.model, sd, &part, personas, device)?;
        if tokens > 0 {
            out.insert(split, sum / tokens as f64);
        }
    }
    Ok(out)
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
fn scanpath_scores(
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
        let truth = &prep.samples[i].trajectory;
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

fn personalization(part: &[&GeneratedCaption]) -> anyhow::Result<Option<f64>> {
    let mut refs: PerSubject = BTreeMap::new();
    let mut preds: PerSubject = BTreeMap::new();
    for c in part {
        refs.entry(c.image.clone()).or_default().insert(c.subject.clone(), c.reference.clone());
        preds.entry(c.image.clone()).or_default().insert(c.subject.clone(), c.prediction.clone());
    }
    let score = personalization_score(&refs, &preds, &SentenceMetric::CiderD)?;
    Ok((score.pairs > 0).then_some(score.score))
}

/// The embedding map's points: the z_s of each of `samples` (indices into `prep.samples`).
fn embedding_points(prep: &deper_train::stage1::Prepared, samples: &[usize], z_s: &[Vec<f32>]) -> Vec<EmbeddingPoint> {
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
fn trajectory_examples(
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
        let gt = s.trajectory.steps.iter().map(Step::from).collect();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scores(values: &[(&str, Option<f64>)]) -> MethodScores {
        MethodScores { metrics: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(), captions: 10 }
    }

    #[test]
    fn over_runs_averages_the_runs_of_each_method() {
        let mut seen = BTreeMap::new();
        seen.insert("pt".to_string(), scores(&[("CIDEr", Some(0.9)), ("subject_acc", None)]));
        seen.insert("pt:pt_s1".to_string(), scores(&[("CIDEr", Some(0.7)), ("subject_acc", None)]));
        seen.insert("pt:pt_s2".to_string(), scores(&[("CIDEr", Some(0.8)), ("subject_acc", Some(f64::NAN))]));
        seen.insert("deper".to_string(), scores(&[("CIDEr", Some(0.5))]));
        seen.insert("deper_no_traj".to_string(), scores(&[("CIDEr", Some(0.4))]));
        seen.insert("deper_no_traj:b".to_string(), scores(&[("CIDEr", Some(0.6))]));
        let mut unseen = BTreeMap::new();
        unseen.insert("deper".to_string(), scores(&[("CIDEr", Some(0.1))]));
        let splits: BTreeMap<String, _> = [("seen".to_string(), seen), ("unseen".to_string(), unseen)].into();

        let spreads = over_runs(&splits);
        // One run of a method has no spread; a split without repeated methods has no entry.
        assert_eq!(spreads.keys().collect::<Vec<_>>(), ["seen"]);
        let seen = &spreads["seen"];
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["deper_no_traj", "pt"]);
        let pt = &seen["pt"];
        assert_eq!(pt.runs, 3);
        assert!((pt.mean["CIDEr"].unwrap() - 0.8).abs() < 1e-12);
        assert!((pt.sd["CIDEr"].unwrap() - 0.1).abs() < 1e-12, "sample deviation (n − 1)");
        // Not applicable or NaN in every run: no mean, no deviation.
        assert_eq!(pt.mean["subject_acc"], None);
        assert_eq!(pt.sd["subject_acc"], None);
        let ablation = &seen["deper_no_traj"];
        assert!((ablation.mean["CIDEr"].unwrap() - 0.5).abs() < 1e-12);
        assert!((ablation.sd["CIDEr"].unwrap() - 0.02f64.sqrt()).abs() < 1e-12);
    }
}
