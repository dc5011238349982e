//! deper-web: DEPER in the browser, built with wasm-bindgen (`web/build.sh`).
//!
//! * [`engine`]: a stage-1 run's subject embeddings `z_s`, with the same deper-model code as
//!   native `deper embed`, generic over the backend (tested natively on NdArray).
//! * [`mouse`]: mouse samples → attention trajectory, with the study export's builder.
//! * `bindings` (wasm32 only): the JavaScript API — `start`, `Embedder`,
//!   `trajectory_from_mouse` — on burn's wgpu backend (WebGPU) or, without a WebGPU adapter,
//!   NdArray on the CPU. `web/deper-worker.js` runs it in a Web Worker.
//! * `gaze_bindings` (wasm32 only): webcam gaze — `GazeTracker` (face landmarks, eye features,
//!   ridge calibration, Kalman smoothing) and `gaze_validation`.

pub mod engine;
pub mod mouse;

#[cfg(target_arch = "wasm32")]
mod bindings;
#[cfg(target_arch = "wasm32")]
mod gaze_bindings;
