//! Deterministic splits.
//!
//! * Images go to train/val/test by a stable hash of (seed, image id), so all
//!   triplets of one image share a split and a new image never moves others.
//! * Subjects are seen (used in training) or unseen (held out), by an explicit
//!   list or by a fraction chosen with a stable hash of (seed, subject id).
//! * Each unseen subject gets a K-shot support set (default K = 5): the K
//!   train-split triplets with the smallest hash of (seed, triplet id). Its
//!   val/test triplets are the queries. Too few triplets is an error that
//!   names the subject.

use crate::dataset::{write_json_atomic, Dataset, SPLITS_FILE, TRIPLETS_FILE};
use crate::rng::{stable_hash, stable_unit};
use crate::{Error, Result, Split, Triplet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

pub const DEFAULT_SHOTS: usize = 5;

/// Fractions of images in val and test; the rest is train.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitFractions {
    pub val: f64,
    pub test: f64,
}

impl Default for SplitFractions {
    fn default() -> Self {
        Self { val: 0.1, test: 0.1 }
    }
}

impl SplitFractions {
    pub fn validate(&self) -> Result<()> {
        let ok = |f: f64| f.is_finite() && (0.0..1.0).contains(&f);
        if !ok(self.val) || !ok(self.test) || self.val + self.test >= 1.0 {
            return Err(Error::invalid(format!(
                "split fractions val={} test={} must each be in [0, 1) and sum to less than 1",
                self.val, self.test
            )));
        }
        Ok(())
    }
}

/// The split of an image.
pub fn image_split(seed: u64, image_id: &str, fractions: &SplitFractions) -> Split {
    let u = stable_unit(seed, &format!("split:{image_id}"));
    if u < fractions.test {
        Split::Test
    } else if u < fractions.test + fractions.val {
        Split::Val
    } else {
        Split::Train
    }
}

/// How unseen subjects are chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnseenChoice {
    /// Exactly these subject ids.
    List(Vec<String>),
    /// This fraction of subjects, rounded to the nearest count.
    Fraction(f64),
}

/// Picks the unseen subjects among `subjects` (sorted on return).
pub fn choose_unseen(subjects: &[String], choice: &UnseenChoice, seed: u64) -> Result<Vec<String>> {
    let known: BTreeSet<&str> = subjects.iter().map(String::as_str).collect();
    let mut chosen = match choice {
        UnseenChoice::List(list) => {
            for s in list {
                if !known.contains(s.as_str()) {
                    return Err(Error::invalid(format!("unseen subject `{s}` is not in the dataset")));
                }
            }
            list.clone()
        }
        UnseenChoice::Fraction(f) => {
            if !f.is_finite() || !(0.0..1.0).contains(f) {
                return Err(Error::invalid(format!("unseen fraction {f} must be in [0, 1)")));
            }
            let k = (subjects.len() as f64 * f).round() as usize;
            let mut ranked: Vec<String> = known.iter().map(|s| s.to_string()).collect();
            ranked.sort_by_cached_key(|s| (stable_hash(seed, format!("unseen:{s}").as_bytes()), s.clone()));
            ranked.truncate(k);
            ranked
        }
    };
    chosen.sort();
    chosen.dedup();
    if !subjects.is_empty() && chosen.len() >= known.len() {
        return Err(Error::invalid("every subject would be unseen: no subject is left for training"));
    }
    Ok(chosen)
}

/// Everything `splits.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Splits {
    pub seed: u64,
    pub fractions: SplitFractions,
    pub shots: usize,
    pub seen_subjects: Vec<String>,
    pub unseen_subjects: Vec<String>,
    /// Triplet ids of each unseen subject's support set.
    pub support: BTreeMap<String, Vec<String>>,
    /// Triplets per split.
    pub counts: BTreeMap<String, usize>,
}

impl Splits {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(SPLITS_FILE);
        let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
            // The usual cause is a dataset nobody has split yet: say what to run.
            std::io::ErrorKind::NotFound => Error::invalid(format!(
                "{}: not found; run `deper dataset split {}` first",
                path.display(),
                dir.display()
            )),
            _ => Error::io(&path, e),
        })?;
        Ok(crate::import::parse_json_record(&text, &path, 1)?)
    }

    pub fn is_unseen(&self, subject: &str) -> bool {
        self.unseen_subjects.binary_search_by(|s| s.as_str().cmp(subject)).is_ok()
    }
}

/// Settings of [`apply_splits`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    pub seed: u64,
    pub fractions: SplitFractions,
    pub unseen: UnseenChoice,
    pub shots: usize,
    /// Keep each triplet's existing split (e.g. the official LN files) instead of re-assigning by image.
    pub keep_image_splits: bool,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            fractions: SplitFractions::default(),
            unseen: UnseenChoice::Fraction(0.25),
            shots: DEFAULT_SHOTS,
            keep_image_splits: false,
        }
    }
}

/// Keeps the K smallest-hash train triplets per subject, in bounded memory.
#[derive(Debug, Default)]
struct SupportPicker {
    best: BTreeMap<String, Vec<(u64, String)>>,
}

impl SupportPicker {
    fn offer(&mut self, seed: u64, shots: usize, t: &Triplet) {
        let entry = self.best.entry(t.subject.clone()).or_default();
        entry.push((stable_hash(seed, format!("support:{}", t.id).as_bytes()), t.id.clone()));
        entry.sort();
        entry.truncate(shots);
    }
}

/// Re-assigns image splits in `ds`'s triplets (unless told to keep them), picks unseen subjects and
/// support sets, and writes `splits.json`. Streams the triplets twice.
pub fn apply_splits(ds: &Dataset, config: &SplitConfig) -> Result<Splits> {
    config.fractions.validate()?;
    if config.shots == 0 {
        return Err(Error::invalid("shots must be at least 1"));
    }
    let subjects: Vec<String> = ds.manifest.subjects.iter().map(|s| s.id.clone()).collect();
    let unseen = choose_unseen(&subjects, &config.unseen, config.seed)?;
    let is_unseen = |s: &str| unseen.binary_search_by(|u| u.as_str().cmp(s)).is_ok();

    let partial = ds.dir.join(format!("{TRIPLETS_FILE}.resplit"));
    let file = File::create(&partial).map_err(|e| Error::io(&partial, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut counts: BTreeMap<String, usize> = Split::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect();
    let mut picker = SupportPicker::default();
    let mut available: BTreeMap<String, usize> = BTreeMap::new();
    for t in ds.triplets()? {
        let mut t = t?;
        if !config.keep_image_splits {
            t.split = image_split(config.seed, &t.image, &config.fractions);
        }
        *counts.entry(t.split.as_str().to_string()).or_default() += 1;
        if t.split == Split::Train && is_unseen(&t.subject) {
            *available.entry(t.subject.clone()).or_default() += 1;
            picker.offer(config.seed, config.shots, &t);
        }
        serde_json::to_writer(&mut out, &t).map_err(|e| Error::invalid(e.to_string()))?;
        out.write_all(b"\n").map_err(|e| Error::io(&partial, e))?;
    }
    out.flush().map_err(|e| Error::io(&partial, e))?;
    drop(out);

    let mut support = BTreeMap::new();
    for s in &unseen {
        let have = available.get(s).copied().unwrap_or(0);
        if have < config.shots {
            let _ = fs::remove_file(&partial);
            return Err(Error::invalid(format!(
                "unseen subject `{s}` has {have} train-split triplets, fewer than the {} shots asked for",
                config.shots
            )));
        }
        let ids = picker.best.remove(s).unwrap_or_default().into_iter().map(|(_, id)| id).collect();
        support.insert(s.clone(), ids);
    }
    let splits = Splits {
        seed: config.seed,
        fractions: config.fractions,
        shots: config.shots,
        seen_subjects: subjects.iter().filter(|s| !is_unseen(s)).cloned().collect(),
        unseen_subjects: unseen,
        support,
        counts,
    };
    let final_path = ds.triplets_path();
    fs::rename(&partial, &final_path).map_err(|e| Error::io(&final_path, e))?;
    write_json_atomic(&ds.dir.join(SPLITS_FILE), &splits)?;
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::DatasetWriter;
    use crate::{Description, Trajectory, TrajectorySource};

    #[test]
    fn image_split_follows_fractions_and_is_stable() {
        let fr = SplitFractions { val: 0.2, test: 0.1 };
        let n = 5_000;
        let mut c = BTreeMap::new();
        for i in 0..n {
            *c.entry(image_split(9, &format!("img{i}"), &fr)).or_insert(0usize) += 1;
        }
        assert!((900..1_100).contains(&c[&Split::Val]), "{c:?}");
        assert!((400..600).contains(&c[&Split::Test]), "{c:?}");
        assert_eq!(image_split(9, "img7", &fr), image_split(9, "img7", &fr));
    }

    #[test]
    fn unseen_by_fraction_is_deterministic_and_sized() {
        let subjects: Vec<String> = (1..=12).map(|i| format!("s{i:02}")).collect();
        let a = choose_unseen(&subjects, &UnseenChoice::Fraction(0.25), 1).unwrap();
        let b = choose_unseen(&subjects, &UnseenChoice::Fraction(0.25), 1).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        let other: Vec<_> =
            (2..40).map(|seed| choose_unseen(&subjects, &UnseenChoice::Fraction(0.25), seed).unwrap()).collect();
        assert!(other.iter().any(|o| o != &a), "seed must matter");
    }

    #[test]
    fn unseen_list_is_checked() {
        let subjects = vec!["a".to_string(), "b".to_string()];
        assert_eq!(choose_unseen(&subjects, &UnseenChoice::List(vec!["b".into()]), 0).unwrap(), ["b"]);
        let err = choose_unseen(&subjects, &UnseenChoice::List(vec!["zz".into()]), 0).unwrap_err().to_string();
        assert!(err.contains("`zz`"), "{err}");
        assert!(choose_unseen(&subjects, &UnseenChoice::List(subjects.clone()), 0).is_err());
    }

    fn dataset_with(dir: &Path, per_subject: usize, subjects: usize) -> Dataset {
        let mut w = DatasetWriter::create(dir, "t", "test").unwrap();
        for s in 0..subjects {
            for i in 0..per_subject {
                w.push(&Triplet {
                    id: format!("img{i}/s{s}"),
                    image: format!("img{i}"),
                    subject: format!("s{s}"),
                    description: Description { text: "x".into(), utterances: vec![] },
                    trajectory: Trajectory::empty(TrajectorySource::Synthetic),
                    split: Split::Train,
                })
                .unwrap();
            }
        }
        w.finish().unwrap();
        Dataset::open(dir).unwrap()
    }

    #[test]
    fn apply_splits_writes_consistent_splits_and_support() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset_with(dir.path(), 60, 8);
        let cfg = SplitConfig { seed: 3, unseen: UnseenChoice::Fraction(0.25), ..Default::default() };
        let splits = apply_splits(&ds, &cfg).unwrap();
        assert_eq!(splits.unseen_subjects.len(), 2);
        assert_eq!(splits.seen_subjects.len(), 6);
        assert_eq!(splits.counts.values().sum::<usize>(), 480);
        let triplets = ds.load_triplets().unwrap();
        for t in &triplets {
            assert_eq!(t.split, image_split(3, &t.image, &cfg.fractions));
        }
        for (s, ids) in &splits.support {
            assert_eq!(ids.len(), 5);
            for id in ids {
                let t = triplets.iter().find(|t| &t.id == id).unwrap();
                assert_eq!(&t.subject, s);
                assert_eq!(t.split, Split::Train);
            }
        }
        assert_eq!(Splits::load(dir.path()).unwrap(), splits);
        // Running again with the same config changes nothing.
        assert_eq!(apply_splits(&ds, &cfg).unwrap(), splits);
    }

    #[test]
    fn a_dataset_without_splits_says_which_command_makes_them() {
        let dir = tempfile::tempdir().unwrap();
        let message = Splits::load(dir.path()).unwrap_err().to_string();
        assert_eq!(message.matches(SPLITS_FILE).count(), 1, "{message}");
        assert!(message.contains("run `deper dataset split"), "{message}");
    }

    #[test]
    fn too_few_support_triplets_names_the_subject() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset_with(dir.path(), 3, 4);
        let before = fs::read(ds.triplets_path()).unwrap();
        let cfg = SplitConfig { unseen: UnseenChoice::List(vec!["s1".into()]), ..Default::default() };
        let err = apply_splits(&ds, &cfg).unwrap_err().to_string();
        assert!(err.contains("`s1`"), "{err}");
        assert_eq!(fs::read(ds.triplets_path()).unwrap(), before, "failed split must not touch data");
    }
}
