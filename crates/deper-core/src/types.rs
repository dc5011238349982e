//! Plain data types shared by every DEPER crate.
//!
//! Coordinates are normalised to the image: (0, 0) is the top-left corner,
//! (1, 1) the bottom-right, as in Localized Narratives. Times are seconds.
//! Everything serialises to JSON with serde.

use serde::{Deserialize, Serialize};

/// Most attention steps one trajectory keeps (the paper's limit).
pub const MAX_STEPS: usize = 30;

/// One raw pointer or gaze sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RawSample {
    pub x: f64,
    pub y: f64,
    /// Seconds since the start of the recording.
    pub t: f64,
}

/// A fixation found in a gaze stream (or a dwell in a mouse trace).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fixation {
    /// Centroid of the samples in the fixation.
    pub x: f64,
    pub y: f64,
    /// Time of the first sample.
    pub start: f64,
    /// Time from the first to the last sample.
    pub duration: f64,
    /// Bounding box of the samples.
    pub bbox: BBox,
    pub n_samples: usize,
}

/// Axis-aligned box in normalised image coordinates, `x1 <= x2`, `y1 <= y2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

impl BBox {
    /// Box from two corners in any order.
    pub fn from_corners(xa: f64, ya: f64, xb: f64, yb: f64) -> Self {
        Self { x1: xa.min(xb), y1: ya.min(yb), x2: xa.max(xb), y2: ya.max(yb) }
    }

    /// Smallest box holding all points; `None` for no points.
    pub fn covering(points: impl IntoIterator<Item = (f64, f64)>) -> Option<Self> {
        let mut it = points.into_iter();
        let (x, y) = it.next()?;
        let mut b = Self { x1: x, y1: y, x2: x, y2: y };
        for (x, y) in it {
            b.x1 = b.x1.min(x);
            b.y1 = b.y1.min(y);
            b.x2 = b.x2.max(x);
            b.y2 = b.y2.max(y);
        }
        Some(b)
    }

    pub fn width(&self) -> f64 {
        self.x2 - self.x1
    }

    pub fn height(&self) -> f64 {
        self.y2 - self.y1
    }

    pub fn area(&self) -> f64 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    pub fn center(&self) -> (f64, f64) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }

    /// Grows the box symmetrically so each side is at least `min_size`,
    /// then shifts it back inside the unit square where possible.
    pub fn with_min_size(self, min_size: f64) -> Self {
        self.with_min_size_xy(min_size, min_size)
    }

    /// [`BBox::with_min_size`] with a separate minimum width and height.
    pub fn with_min_size_xy(self, min_width: f64, min_height: f64) -> Self {
        fn grow(lo: f64, hi: f64, min_size: f64) -> (f64, f64) {
            if hi - lo >= min_size {
                return (lo, hi);
            }
            let c = (lo + hi) / 2.0;
            let (mut lo, mut hi) = (c - min_size / 2.0, c + min_size / 2.0);
            if lo < 0.0 {
                hi -= lo;
                lo = 0.0;
            }
            if hi > 1.0 {
                lo -= hi - 1.0;
                hi = 1.0;
            }
            (lo.max(0.0), hi)
        }
        let (x1, x2) = grow(self.x1, self.x2, min_width);
        let (y1, y2) = grow(self.y1, self.y2, min_height);
        Self { x1, y1, x2, y2 }
    }

    /// Clamps every coordinate into [0, 1].
    pub fn clamped(self) -> Self {
        Self {
            x1: self.x1.clamp(0.0, 1.0),
            y1: self.y1.clamp(0.0, 1.0),
            x2: self.x2.clamp(0.0, 1.0),
            y2: self.y2.clamp(0.0, 1.0),
        }
    }

    /// Intersection over union; 0 when both boxes are empty.
    pub fn iou(&self, other: &BBox) -> f64 {
        let ix = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let iy = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }

    /// `[x1, y1, x2, y2]`, the layout of the authors' `bboxes` field.
    pub fn to_array(&self) -> [f64; 4] {
        [self.x1, self.y1, self.x2, self.y2]
    }
}

/// One step of an attention trajectory: where the person looked and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionStep {
    pub bbox: BBox,
    /// Dwell time in seconds.
    pub duration: f64,
    /// Start time in seconds, when known (absent in the authors' records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<f64>,
    /// Words of the timed caption spoken during this step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<String>,
}

/// Where a trajectory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrajectorySource {
    Mouse,
    Gaze,
    Synthetic,
}

/// An ordered attention trajectory, at most [`MAX_STEPS`] steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    pub source: TrajectorySource,
    pub steps: Vec<AttentionStep>,
}

impl Trajectory {
    pub fn empty(source: TrajectorySource) -> Self {
        Self { source, steps: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn total_duration(&self) -> f64 {
        self.steps.iter().map(|s| s.duration).sum()
    }
}

/// One timed piece of a spoken or typed description (Localized Narratives' `timed_caption`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Utterance {
    pub utterance: String,
    pub start_time: f64,
    pub end_time: f64,
}

/// A description of one image by one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub utterances: Vec<Utterance>,
}

/// Image-level data split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Parses the names used by the datasets we import (`validation`, `dev` too).
    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Some(Split::Train),
            "val" | "valid" | "validation" | "dev" => Some(Split::Val),
            "test" | "testing" => Some(Split::Test),
            _ => None,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The unit DEPER learns from: one subject's view and description of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triplet {
    /// Unique within the dataset.
    pub id: String,
    /// Image id; the file is found through the dataset's image table.
    pub image: String,
    pub subject: String,
    pub description: Description,
    pub trajectory: Trajectory,
    pub split: Split,
}

/// A person who viewed and described images. Never a real name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    pub id: String,
    /// Display name (the authors' `subject_name`, or a synthetic persona's label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form notes, e.g. a synthetic persona's viewing and wording policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub id: String,
    /// Path relative to the dataset's image folder; `None` when the file is not available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}
