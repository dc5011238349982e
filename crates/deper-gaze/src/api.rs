//! The messages the page exchanges with the gaze code (as JSON through the wasm boundary, and to
//! the server for the researcher's view of a validation). Every field with a default may be left
//! out; unknown fields are refused so that a typo in the page is an error, not a silent default.

use crate::attention::{samples_to_attention, AttentionResult};
use crate::error::Result;
use crate::kalman::{smooth, KalmanParams, TimedPoint};
use crate::patch::{eye_boxes, features_from_boxes, Frame, PatchBox, PatchParams};
use crate::ridge::{CalibrationSample, CalibrationSet, RidgeModel, RidgeParams, ScreenPoint};
use crate::validation::{validate, ValidationReport, ViewingSetup};
use deper_core::trajectory::GazeParams;
use deper_core::{RawSample, Utterance};
use serde::{Deserialize, Serialize};

/// Fit a calibration: the 9 calibration clicks (or more) and the recent clicks, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRequest {
    pub calibration: Vec<CalibrationSample>,
    #[serde(default)]
    pub recent: Vec<CalibrationSample>,
    #[serde(default)]
    pub ridge: RidgeParams,
    /// For the training error in degrees.
    #[serde(default)]
    pub setup: ViewingSetup,
}

/// The fitted model and its error on its own training samples (a sanity check, not a validation:
/// use [`ValidationRequest`] on fresh targets for that).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationResponse {
    pub model: RidgeModel,
    pub training: ValidationReport,
}

/// Fits the ridge model of a [`CalibrationRequest`] (the last `ridge.max_recent` recent clicks).
pub fn calibrate(request: &CalibrationRequest) -> Result<CalibrationResponse> {
    let mut set = CalibrationSet { calibration: request.calibration.clone(), ..CalibrationSet::default() };
    for s in &request.recent {
        set.push_click(s.clone(), request.ridge.max_recent);
    }
    let model = set.fit(&request.ridge)?;
    let samples = set.samples();
    let targets: Vec<ScreenPoint> = samples.iter().map(|s| ScreenPoint { x: s.x, y: s.y }).collect();
    let predictions = samples.iter().map(|s| model.predict(&s.features)).collect::<Result<Vec<_>>>()?;
    let training = validate(&targets, &predictions, &request.setup)?;
    Ok(CalibrationResponse { model, training })
}

/// Score predictions against the validation targets shown to the participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationRequest {
    pub targets: Vec<ScreenPoint>,
    pub predictions: Vec<ScreenPoint>,
    #[serde(default)]
    pub setup: ViewingSetup,
}

impl ValidationRequest {
    pub fn run(&self) -> Result<ValidationReport> {
        validate(&self.targets, &self.predictions, &self.setup)
    }
}

/// Predict the screen point of one frame's features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    pub t: f64,
    pub features: Vec<f64>,
}

impl PredictRequest {
    /// The model's screen point for these features, stamped with `t`.
    pub fn run(&self, model: &RidgeModel) -> Result<TimedPoint> {
        let p = model.predict(&self.features)?;
        Ok(TimedPoint { t: self.t, x: p.x, y: p.y })
    }
}

/// What one camera frame gave: the eye boxes used and the 120 features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameFeatures {
    pub boxes: [PatchBox; 2],
    pub features: Vec<u8>,
}

impl FrameFeatures {
    /// Eye boxes from the landmarks, then the features (CPU; the GPU runner takes the same boxes).
    pub fn compute(frame: &Frame<'_>, landmarks: &[[f32; 2]], params: &PatchParams) -> Result<Self> {
        let boxes = eye_boxes(landmarks, frame.width(), frame.height(), params)?;
        Ok(Self { boxes, features: features_from_boxes(frame, &boxes)?.to_vec() })
    }
}

/// Smooth a series of raw predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmoothRequest {
    pub points: Vec<TimedPoint>,
    #[serde(default)]
    pub params: KalmanParams,
}

impl SmoothRequest {
    pub fn run(&self) -> Result<Vec<TimedPoint>> {
        smooth(&self.points, &self.params)
    }
}

/// Turn one trial's image-normalised gaze samples into attention steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionRequest {
    pub samples: Vec<RawSample>,
    #[serde(default)]
    pub utterances: Vec<Utterance>,
    #[serde(default)]
    pub params: GazeParams,
}

impl AttentionRequest {
    pub fn run(&self) -> Result<AttentionResult> {
        samples_to_attention(&self.samples, &self.utterances, &self.params)
    }
}
