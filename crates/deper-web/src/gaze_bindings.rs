//! Webcam gaze in the page (wasm32 only): MediaPipe face landmarks (deper-landmarks: BlazeFace +
//! Face Mesh through tract, the models bundled) → eye-patch features (deper-gaze: 10×6 grey,
//! equalised, 120 values; the CPU reference path) → ridge calibration on the participant's clicks
//! → constant-velocity Kalman smoothing. WebGazer's pipeline (Papoutsaki et al. 2016), with
//! deper-gaze's documented choices.
//!
//! `web/deper-worker.js` exposes it as the `gaze_*` ops; the page sends video frames as RGBA.

use deper_gaze::kalman::{GazeKalman, KalmanParams, TimedPoint};
use deper_gaze::ridge::{CalibrationSample, CalibrationSet, RidgeModel, RidgeParams, ScreenPoint};
use deper_gaze::validation::{validate, ViewingSetup};
use deper_landmarks::{FaceMesh, Roi};
use wasm_bindgen::prelude::*;

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// The whole gaze pipeline of one participant.
#[wasm_bindgen]
#[derive(Debug)]
pub struct GazeTracker {
    mesh: FaceMesh,
    /// The last face's region, so the next frame skips the detector (MediaPipe's tracking).
    roi: Option<Roi>,
    calibration: CalibrationSet,
    params: RidgeParams,
    model: Option<RidgeModel>,
    kalman: GazeKalman,
}

#[wasm_bindgen]
impl GazeTracker {
    /// Loads the bundled face models (a few hundred ms).
    #[wasm_bindgen(constructor)]
    pub fn new() -> Result<GazeTracker, JsValue> {
        Ok(GazeTracker {
            mesh: FaceMesh::bundled().map_err(js_error)?,
            roi: None,
            calibration: CalibrationSet::default(),
            params: RidgeParams::default(),
            model: None,
            kalman: GazeKalman::new(KalmanParams::default()).map_err(js_error)?,
        })
    }

    /// The 120 eye features of an RGBA frame, or `undefined` when no face is found.
    pub fn features(&mut self, rgba: &[u8], width: u32, height: u32) -> Result<Option<Vec<u8>>, JsValue> {
        let frame =
            deper_landmarks::Frame::new(width, height, deper_landmarks::PixelFormat::Rgba8, rgba).map_err(js_error)?;
        // A tracked face counts while the landmark model still sees one (MediaPipe's 0.5 presence).
        let tracked = match &self.roi {
            Some(roi) => Some(self.mesh.landmarks_in(&frame, roi).map_err(js_error)?).filter(|f| f.presence >= 0.5),
            None => None,
        };
        let face = match tracked {
            Some(face) => Some(face),
            None => self.mesh.process(&frame).map_err(js_error)?,
        };
        let Some(face) = face else {
            self.roi = None;
            return Ok(None);
        };
        self.roi = Roi::from_landmarks(&face.landmarks);
        let points: Vec<[f32; 2]> = face.landmarks.iter().map(|p| [p[0], p[1]]).collect();
        let gaze_frame = deper_gaze::patch::Frame::new(width, height, deper_gaze::patch::PixelFormat::Rgba, rgba)
            .map_err(js_error)?;
        let features = deper_gaze::patch::eye_features(&gaze_frame, &points, &Default::default()).map_err(js_error)?;
        Ok(Some(features.to_vec()))
    }

    /// A calibration click: the participant looked at (x, y) (page pixels) while `features` were seen.
    pub fn add_calibration(&mut self, features: &[u8], x: f64, y: f64) {
        self.calibration.push_calibration(CalibrationSample::from_bytes(features, x, y));
    }

    /// A click during the study (kept in a bounded window of recent clicks).
    pub fn add_click(&mut self, features: &[u8], x: f64, y: f64) {
        let max = self.params.max_recent;
        self.calibration.push_click(CalibrationSample::from_bytes(features, x, y), max);
    }

    /// Fits the ridge map on the calibration and recent clicks; returns the samples used.
    pub fn fit(&mut self) -> Result<usize, JsValue> {
        let model = self.calibration.fit(&self.params).map_err(js_error)?;
        self.model = Some(model);
        self.kalman.reset();
        Ok(self.calibration.samples().len())
    }

    /// Smoothed gaze `[x, y]` (page pixels) for `features` seen at `t` seconds.
    pub fn predict(&mut self, features: &[u8], t: f64) -> Result<Vec<f64>, JsValue> {
        let model = self.model.as_ref().ok_or_else(|| js_error("not calibrated: call fit first"))?;
        let raw = model.predict_bytes(features).map_err(js_error)?;
        let smooth = self.kalman.update(TimedPoint { t, x: raw.x, y: raw.y }).map_err(js_error)?;
        Ok(vec![smooth.x, smooth.y])
    }

    /// Unsmoothed prediction (validation compares these with the targets).
    pub fn predict_raw(&self, features: &[u8]) -> Result<Vec<f64>, JsValue> {
        let model = self.model.as_ref().ok_or_else(|| js_error("not calibrated: call fit first"))?;
        let p = model.predict_bytes(features).map_err(js_error)?;
        Ok(vec![p.x, p.y])
    }
}

/// Validation report (`deper_gaze::validation::ValidationReport` as JSON text) for flat
/// `[x0, y0, x1, y1, …]` targets and predictions; `px_per_cm`/`distance_cm` ≤ 0 take the defaults.
#[wasm_bindgen]
pub fn gaze_validation(
    targets: &[f64],
    predictions: &[f64],
    px_per_cm: f64,
    distance_cm: f64,
) -> Result<String, JsValue> {
    let points = |flat: &[f64]| flat.chunks_exact(2).map(|p| ScreenPoint { x: p[0], y: p[1] }).collect::<Vec<_>>();
    let defaults = ViewingSetup::default();
    let setup = ViewingSetup {
        px_per_cm: if px_per_cm > 0.0 { px_per_cm } else { defaults.px_per_cm },
        distance_cm: if distance_cm > 0.0 { distance_cm } else { defaults.distance_cm },
    };
    let report = validate(&points(targets), &points(predictions), &setup).map_err(js_error)?;
    serde_json::to_string(&report).map_err(js_error)
}
