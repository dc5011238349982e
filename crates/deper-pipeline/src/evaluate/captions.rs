//! Captions of every method on the evaluation set, their caption NLL, and what each method's
//! subject encoder says about the held-out triplets (subject accuracy, reconstructed trajectories,
//! the embedding map).

use super::methods::MethodRun;
use super::report::{embedding_points, scanpath_scores, trajectory_examples};
use crate::progress::{Event, OnEvent};
use anyhow::bail;
use burn::tensor::backend::Backend;
use deper_core::dataset::Dataset;
use deper_model::Deper;
use deper_report::{EmbeddingPoint, MetricRow, TrajectoryExample};
use deper_train::eval::run_model;
use deper_train::stage2::{self, evaluation_set, GeneratedCaption};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Everything gathered method by method.
#[derive(Debug, Default)]
pub(super) struct Collected {
    /// Triplet id → its description (the reference each caption is scored against).
    references: BTreeMap<String, String>,
    /// Method → its captions.
    pub captions: BTreeMap<String, Vec<GeneratedCaption>>,
    /// Method → split → mean caption NLL per token.
    pub nll: BTreeMap<String, BTreeMap<&'static str, f64>>,
    /// Method → (seen, unseen) subject accuracy of its encoder.
    pub subject_acc: BTreeMap<String, (f64, f64)>,
    pub embeddings: Vec<EmbeddingPoint>,
    pub trajectories: Vec<TrajectoryExample>,
    pub trajectory_rows: Vec<MetricRow>,
}

impl Collected {
    /// Zero-shot: the persona prompt with the persona token's own embedding. Reads the dataset's
    /// descriptions first.
    pub fn zero_shot<B: Backend>(
        &mut self,
        data: &Path,
        vlm: &Path,
        methods: &[MethodRun],
        device: &B::Device,
        on: OnEvent<'_>,
    ) -> anyhow::Result<()> {
        let ds = Dataset::open(data)?;
        self.references = ds.load_triplets()?.into_iter().map(|t| (t.id, t.description.text)).collect();
        let stage1 = methods.iter().find_map(|m| m.info.stage1_info.as_ref());
        let sd = stage2::prepare_stage2::<B>(data, vlm, stage1, device)?;
        let set = evaluation_set(&sd.prep);
        if set.is_empty() {
            bail!("{}: no test triplets to caption (check splits.json)", data.display());
        }
        let caps = caption_set(&sd, &self.references, &set, None, "zero_shot", device, on)?;
        self.captions.insert("zero_shot".into(), caps);
        self.nll.insert("zero_shot".into(), nll_by_split(&sd, &set, None, device)?);
        Ok(())
    }

    /// One stage-2 run: its personas' captions and NLL, and its encoder's scores.
    pub fn method<B: Backend>(
        &mut self,
        data: &Path,
        vlm: &Path,
        m: &MethodRun,
        shots: usize,
        device: &B::Device,
        on: OnEvent<'_>,
    ) -> anyhow::Result<()> {
        let sd = stage2::prepare_stage2::<B>(data, vlm, m.info.stage1_info.as_ref(), device)?;
        let model = stage2::load_personalizer::<B>(&m.run, &m.info, device)?;
        let personas = stage2::subject_personas(&model, &m.info, &sd.prep, shots, device)?;
        let set: Vec<usize> = evaluation_set(&sd.prep)
            .into_iter()
            .filter(|&i| personas.contains_key(&sd.prep.samples[i].subject))
            .collect();
        let caps = caption_set(&sd, &self.references, &set, Some(&personas), &m.name, device, on)?;
        self.captions.insert(m.name.clone(), caps);
        self.nll.insert(m.name.clone(), nll_by_split(&sd, &set, Some(&personas), device)?);
        if let Some(encoder) = model.encoder() {
            self.encoder_scores(encoder, &sd.prep, &m.name, shots, data, device)?;
        }
        Ok(())
    }

    /// One encoder pass over every held-out triplet: the seen subjects' test images first, then the
    /// unseen subjects' queries and supports (few-shot centroids, embedding map).
    fn encoder_scores<B: Backend>(
        &mut self,
        encoder: &Deper<B>,
        prep: &deper_train::stage1::Prepared,
        name: &str,
        shots: usize,
        data: &Path,
        device: &B::Device,
    ) -> anyhow::Result<()> {
        let seen_set = prep.partition.test.clone();
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
        let seen_acc = deper_eval::subjects::accuracy(&truth, &outputs.predicted_subject[..n_seen]).unwrap_or(f64::NAN);
        let unseen_acc = if unseen.queries == 0 || unseen.subjects == 0 { f64::NAN } else { unseen.accuracy };
        self.subject_acc.insert(name.to_string(), (seen_acc, unseen_acc));
        let predicted: Vec<Vec<deper_core::BBox>> = outputs.boxes[..n_seen]
            .iter()
            .zip(&outputs.valid_steps[..n_seen])
            .map(|(b, &n)| b[..n.clamp(1, b.len())].to_vec())
            .collect();
        self.trajectory_rows
            .push(MetricRow { method: name.to_string(), metrics: scanpath_scores(prep, &seen_set, &predicted)? });
        if !self.trajectory_rows.iter().any(|r| r.method == "mean_trajectory") {
            let means = deper_train::eval::mean_trajectories(prep, &prep.partition.train);
            let baseline: Vec<Vec<deper_core::BBox>> =
                seen_set.iter().map(|&i| means.get(&prep.samples[i].subject).cloned().unwrap_or_default()).collect();
            self.trajectory_rows.push(MetricRow {
                method: "mean_trajectory".into(),
                metrics: scanpath_scores(prep, &seen_set, &baseline)?,
            });
        }
        if name == "deper" || self.embeddings.is_empty() {
            self.embeddings = embedding_points(prep, &held_out, &outputs.z_s);
            // The steps the validity head keeps, as scored above (not all 30 decoded slots).
            self.trajectories = trajectory_examples(prep, &seen_set, &predicted, data)?;
        }
        Ok(())
    }
}

/// Greedy captions of `set` under `personas` (none: zero-shot), one progress unit each.
fn caption_set<B: Backend>(
    sd: &stage2::Stage2Data<B>,
    references: &BTreeMap<String, String>,
    set: &[usize],
    personas: Option<&BTreeMap<String, Vec<f32>>>,
    method: &str,
    device: &B::Device,
    on: OnEvent<'_>,
) -> anyhow::Result<Vec<GeneratedCaption>> {
    let total = set.len();
    on(Event::Begin {
        label: method.to_string(),
        total,
        detail: json!({"event": "method", "method": method}),
        line: Some(format!("captioning: {method}")),
    });
    let mut done = 0;
    let caps = stage2::generate(&sd.frozen, &sd.prep, references, set, personas, device, &mut || {
        done += 1;
        on(Event::Advance {
            done,
            status: None,
            detail: json!({"event": "caption", "method": method, "done": done, "total": total}),
        });
    })?;
    on(Event::End);
    Ok(caps)
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
