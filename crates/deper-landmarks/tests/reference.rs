//! The converted ONNX models, run by tract, against the ORIGINAL TFLite models run by TensorFlow's
//! TFLite interpreter (reference outputs saved by scripts/convert_mediapipe.py) on the committed
//! model-sized test inputs.
//!
//! Tolerance: |tract - tflite| <= 1e-4 * max(1, |tflite|), i.e. 1e-4 absolute for values up to 1 and
//! 1e-4 relative above. The outputs are pixel offsets and logits up to ~250 in magnitude; float32 has
//! ~1e-7 relative precision, and the two runtimes sum the convolutions in different orders (and
//! TFLite's XNNPACK fuses ops), so each of the ~20–30 layers adds rounding of order 1e-7 relative.
//! 1e-4 relative leaves room for that accumulation while still catching any wrong operator, layout
//! or weight (those differ by far more than 1e-2).
#![allow(clippy::unwrap_used)]
#![cfg(feature = "bundled")]

mod common;

use common::{manifest, mesh, npy, rgb};
use deper_landmarks::frame::rgb_to_tensor;
use deper_landmarks::{DETECTOR_RANGE, LANDMARK_RANGE};

const TOLERANCE: f32 = 1e-4;

/// Largest |a - b| / max(1, |b|) over the two arrays.
fn max_scaled_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0, f32::max)
}

fn check_model(model: &str) {
    let mesh = mesh();
    let manifest = manifest();
    let mut cases = 0;
    for case in manifest["raw"].as_array().unwrap().iter().filter(|c| c["model"] == model) {
        let input_png = case["input"].as_str().unwrap();
        let (pixels, ..) = rgb(input_png);
        let outputs: Vec<(&str, Vec<f32>)> = match model {
            "detector" => {
                let out = mesh.run_detector(&rgb_to_tensor(&pixels, DETECTOR_RANGE)).unwrap();
                vec![("regressors", out.regressors), ("classificators", out.classificators)]
            }
            _ => {
                let out = mesh.run_landmarks(&rgb_to_tensor(&pixels, LANDMARK_RANGE)).unwrap();
                vec![("conv2d_21", out.landmarks), ("conv2d_31", vec![out.face_logit])]
            }
        };
        for (name, got) in outputs {
            let reference = &case["outputs"][name];
            let (shape, want) = npy(reference["file"].as_str().unwrap());
            assert_eq!(serde_json::json!(shape), reference["shape"]);
            let err = max_scaled_error(&got, &want);
            let max_abs = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
            println!("{input_png} {name}: max scaled error {err:.2e}, max abs error {max_abs:.2e}");
            assert!(err <= TOLERANCE, "{input_png} {name}: error {err:e} > {TOLERANCE:e}");
        }
        cases += 1;
    }
    assert_eq!(cases, 3, "three committed inputs per model");
}

#[test]
fn detector_matches_tflite() {
    check_model("detector");
}

#[test]
fn landmark_model_matches_tflite() {
    check_model("landmarks");
}
