//! The records the store keeps, as the server and the exporters see them.

use deper_core::Utterance;
use serde::{Deserialize, Serialize};

/// Declares a string-valued enum with `as_str`/`parse` matching its serde names.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// What the study records while a participant looks at an image.
    CaptureMode { Mouse = "mouse", Gaze = "gaze", Both = "both" }
);
text_enum!(
    /// How participants describe: typing, or speaking while pointing (Localized-Narratives style).
    DescriptionMode { Typed = "typed", Narrative = "narrative" }
);
text_enum!(
    /// Where one raw sample came from.
    SampleSource { Mouse = "mouse", Gaze = "gaze" }
);
text_enum!(SessionState { Active = "active", Finished = "finished" });
text_enum!(
    JobState { Queued = "queued", Running = "running", Succeeded = "succeeded", Failed = "failed", Cancelled = "cancelled" }
);

impl JobState {
    /// No further change will happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

fn default_capture() -> CaptureMode {
    CaptureMode::Mouse
}

fn default_description() -> DescriptionMode {
    DescriptionMode::Typed
}

fn default_settings() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// The editable fields of a study (create and update take the whole set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyInput {
    pub title: String,
    #[serde(default)]
    pub instructions: String,
    #[serde(default)]
    pub consent: String,
    #[serde(default = "default_capture")]
    pub capture_mode: CaptureMode,
    #[serde(default = "default_description")]
    pub description_mode: DescriptionMode,
    /// Free-form study settings (e.g. trial time limits) for the browser app.
    #[serde(default = "default_settings")]
    pub settings: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Study {
    pub id: i64,
    pub title: String,
    pub instructions: String,
    pub consent: String,
    pub capture_mode: CaptureMode,
    pub description_mode: DescriptionMode,
    pub settings: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An image to register; the file is already stored under the data folder.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStimulus {
    pub sha256: String,
    /// Path relative to the data folder.
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stimulus {
    pub id: i64,
    pub sha256: String,
    /// Path relative to the data folder.
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: i64,
    pub study_id: i64,
    /// The participant's pseudonymous id.
    pub participant: String,
    pub state: SessionState,
    /// Index of the next trial (number of trials described so far, at least).
    pub current_trial: u32,
    pub completion_code: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// SHA-256 of the session token; never sent to clients.
    #[serde(skip)]
    pub token_hash: String,
}

/// One raw pointer or gaze sample as sent by the browser: normalised image coordinates,
/// `t` in seconds since the trial's image appeared.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub x: f64,
    pub y: f64,
    pub t: f64,
    pub source: SampleSource,
}

/// A batch of samples of one trial, named by the client so that retries are recognised.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleBatch {
    pub client_batch_id: String,
    pub trial: u32,
    pub stimulus_id: i64,
    pub samples: Vec<Sample>,
}

/// What the server answers for a stored batch (the same for every retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    pub batch_id: String,
    pub trial: u32,
    pub stored: u64,
    /// True when this batch id had been stored before and nothing new was stored.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSample {
    pub trial: u32,
    pub stimulus_id: i64,
    pub batch_id: String,
    /// Position in its batch.
    pub seq: u32,
    pub x: f64,
    pub y: f64,
    pub t: f64,
    pub source: SampleSource,
}

/// One trial's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DescriptionRecord {
    pub trial: u32,
    pub stimulus_id: i64,
    pub text: String,
    #[serde(default)]
    pub utterances: Vec<Utterance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub params: serde_json::Value,
    pub state: JobState,
    /// The device the job runs on (`cpu`, `wgpu`, `cuda`); one job at a time per device.
    pub device: String,
    /// Fraction done, 0..=1.
    pub progress: f64,
    /// The latest progress event (epoch, batch, loss, …).
    pub progress_detail: serde_json::Value,
    pub log: String,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewArtifact {
    pub kind: String,
    /// Absolute path, or relative to the data folder.
    pub path: String,
    pub sha256: Option<String>,
    pub job_id: Option<i64>,
    pub study_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub id: i64,
    pub kind: String,
    pub path: String,
    pub sha256: Option<String>,
    pub job_id: Option<i64>,
    pub study_id: Option<i64>,
    pub created_at: i64,
}

/// A participant's subject embedding z_s to store (the session names the participant and study).
#[derive(Debug, Clone, PartialEq)]
pub struct NewSubjectEmbedding {
    pub session_id: i64,
    pub z_s: Vec<f32>,
    /// Version hash of the subject encoder that computed z_s.
    pub encoder: String,
    /// Where the page ran the encoder, as it reported (may be empty).
    pub backend: String,
    /// Support triplets z_s averages.
    pub triplets: u64,
}

/// A participant's stored z_s: one per session, the latest upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectEmbedding {
    pub session_id: i64,
    pub study_id: i64,
    /// The participant's pseudonym (what the caption API's `subject` names).
    pub subject: String,
    pub z_s: Vec<f32>,
    /// Version hash of the subject encoder that computed z_s.
    pub encoder: String,
    pub backend: String,
    pub triplets: u64,
    pub updated_at: i64,
}
