//! Study → deper dataset, and study → Localized-Narratives JSONL.
//!
//! Every described trial of every session becomes one triplet: image = the stimulus's
//! SHA-256, subject = the participant's pseudonym, description = the text and its timed
//! utterances, trajectory = the trial's samples through the dwell rule
//! ([`deper_core::trajectory::mouse`]) for mouse samples, or the fixation filter
//! ([`deper_core::trajectory::fixation`], default parameters) for gaze samples when the
//! study records gaze. Triplet ids follow the LN importer, `study-<id>/<sha256>/<pseudonym>`,
//! so an LN export imported with `deper_core::import::ln` gives the same triplets as the
//! dataset export of a mouse study. All triplets are in the train split; `deper dataset split`
//! assigns splits afterwards.
//!
//! The dataset export also writes `samples.jsonl` (named in the manifest's `extra.raw_samples`):
//! one line per triplet with its raw samples exactly as stored, since the dwell rule keeps
//! only where the pointer rested.

use crate::error::{Result, StoreError};
use crate::{CaptureMode, DescriptionRecord, SampleSource, Session, Stimulus, Store, StoredSample, Study};
use deper_core::dataset::DatasetWriter;
use deper_core::import::{clean_trace, ImportReport};
use deper_core::trajectory::{fixations_to_steps, mouse_trajectory, GazeParams};
use deper_core::{Description, ImageInfo, RawSample, Split, Subject, Trajectory, TrajectorySource, Triplet, Utterance};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// File of raw samples written next to the triplets.
pub const RAW_SAMPLES_FILE: &str = "samples.jsonl";
/// File name of the Localized-Narratives export.
pub const LN_FILE: &str = "narratives.jsonl";

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportReport {
    pub sessions: usize,
    pub triplets: usize,
    pub samples: usize,
    pub images: usize,
    /// Triplets whose samples gave no attention step (kept, with an empty trajectory).
    pub empty_trajectories: usize,
}

/// One described trial with everything needed to write it.
#[derive(Debug, Clone)]
struct Trial {
    session: Session,
    description: DescriptionRecord,
    stimulus: Stimulus,
    samples: Vec<StoredSample>,
}

/// `study-<id>`, the LN `dataset_id` of a study.
pub fn dataset_id(study_id: i64) -> String {
    format!("study-{study_id}")
}

/// The attention trajectory of one trial's samples (see the [module docs](self)).
pub fn build_trajectory(samples: &[StoredSample], utterances: &[Utterance], mode: CaptureMode) -> Trajectory {
    let mut gaze = time_ordered(samples, SampleSource::Gaze);
    let use_gaze = match mode {
        CaptureMode::Mouse => false,
        CaptureMode::Gaze => true,
        CaptureMode::Both => !gaze.is_empty(),
    };
    if use_gaze {
        let mut report = ImportReport::default();
        gaze = clean_trace(gaze, &mut report);
        let (steps, _) = fixations_to_steps(&gaze, utterances, &GazeParams::default());
        return Trajectory { source: TrajectorySource::Gaze, steps };
    }
    mouse_trajectory(time_ordered(samples, SampleSource::Mouse), utterances)
}

/// Samples of one source as `RawSample`s, ordered by time (stable, so equal times keep arrival order).
fn time_ordered(samples: &[StoredSample], source: SampleSource) -> Vec<RawSample> {
    let mut out: Vec<RawSample> =
        samples.iter().filter(|s| s.source == source).map(|s| RawSample { x: s.x, y: s.y, t: s.t }).collect();
    out.sort_by(|a, b| a.t.total_cmp(&b.t));
    out
}

async fn collect(store: &dyn Store, study_id: i64) -> Result<(Study, Vec<Trial>, usize)> {
    let study = store.get_study(study_id).await?.ok_or_else(|| StoreError::not_found("study", study_id))?;
    let sessions = store.list_sessions(study_id).await?;
    let mut stimuli: HashMap<i64, Stimulus> = HashMap::new();
    for s in store.study_stimuli(study_id).await? {
        stimuli.insert(s.id, s);
    }
    let mut trials = Vec::new();
    for session in &sessions {
        let mut by_trial: BTreeMap<u32, Vec<StoredSample>> = BTreeMap::new();
        for s in store.session_samples(session.id).await? {
            by_trial.entry(s.trial).or_default().push(s);
        }
        for description in store.session_descriptions(session.id).await? {
            let stimulus = match stimuli.get(&description.stimulus_id) {
                Some(s) => s.clone(),
                None => store
                    .get_stimulus(description.stimulus_id)
                    .await?
                    .ok_or_else(|| StoreError::not_found("stimulus", description.stimulus_id))?,
            };
            let samples = by_trial.remove(&description.trial).unwrap_or_default();
            trials.push(Trial { session: session.clone(), description, stimulus, samples });
        }
    }
    Ok((study, trials, sessions.len()))
}

fn triplet_of(study: &Study, trial: &Trial, trajectory: Trajectory) -> Triplet {
    Triplet {
        id: format!("{}/{}/{}", dataset_id(study.id), trial.stimulus.sha256, trial.session.participant),
        image: trial.stimulus.sha256.clone(),
        subject: trial.session.participant.clone(),
        description: Description {
            text: trial.description.text.clone(),
            utterances: trial.description.utterances.clone(),
        },
        trajectory,
        split: Split::Train,
    }
}

/// Copies each distinct stimulus of `trials` to `images/<sha256>.png` under `out`.
fn copy_images(data_dir: &Path, out: &Path, trials: &[Trial]) -> Result<Vec<ImageInfo>> {
    let dir = out.join("images");
    std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
    let mut seen = HashMap::new();
    for t in trials {
        if seen.contains_key(&t.stimulus.sha256) {
            continue;
        }
        let file = format!("{}.png", t.stimulus.sha256);
        let (from, to) = (data_dir.join(&t.stimulus.file), dir.join(&file));
        std::fs::copy(&from, &to).map_err(|e| StoreError::io(&from, e))?;
        seen.insert(
            t.stimulus.sha256.clone(),
            ImageInfo {
                id: t.stimulus.sha256.clone(),
                file: Some(file),
                width: Some(t.stimulus.width),
                height: Some(t.stimulus.height),
            },
        );
    }
    let mut images: Vec<ImageInfo> = seen.into_values().collect();
    images.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(images)
}

#[derive(Serialize)]
struct RawLine<'a> {
    triplet: &'a str,
    samples: Vec<RawOut>,
}

#[derive(Serialize)]
struct RawOut {
    x: f64,
    y: f64,
    t: f64,
    source: SampleSource,
}

/// Writes the study as a deper dataset in `out` (which must not hold a dataset yet), copying
/// the images from `data_dir`, and stores each derived trajectory in the store.
pub async fn export_dataset(store: &dyn Store, data_dir: &Path, study_id: i64, out: &Path) -> Result<ExportReport> {
    let (study, trials, sessions) = collect(store, study_id).await?;
    let mut triplets = Vec::with_capacity(trials.len());
    for trial in &trials {
        let trajectory = build_trajectory(&trial.samples, &trial.description.utterances, study.capture_mode);
        store.put_trajectory(trial.session.id, trial.description.trial, &trajectory).await?;
        triplets.push(triplet_of(&study, trial, trajectory));
    }
    let (data_dir, out) = (data_dir.to_path_buf(), out.to_path_buf());
    tokio::task::spawn_blocking(move || write_dataset(&data_dir, &out, &study, &trials, &triplets, sessions))
        .await
        .map_err(|e| StoreError::Invalid(format!("export task failed: {e}")))?
}

fn write_dataset(
    data_dir: &Path,
    out: &Path,
    study: &Study,
    trials: &[Trial],
    triplets: &[Triplet],
    sessions: usize,
) -> Result<ExportReport> {
    let mut writer = DatasetWriter::create(out, &study.title, "study")?;
    let images = copy_images(data_dir, out, trials)?;
    let mut report = ExportReport { sessions, images: images.len(), ..Default::default() };
    for image in images {
        writer.add_image(image);
    }
    let raw_path = out.join(RAW_SAMPLES_FILE);
    let raw_file = std::fs::File::create(&raw_path).map_err(|e| StoreError::io(&raw_path, e))?;
    let mut raw = std::io::BufWriter::new(raw_file);
    for (trial, triplet) in trials.iter().zip(triplets) {
        writer.add_subject(Subject { id: triplet.subject.clone(), name: None, notes: None });
        writer.push(triplet)?;
        report.triplets += 1;
        report.samples += trial.samples.len();
        if triplet.trajectory.is_empty() {
            report.empty_trajectories += 1;
        }
        let line = RawLine {
            triplet: &triplet.id,
            samples: trial.samples.iter().map(|s| RawOut { x: s.x, y: s.y, t: s.t, source: s.source }).collect(),
        };
        serde_json::to_writer(&mut raw, &line).map_err(|e| StoreError::Invalid(e.to_string()))?;
        raw.write_all(b"\n").map_err(|e| StoreError::io(&raw_path, e))?;
    }
    raw.flush().map_err(|e| StoreError::io(&raw_path, e))?;
    writer.set_extra("raw_samples", RAW_SAMPLES_FILE.into());
    writer.set_extra(
        "study",
        serde_json::json!({
            "id": study.id,
            "title": study.title,
            "capture_mode": study.capture_mode,
            "description_mode": study.description_mode,
        }),
    );
    writer.finish()?;
    Ok(report)
}

#[derive(Serialize)]
struct LnPoint {
    x: f64,
    y: f64,
    t: f64,
}

#[derive(Serialize)]
struct LnLine<'a> {
    dataset_id: &'a str,
    image_id: &'a str,
    annotator_id: &'a str,
    caption: &'a str,
    timed_caption: &'a [Utterance],
    /// One segment per trial: the mouse samples in time order.
    traces: Vec<Vec<LnPoint>>,
}

/// Writes the study in the Localized-Narratives JSONL schema to `out/narratives.jsonl`,
/// with its images in `out/images/` (LN carries mouse traces only; gaze samples are left out).
pub async fn export_ln(store: &dyn Store, data_dir: &Path, study_id: i64, out: &Path) -> Result<ExportReport> {
    let (study, trials, sessions) = collect(store, study_id).await?;
    let (data_dir, out) = (data_dir.to_path_buf(), out.to_path_buf());
    tokio::task::spawn_blocking(move || write_ln(&data_dir, &out, &study, &trials, sessions))
        .await
        .map_err(|e| StoreError::Invalid(format!("export task failed: {e}")))?
}

fn write_ln(data_dir: &Path, out: &Path, study: &Study, trials: &[Trial], sessions: usize) -> Result<ExportReport> {
    let images = copy_images(data_dir, out, trials)?;
    let path = out.join(LN_FILE);
    let file = std::fs::File::create(&path).map_err(|e| StoreError::io(&path, e))?;
    let mut w = std::io::BufWriter::new(file);
    let id = dataset_id(study.id);
    let mut report = ExportReport { sessions, images: images.len(), ..Default::default() };
    for trial in trials {
        let points: Vec<LnPoint> = time_ordered(&trial.samples, SampleSource::Mouse)
            .into_iter()
            .map(|s| LnPoint { x: s.x, y: s.y, t: s.t })
            .collect();
        report.samples += points.len();
        let line = LnLine {
            dataset_id: &id,
            image_id: &trial.stimulus.sha256,
            annotator_id: &trial.session.participant,
            caption: &trial.description.text,
            timed_caption: &trial.description.utterances,
            traces: if points.is_empty() { Vec::new() } else { vec![points] },
        };
        serde_json::to_writer(&mut w, &line).map_err(|e| StoreError::Invalid(e.to_string()))?;
        w.write_all(b"\n").map_err(|e| StoreError::io(&path, e))?;
        report.triplets += 1;
    }
    w.flush().map_err(|e| StoreError::io(&path, e))?;
    Ok(report)
}
