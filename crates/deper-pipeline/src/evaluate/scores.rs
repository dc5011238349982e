//! Caption scores per split and method, the spread over several runs of a method, and
//! `report.json`.

use super::captions::Collected;
use super::{MethodScores, CAPTION_NLL, REPORT_KEYS};
use anyhow::{bail, Context};
use deper_eval::captions::score_corpus;
use deper_eval::personalization::{personalization_score, PerSubject, SentenceMetric};
use deper_train::stage2::GeneratedCaption;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

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
pub(super) fn over_runs(
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

/// split → method → scores: each caption against its own subject's description, pycocoevalcap's
/// conventions, with the encoder's subject accuracy, the personalization score and the caption NLL.
pub(super) fn score_splits(collected: &Collected) -> anyhow::Result<BTreeMap<String, BTreeMap<String, MethodScores>>> {
    let mut splits: BTreeMap<String, BTreeMap<String, MethodScores>> = BTreeMap::new();
    for (method, caps) in &collected.captions {
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
            let acc = collected.subject_acc.get(method).map(|(s, u)| if seen { *s } else { *u });
            metrics.insert("subject_acc".into(), acc.filter(|v| v.is_finite()));
            metrics.insert("personalization".into(), personalization(&part)?);
            metrics.insert(CAPTION_NLL.into(), collected.nll.get(method).and_then(|by| by.get(split)).copied());
            splits
                .entry(split.into())
                .or_default()
                .insert(method.clone(), MethodScores { metrics, captions: part.len() });
        }
    }
    Ok(splits)
}

/// `report.json`: split → method → the [`REPORT_KEYS`], and `over_runs` with the mean and
/// deviation of the methods given as several runs.
pub(super) fn report_json(
    splits: &BTreeMap<String, BTreeMap<String, MethodScores>>,
    spreads: &BTreeMap<String, BTreeMap<String, RunSpread>>,
) -> Value {
    let pick = |m: &BTreeMap<String, Option<f64>>| -> Value {
        REPORT_KEYS.iter().map(|k| (k.to_string(), json!(m.get(*k).copied().flatten()))).collect()
    };
    let mut report_json = serde_json::Map::new();
    for (split, methods) in splits {
        let per_method: serde_json::Map<String, Value> =
            methods.iter().map(|(method, scores)| (method.clone(), pick(&scores.metrics))).collect();
        report_json.insert(split.clone(), Value::Object(per_method));
    }
    if !spreads.is_empty() {
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
    Value::Object(report_json)
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
