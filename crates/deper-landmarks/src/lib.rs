//! Face landmarks for webcam gaze: MediaPipe's BlazeFace short-range detector and its 468-point
//! Face Mesh model, converted once from the TFLite files of `@mediapipe/face_mesh` to ONNX
//! (scripts/convert_mediapipe.py, Apache-2.0 notice in models/NOTICE) and run with tract, natively
//! and in wasm32.
//!
//! The pipeline follows MediaPipe's face_landmark_front graph for one face:
//! 1. the frame is letterboxed into 128x128 ([`frame`]) and BlazeFace's 896 anchor boxes
//!    ([`anchors`]) are decoded and merged by weighted NMS ([`detect`]);
//! 2. the best face's ROI is the box centre, a square of 1.5x its longer side, rotated so the eyes
//!    are level ([`roi`]);
//! 3. the ROI is sampled into 192x192 and the landmark model gives 468 (x, y, z) points plus a
//!    face-presence logit; the points are mapped back to frame pixels through the ROI.
//!
//! For tracking, [`FaceMesh::landmarks_in`] runs step 3 on a ROI from the previous frame's landmarks
//! ([`Roi::from_landmarks`]) and skips the detector, as MediaPipe does between detections.

pub mod anchors;
pub mod detect;
pub mod error;
pub mod frame;
mod model;
pub mod roi;

pub use detect::{Detection, DetectorOptions};
pub use error::{LandmarkError, Result};
pub use frame::{Frame, PixelFormat};
pub use roi::Roi;

use anchors::{ssd_anchors, Anchor, AnchorOptions};
use frame::{sample_roi, Border};
use model::Network;

/// The converted BlazeFace short-range detector (ONNX, ~0.4 MB).
#[cfg(feature = "bundled")]
pub const DETECTOR_ONNX: &[u8] = include_bytes!("../models/face_detection_short_range.onnx");
/// The converted Face Mesh landmark model (ONNX, ~2.4 MB).
#[cfg(feature = "bundled")]
pub const LANDMARK_ONNX: &[u8] = include_bytes!("../models/face_landmark.onnx");

/// Detector input side and value range.
pub const DETECTOR_SIDE: usize = 128;
pub const DETECTOR_RANGE: (f32, f32) = (-1.0, 1.0);
/// Landmark model input side and value range.
pub const LANDMARK_SIDE: usize = 192;
pub const LANDMARK_RANGE: (f32, f32) = (0.0, 1.0);
/// Face Mesh points.
pub const NUM_LANDMARKS: usize = 468;

const NUM_ANCHORS: usize = 896;

/// Raw detector outputs for one input: `regressors` (896 x 16) and `classificators` (896 logits).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorOutput {
    pub regressors: Vec<f32>,
    pub classificators: Vec<f32>,
}

/// Raw landmark-model outputs: 468 x (x, y, z) in 192x192 input pixels, and the face-presence logit.
#[derive(Debug, Clone, PartialEq)]
pub struct LandmarkOutput {
    pub landmarks: Vec<f32>,
    pub face_logit: f32,
}

/// One face found in a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// The detection the ROI came from (frame pixels); `None` when tracked from landmarks.
    pub detection: Option<Detection>,
    /// The crop the landmark model saw (frame pixels).
    pub roi: Roi,
    /// 468 points: x, y in frame pixels, z (depth, smaller is nearer the camera) at the same scale.
    pub landmarks: Vec<[f32; 3]>,
    /// Face presence in the ROI according to the landmark model (sigmoid of its logit, 0..1).
    pub presence: f32,
}

/// Both models plus the detector's anchors and options.
#[derive(Debug)]
pub struct FaceMesh {
    detector: Network,
    landmarker: Network,
    anchors: Vec<Anchor>,
    /// Detection decoding and NMS settings (MediaPipe's by default).
    pub options: DetectorOptions,
}

impl FaceMesh {
    /// Loads the models bundled into the crate.
    #[cfg(feature = "bundled")]
    pub fn bundled() -> Result<Self> {
        Self::from_onnx(DETECTOR_ONNX, LANDMARK_ONNX)
    }

    /// Loads the models from ONNX bytes (e.g. fetched by the browser).
    pub fn from_onnx(detector_onnx: &[u8], landmark_onnx: &[u8]) -> Result<Self> {
        let detector = Network::load(
            "face detector",
            detector_onnx,
            DETECTOR_SIDE,
            &[("regressors", NUM_ANCHORS * detect::NUM_COORDS), ("classificators", NUM_ANCHORS)],
        )?;
        let landmarker = Network::load(
            "face landmark",
            landmark_onnx,
            LANDMARK_SIDE,
            &[("conv2d_21", NUM_LANDMARKS * 3), ("conv2d_31", 1)],
        )?;
        let anchors = ssd_anchors(&AnchorOptions::face_detection_short_range());
        debug_assert_eq!(anchors.len(), NUM_ANCHORS);
        Ok(Self { detector, landmarker, anchors, options: DetectorOptions::default() })
    }

    /// Runs the detector on a 128x128x3 NHWC tensor in [-1, 1].
    pub fn run_detector(&self, input: &[f32]) -> Result<DetectorOutput> {
        let mut out = self.detector.run(input)?.into_iter();
        let (Some(regressors), Some(classificators)) = (out.next(), out.next()) else {
            return Err(LandmarkError::model("face detector", "missing outputs"));
        };
        Ok(DetectorOutput { regressors, classificators })
    }

    /// Runs the landmark model on a 192x192x3 NHWC tensor in [0, 1].
    pub fn run_landmarks(&self, input: &[f32]) -> Result<LandmarkOutput> {
        let mut out = self.landmarker.run(input)?.into_iter();
        let (Some(landmarks), Some(flag)) = (out.next(), out.next()) else {
            return Err(LandmarkError::model("face landmark", "missing outputs"));
        };
        let face_logit = flag.first().copied().unwrap_or(f32::NAN);
        Ok(LandmarkOutput { landmarks, face_logit })
    }

    /// All faces BlazeFace finds in the frame, best first, in frame pixels.
    pub fn detect(&self, frame: &Frame<'_>) -> Result<Vec<Detection>> {
        let letterbox = Roi::letterbox(frame.width(), frame.height());
        let input = sample_roi(frame, &letterbox, self.detector.side(), Border::Zero, DETECTOR_RANGE);
        let raw = self.run_detector(&input)?;
        let dets = detect::decode(&raw.regressors, &raw.classificators, &self.anchors, &self.options);
        Ok(detect::weighted_nms(dets, self.options.nms_threshold)
            .into_iter()
            .map(|d| d.map(|x, y| letterbox.to_frame(x, y)))
            .collect())
    }

    /// Landmarks inside a given ROI (frame pixels), e.g. one tracked from the previous frame.
    pub fn landmarks_in(&self, frame: &Frame<'_>, roi: &Roi) -> Result<Face> {
        if !roi.is_finite() || roi.width <= 0.0 || roi.height <= 0.0 {
            return Err(LandmarkError::input("roi", format!("not a finite non-empty rectangle: {roi:?}")));
        }
        let side = self.landmarker.side();
        let input = sample_roi(frame, roi, side, Border::Replicate, LANDMARK_RANGE);
        let raw = self.run_landmarks(&input)?;
        let landmarks = raw
            .landmarks
            .chunks_exact(3)
            .map(|p| {
                let [x, y] = roi.to_frame(p[0] / side as f32, p[1] / side as f32);
                [x, y, p[2] / side as f32 * roi.width]
            })
            .collect();
        Ok(Face { detection: None, roi: *roi, landmarks, presence: 1.0 / (1.0 + (-raw.face_logit).exp()) })
    }

    /// Detects the best face and returns its landmarks, or `None` when no face scores above
    /// `options.min_score`.
    pub fn process(&self, frame: &Frame<'_>) -> Result<Option<Face>> {
        let Some(best) = self.detect(frame)?.into_iter().next() else {
            return Ok(None);
        };
        let mut face = self.landmarks_in(frame, &Roi::from_detection(&best))?;
        face.detection = Some(best);
        Ok(Some(face))
    }
}
