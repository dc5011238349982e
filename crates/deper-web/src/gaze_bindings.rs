//! Webcam gaze in the page (wasm32 only): MediaPipe face landmarks (deper-landmarks: BlazeFace +
//! Face Mesh through tract, the models bundled) → eye-patch features (deper-gaze: crop, 10×6 grey,
//! equalised, 120 values; on WebGPU through the WGSL kernels of `shaders/` once `use_webgpu`
//! succeeded, else the CPU reference, which they equal byte for byte) → ridge calibration on the
//! participant's clicks → constant-velocity Kalman smoothing. WebGazer's pipeline (Papoutsaki et
//! al. 2016), with deper-gaze's documented choices.
//!
//! `web/deper-worker.js` exposes it as the `gaze_*` ops; the page sends video frames as RGBA.

use deper_gaze::gpu::GpuPreprocessor;
use deper_gaze::kalman::{GazeKalman, KalmanParams, TimedPoint};
use deper_gaze::patch::{PatchBox, FEATURE_LEN};
use deper_gaze::ridge::{CalibrationSample, CalibrationSet, RidgeModel, RidgeParams, ScreenPoint};
use deper_gaze::validation::{validate, ViewingSetup};
use deper_landmarks::{FaceMesh, Roi};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

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
    /// The WGSL preprocessing, shared with the promises `features` returns (requests come one at a
    /// time from the worker, and it is taken out while a frame runs on it).
    gpu: Rc<RefCell<Option<GpuPreprocessor>>>,
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
            gpu: Rc::new(RefCell::new(None)),
        })
    }

    /// Compiles the WGSL kernels on a WebGPU adapter; resolves with its name. Rejects (and the CPU
    /// path stays) where the browser has no WebGPU.
    pub fn use_webgpu(&self) -> js_sys::Promise {
        let slot = self.gpu.clone();
        future_to_promise(async move {
            let gpu = GpuPreprocessor::new().await.map_err(js_error)?;
            let name = gpu.adapter().to_string();
            *slot.borrow_mut() = Some(gpu);
            Ok(JsValue::from_str(&name))
        })
    }

    /// `"webgpu"` when the eye patches are computed by the WGSL kernels, else `"cpu"`.
    pub fn preprocessing(&self) -> String {
        if self.gpu.borrow().is_some() { "webgpu" } else { "cpu" }.into()
    }

    /// The eye boxes of the face in an RGBA frame, or `None` when no face is found.
    fn eye_boxes(&mut self, rgba: &[u8], width: u32, height: u32) -> Result<Option<[PatchBox; 2]>, JsValue> {
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
        let boxes = deper_gaze::patch::eye_boxes(&points, width, height, &Default::default()).map_err(js_error)?;
        Ok(Some(boxes))
    }

    /// The 120 eye features of an RGBA frame (a `Uint8Array`), or `null` when no face is found.
    /// With `check`, the WebGPU result is also computed on the CPU and a difference is an error.
    pub fn features(&mut self, rgba: Vec<u8>, width: u32, height: u32, check: bool) -> js_sys::Promise {
        let boxes = self.eye_boxes(&rgba, width, height);
        let slot = self.gpu.clone();
        future_to_promise(async move {
            let Some(boxes) = boxes? else { return Ok(JsValue::NULL) };
            let frame = deper_gaze::patch::Frame::new(width, height, deper_gaze::patch::PixelFormat::Rgba, &rgba)
                .map_err(js_error)?;
            let cpu = || deper_gaze::patch::features_from_boxes(&frame, &boxes).map_err(js_error);
            let taken = slot.borrow_mut().take();
            let features: [u8; FEATURE_LEN] = match taken {
                Some(mut gpu) => {
                    let result = gpu.features(&frame, &boxes).await;
                    *slot.borrow_mut() = Some(gpu);
                    let features = result.map_err(js_error)?;
                    if check && features != cpu()? {
                        return Err(js_error("the WGSL eye-patch kernels differ from the CPU reference"));
                    }
                    features
                }
                None => cpu()?,
            };
            Ok(js_sys::Uint8Array::from(&features[..]).into())
        })
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

/// One gaze sample as the page sends it: image-normalised position, seconds since the image appeared.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GazeSample {
    t: f64,
    x: f64,
    y: f64,
}

/// A trial's gaze samples `[{t, x, y}]` → attention trajectory (JSON as deper-core writes it), as the
/// study export builds it: time order, the importer's cleaning, fixations (I-VT, default
/// `GazeParams`) → steps.
#[wasm_bindgen]
pub fn trajectory_from_gaze(samples: JsValue) -> Result<JsValue, JsValue> {
    let text = js_sys::JSON::stringify(&samples)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| js_error("gaze samples: not JSON"))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let samples: Vec<GazeSample> =
        serde_path_to_error::deserialize(&mut de).map_err(|e| js_error(format!("gaze samples: {e}")))?;
    let mut raw: Vec<deper_core::RawSample> =
        samples.iter().map(|s| deper_core::RawSample { x: s.x, y: s.y, t: s.t }).collect();
    raw.sort_by(|a, b| a.t.total_cmp(&b.t));
    let attention =
        deper_gaze::attention::samples_to_attention(&raw, &[], &deper_core::trajectory::GazeParams::default())
            .map_err(js_error)?;
    let trajectory = deper_core::Trajectory { source: deper_core::TrajectorySource::Gaze, steps: attention.steps };
    let json = serde_json::to_string(&trajectory).map_err(js_error)?;
    js_sys::JSON::parse(&json)
}
