//! deper-synth: the synthetic personas world, DEPER's embedded default data set.
//!
//! Procedurally rendered scenes of coloured shapes ([`scene`]), simulated
//! subjects with their own viewing policy and wording style ([`persona`]),
//! and Localized-Narratives-style mouse traces with timed speech ([`trace`]).
//! Everything is deterministic in [`SynthConfig::seed`], and every part draws
//! from its own random stream (`deper_core::rng::seeded`), so adding images
//! does not change the personas and adding subjects does not change the scenes.
//!
//! [`generate`] writes a dataset folder:
//!
//! ```text
//! OUT/dataset.json        manifest; extra.synth = config + persona policies
//! OUT/triplets.jsonl      one triplet per (subject, image) trial
//! OUT/images/scene_NNNN.png
//! OUT/scenes.jsonl        ground truth: objects (kind, colour, size, name, box), background, neutral caption
//! OUT/narratives.jsonl    the raw traces in the Localized Narratives schema
//! ```
//!
//! Trajectories are built from the simulated traces by the same code as real
//! mouse data (`clean_trace` + `mouse_trace_to_steps`), so importing
//! `narratives.jsonl` with `deper import ln` gives the same steps.

pub mod persona;
mod rand_util;
pub mod scene;
pub mod trace;

use deper_core::dataset::DatasetWriter;
use deper_core::import::{clean_trace, ImportReport};
use deper_core::rng::{seeded, stable_unit};
use deper_core::split::{image_split, SplitFractions};
use deper_core::trajectory::{mouse_trace_to_steps, DwellParams};
use deper_core::{Description, ImageInfo, RawSample, Split, Trajectory, TrajectorySource, Triplet, Utterance};
use persona::Persona;
use scene::Scene;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use trace::Trial;

/// `dataset_id` of the narratives file.
pub const LN_DATASET_ID: &str = "synthetic";
/// Ground-truth scenes file, in the dataset folder.
pub const SCENES_FILE: &str = "scenes.jsonl";
/// Raw traces in the Localized Narratives schema, in the dataset folder.
pub const NARRATIVES_FILE: &str = "narratives.jsonl";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// Number of personas (`s01`, `s02`, …).
    pub subjects: usize,
    /// Number of scenes (`scene_0000`, …).
    pub images: usize,
    /// Probability that a given subject describes a given image (each image gets at least two describers).
    pub coverage: f64,
    pub seed: u64,
    /// Side of the square images, pixels.
    pub image_size: u32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self { subjects: 12, images: 240, coverage: 0.5, seed: 0, image_size: 448 }
    }
}

impl SynthConfig {
    pub fn validate(&self) -> Result<(), SynthError> {
        if self.subjects == 0 || self.subjects > 999 {
            return Err(SynthError::Config(format!("subjects must be in 1..=999, got {}", self.subjects)));
        }
        if self.images == 0 || self.images > 100_000 {
            return Err(SynthError::Config(format!("images must be in 1..=100000, got {}", self.images)));
        }
        if !(self.coverage.is_finite() && self.coverage > 0.0 && self.coverage <= 1.0) {
            return Err(SynthError::Config(format!("coverage must be in (0, 1], got {}", self.coverage)));
        }
        if !(64..=4096).contains(&self.image_size) {
            return Err(SynthError::Config(format!("image_size must be in 64..=4096, got {}", self.image_size)));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synthetic-world config: {0}")]
    Config(String),
    #[error(transparent)]
    Core(#[from] deper_core::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Image { path: PathBuf, source: image::ImageError },
    #[error("serialising JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthSummary {
    pub out: PathBuf,
    pub images: usize,
    pub subjects: usize,
    pub triplets: usize,
    /// Triplets per split (`train`, `val`, `test`).
    pub triplets_per_split: BTreeMap<String, usize>,
    /// Images per split.
    pub images_per_split: BTreeMap<String, usize>,
    pub mean_describers_per_image: f64,
    pub mean_steps: f64,
    pub empty_trajectories: usize,
    /// Trace points outside the image that the trace cleaner clamped.
    pub clamped_points: usize,
}

/// One narrative in the Localized Narratives JSONL schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Narrative {
    pub dataset_id: String,
    pub image_id: String,
    pub annotator_id: String,
    pub caption: String,
    pub timed_caption: Vec<Utterance>,
    pub traces: Vec<Vec<RawSample>>,
    pub voice_recording: String,
}

/// The world of one config: personas drawn, scenes and trials on demand.
#[derive(Debug, Clone)]
pub struct World {
    pub config: SynthConfig,
    pub personas: Vec<Persona>,
}

impl World {
    pub fn new(config: &SynthConfig) -> Result<World, SynthError> {
        config.validate()?;
        let personas = (0..config.subjects).map(|i| Persona::draw(config.seed, i)).collect();
        Ok(World { config: config.clone(), personas })
    }

    /// The layout of scene `index` (no pixels).
    pub fn scene(&self, index: usize) -> Scene {
        Scene::generate(self.config.seed, index, self.config.image_size)
    }

    /// Indices of the subjects who describe `image_id`: each subject with
    /// probability `coverage`, by a stable hash of (seed, image, subject);
    /// when that leaves fewer than two, the two with the smallest hashes.
    pub fn describers(&self, image_id: &str) -> Vec<usize> {
        let mut units: Vec<(f64, usize)> = self
            .personas
            .iter()
            .enumerate()
            .map(|(i, p)| (stable_unit(self.config.seed, &format!("coverage/{image_id}/{}", p.id)), i))
            .collect();
        let mut chosen: Vec<usize> = units.iter().filter(|(u, _)| *u < self.config.coverage).map(|&(_, i)| i).collect();
        let min = self.personas.len().min(2);
        if chosen.len() < min {
            units.sort_by(|a, b| a.0.total_cmp(&b.0));
            chosen = units[..min].iter().map(|&(_, i)| i).collect();
            chosen.sort_unstable();
        }
        chosen
    }

    /// Simulates subject `subject` on `scene` (its own random stream).
    pub fn trial(&self, scene: &Scene, subject: usize) -> Trial {
        let persona = &self.personas[subject];
        let mut rng = seeded(self.config.seed, &format!("trial/{}/{}", scene.id, persona.id));
        trace::simulate(persona, scene, &mut rng)
    }

    /// The triplet of a trial; its trajectory is built like an imported LN trace.
    pub fn triplet(&self, scene: &Scene, subject: usize, trial: &Trial) -> (Triplet, ImportReport) {
        let persona = &self.personas[subject];
        let mut report = ImportReport::default();
        let cleaned = clean_trace(trial.trace.iter().copied(), &mut report);
        let (steps, build) = mouse_trace_to_steps(&[cleaned], &trial.utterances, &DwellParams::default());
        report.dropped_over_step_limit += build.dropped_over_limit;
        let triplet = Triplet {
            id: format!("{}/{}", scene.id, persona.id),
            image: scene.id.clone(),
            subject: persona.id.clone(),
            description: Description { text: trial.caption.clone(), utterances: trial.utterances.clone() },
            trajectory: Trajectory { source: TrajectorySource::Synthetic, steps },
            split: self.split(&scene.id),
        };
        (triplet, report)
    }

    /// The trial as a Localized Narratives record.
    pub fn narrative(&self, scene: &Scene, subject: usize, trial: &Trial) -> Narrative {
        Narrative {
            dataset_id: LN_DATASET_ID.to_string(),
            image_id: scene.id.clone(),
            annotator_id: self.personas[subject].id.clone(),
            caption: trial.caption.clone(),
            timed_caption: trial.utterances.clone(),
            traces: vec![trial.trace.clone()],
            voice_recording: String::new(),
        }
    }

    pub fn split(&self, image_id: &str) -> Split {
        image_split(self.config.seed, image_id, &SplitFractions::default())
    }

    /// Config and persona policies, as stored in the manifest under `extra.synth`.
    pub fn manifest_extra(&self) -> serde_json::Value {
        serde_json::json!({
            "generator": concat!("deper-synth ", env!("CARGO_PKG_VERSION")),
            "config": self.config,
            "dwell_params": DwellParams::default(),
            "split_fractions": SplitFractions::default(),
            "files": { "scenes": SCENES_FILE, "narratives": NARRATIVES_FILE },
            "personas": self.personas,
        })
    }
}

struct JsonlOut {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlOut {
    fn create(path: PathBuf) -> Result<Self, SynthError> {
        let file = File::create(&path).map_err(|source| SynthError::Io { path: path.clone(), source })?;
        Ok(Self { path, out: BufWriter::with_capacity(1 << 20, file) })
    }

    fn line<T: Serialize>(&mut self, value: &T) -> Result<(), SynthError> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n").map_err(|source| SynthError::Io { path: self.path.clone(), source })
    }

    fn finish(mut self) -> Result<(), SynthError> {
        self.out.flush().map_err(|source| SynthError::Io { path: self.path.clone(), source })
    }
}

/// Generates the synthetic world into the new dataset folder `out`.
/// `progress` is told (images done, total) after each image.
pub fn generate(
    config: &SynthConfig,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SynthSummary, SynthError> {
    let world = World::new(config)?;
    let mut writer = DatasetWriter::create(out, "synthetic-personas", "synthetic")?;
    for p in &world.personas {
        writer.add_subject(p.subject());
    }
    let mut scenes_out = JsonlOut::create(out.join(SCENES_FILE))?;
    let mut narratives_out = JsonlOut::create(out.join(NARRATIVES_FILE))?;
    let image_dir = writer.image_dir();

    let mut summary = SynthSummary {
        out: out.to_path_buf(),
        images: config.images,
        subjects: config.subjects,
        triplets: 0,
        triplets_per_split: Split::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect(),
        images_per_split: Split::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect(),
        mean_describers_per_image: 0.0,
        mean_steps: 0.0,
        empty_trajectories: 0,
        clamped_points: 0,
    };
    let mut total_steps = 0usize;
    for index in 0..config.images {
        let scene = world.scene(index);
        let file_name = format!("{}.png", scene.id);
        let path = image_dir.join(&file_name);
        scene.render().save(&path).map_err(|source| SynthError::Image { path: path.clone(), source })?;
        writer.add_image(ImageInfo {
            id: scene.id.clone(),
            file: Some(file_name),
            width: Some(scene.width),
            height: Some(scene.height),
        });
        scenes_out.line(&scene)?;
        let split = world.split(&scene.id);
        *summary.images_per_split.entry(split.as_str().to_string()).or_default() += 1;
        for subject in world.describers(&scene.id) {
            let trial = world.trial(&scene, subject);
            narratives_out.line(&world.narrative(&scene, subject, &trial))?;
            let (triplet, report) = world.triplet(&scene, subject, &trial);
            summary.clamped_points += report.clamped_points;
            total_steps += triplet.trajectory.steps.len();
            if triplet.trajectory.is_empty() {
                summary.empty_trajectories += 1;
            }
            *summary.triplets_per_split.entry(split.as_str().to_string()).or_default() += 1;
            summary.triplets += 1;
            writer.push(&triplet)?;
        }
        progress(index + 1, config.images);
    }
    scenes_out.finish()?;
    narratives_out.finish()?;
    writer.set_extra("synth", world.manifest_extra());
    writer.finish()?;
    summary.mean_describers_per_image = summary.triplets as f64 / config.images as f64;
    summary.mean_steps = if summary.triplets == 0 { 0.0 } else { total_steps as f64 / summary.triplets as f64 };
    Ok(summary)
}
