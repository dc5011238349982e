//! deper-gaze: the webcam eye-tracking math of the study page, after WebGazer (Papoutsaki et al.,
//! "WebGazer: Scalable Webcam Eye Tracking Using User Interactions", IJCAI 2016).
//!
//! Given a camera frame and MediaPipe face-mesh landmarks (found by another part of the page):
//!
//! * [`patch`]: each eye's box from its contour landmarks, resized to 10×6 grey and
//!   histogram-equalised → 120 features (CPU reference);
//! * `gpu` (feature `wgpu`): the same preprocessing as WGSL kernels (`shaders/`), bit-identical;
//! * [`ridge`]: ridge regression features → screen point, fitted on the click calibration;
//! * [`kalman`]: constant-velocity Kalman smoothing of the predictions;
//! * [`validation`]: error against validation targets in pixels and degrees of visual angle;
//! * [`attention`]: image-normalised gaze samples → fixations → attention steps with
//!   deper-core's builders;
//! * [`api`]: the serde messages the page sends and receives.
//!
//! Plain Rust (no burn, no tokio); builds for wasm32-unknown-unknown.

pub mod api;
pub mod attention;
pub mod error;
#[cfg(feature = "wgpu")]
pub mod gpu;
pub mod kalman;
pub mod patch;
pub mod ridge;
pub mod validation;

pub use error::{GazeError, Result};
