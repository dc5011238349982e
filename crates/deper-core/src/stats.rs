//! Dataset statistics, computed in one streaming pass (`deper dataset stats`).

use crate::dataset::Dataset;
use crate::{Result, Split};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What `deper dataset stats DIR --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetStats {
    pub name: String,
    pub source: String,
    pub triplets: usize,
    /// Distinct subjects that have at least one triplet.
    pub subjects: usize,
    /// Distinct images that have at least one triplet.
    pub images: usize,
    /// Images listed in the manifest whose file is named (and so can be loaded).
    pub images_with_files: usize,
    pub empty_trajectories: usize,
    /// Mean steps per trajectory (empty ones included).
    pub mean_steps: f64,
    pub max_steps: usize,
    /// Mean step duration in seconds, over all steps.
    pub mean_step_duration: f64,
    pub mean_description_words: f64,
    /// Triplets per split (`train`, `val`, `test`; always all three keys).
    pub splits: BTreeMap<String, usize>,
    /// Triplets per subject.
    pub per_subject: BTreeMap<String, usize>,
    /// Triplets per trajectory source.
    pub sources: BTreeMap<String, usize>,
    /// Mean number of subjects describing an image.
    pub mean_subjects_per_image: f64,
}

pub fn dataset_stats(ds: &Dataset) -> Result<DatasetStats> {
    let mut splits: BTreeMap<String, usize> = Split::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect();
    let mut per_subject: BTreeMap<String, usize> = BTreeMap::new();
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    let mut images: BTreeSet<String> = BTreeSet::new();
    let (mut n, mut empty, mut steps, mut max_steps, mut words) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut duration = 0.0f64;
    for t in ds.triplets()? {
        let t = t?;
        n += 1;
        *splits.entry(t.split.as_str().to_string()).or_default() += 1;
        *per_subject.entry(t.subject.clone()).or_default() += 1;
        let source = serde_json::to_value(t.trajectory.source).ok().and_then(|v| v.as_str().map(String::from));
        *sources.entry(source.unwrap_or_default()).or_default() += 1;
        if !images.contains(&t.image) {
            images.insert(t.image.clone());
        }
        if t.trajectory.is_empty() {
            empty += 1;
        }
        steps += t.trajectory.steps.len();
        max_steps = max_steps.max(t.trajectory.steps.len());
        duration += t.trajectory.total_duration();
        words += t.description.text.split_whitespace().count();
    }
    let mean = |num: f64, den: usize| if den == 0 { 0.0 } else { num / den as f64 };
    Ok(DatasetStats {
        name: ds.manifest.name.clone(),
        source: ds.manifest.source.clone(),
        triplets: n,
        subjects: per_subject.len(),
        images: images.len(),
        images_with_files: ds.manifest.images.iter().filter(|i| i.file.is_some()).count(),
        empty_trajectories: empty,
        mean_steps: mean(steps as f64, n),
        max_steps,
        mean_step_duration: mean(duration, steps),
        mean_description_words: mean(words as f64, n),
        splits,
        per_subject,
        sources,
        mean_subjects_per_image: mean(n as f64, images.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::DatasetWriter;
    use crate::{AttentionStep, BBox, Description, Trajectory, TrajectorySource, Triplet};

    #[test]
    fn stats_count_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::create(dir.path(), "t", "test").unwrap();
        let step = |d: f64| AttentionStep {
            bbox: BBox::from_corners(0.1, 0.1, 0.2, 0.2),
            duration: d,
            start: None,
            words: vec![],
        };
        let mk = |id: &str, image: &str, subject: &str, steps: Vec<AttentionStep>, split: Split| Triplet {
            id: id.into(),
            image: image.into(),
            subject: subject.into(),
            description: Description { text: "a red  circle here".into(), utterances: vec![] },
            trajectory: Trajectory { source: TrajectorySource::Mouse, steps },
            split,
        };
        w.push(&mk("1", "i1", "a", vec![step(1.0), step(3.0)], Split::Train)).unwrap();
        w.push(&mk("2", "i1", "b", vec![], Split::Train)).unwrap();
        w.push(&mk("3", "i2", "a", vec![step(2.0)], Split::Test)).unwrap();
        w.finish().unwrap();
        let s = dataset_stats(&Dataset::open(dir.path()).unwrap()).unwrap();
        assert_eq!((s.triplets, s.subjects, s.images, s.empty_trajectories, s.max_steps), (3, 2, 2, 1, 2));
        assert!((s.mean_steps - 1.0).abs() < 1e-12);
        assert!((s.mean_step_duration - 2.0).abs() < 1e-12);
        assert!((s.mean_description_words - 4.0).abs() < 1e-12);
        assert_eq!(s.splits["train"], 2);
        assert_eq!(s.splits["val"], 0);
        assert_eq!(s.splits["test"], 1);
        assert_eq!(s.per_subject["a"], 2);
        assert_eq!(s.sources["mouse"], 3);
        assert!((s.mean_subjects_per_image - 1.5).abs() < 1e-12);
    }
}
