//! The whole CPU pipeline on rendered frames: a synthetic face whose irises move with the gaze →
//! landmarks → eye features → 9-point calibration (+ clicks) → predictions on held-out gaze
//! points → Kalman → validation.
#![allow(clippy::unwrap_used)]

use deper_gaze::api::{calibrate, CalibrationRequest};
use deper_gaze::kalman::{smooth, KalmanParams, TimedPoint};
use deper_gaze::patch::{
    eye_features, Frame, PatchParams, PixelFormat, FACE_MESH_LANDMARKS, LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR,
};
use deper_gaze::ridge::{CalibrationSample, ScreenPoint};
use deper_gaze::validation::validate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const W: u32 = 320;
const H: u32 = 240;
/// Eye centres in the frame: the subject's left eye is on the image's right.
const EYES: [(f64, f64); 2] = [(200.0, 110.0), (120.0, 110.0)];
const SCREEN: (f64, f64) = (1920.0, 1080.0);

/// An RGBA frame of a face looking at screen point (x, y): skin, two almond eyes (sclera) and
/// dark irises displaced by up to 7 px horizontally and 3 px vertically. The iris edge is a 6-px
/// ramp, like a webcam's optical and motion blur: with hard edges the equalised 10×6 patches are
/// nearly binary and no linear map interpolates between calibration points.
fn render(x: f64, y: f64) -> Vec<u8> {
    let (gx, gy) = (2.0 * x / SCREEN.0 - 1.0, 2.0 * y / SCREEN.1 - 1.0);
    let mut data = Vec::with_capacity((W * H * 4) as usize);
    for py in 0..H {
        for px in 0..W {
            let (fx, fy) = (f64::from(px) + 0.5, f64::from(py) + 0.5);
            let mut rgb = [205.0, 170.0, 150.0];
            for &(cx, cy) in &EYES {
                let (dx, dy) = ((fx - cx) / 18.0, (fy - cy) / 7.0);
                if dx * dx + dy * dy <= 1.0 {
                    rgb = [235.0, 235.0, 230.0];
                    let d = (fx - cx - 7.0 * gx).hypot(fy - cy - 3.0 * gy);
                    let cover = ((9.0 - d) / 6.0).clamp(0.0, 1.0);
                    for (c, iris) in rgb.iter_mut().zip([60.0, 40.0, 30.0]) {
                        *c = *c * (1.0 - cover) + iris * cover;
                    }
                }
            }
            data.extend(rgb.map(|c: f64| c.round() as u8));
            data.push(255);
        }
    }
    data
}

/// Landmarks: the eye contours on the almond's outline (corners at ±18 px), the rest elsewhere.
fn landmarks() -> Vec<[f32; 2]> {
    let mut l = vec![[160.0f32, 200.0]; FACE_MESH_LANDMARKS];
    for (contour, &(cx, cy)) in [LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR].iter().zip(&EYES) {
        for (k, &i) in contour.iter().enumerate() {
            // k = 0..=8: corner, lower lid, corner; 9..16: upper lid.
            let a = if k <= 8 {
                std::f64::consts::PI * k as f64 / 8.0
            } else {
                -std::f64::consts::PI * (k - 8) as f64 / 8.0
            };
            l[i] = [(cx + 18.0 * a.cos()) as f32, (cy + 7.0 * a.sin()) as f32];
        }
    }
    l
}

fn features(x: f64, y: f64) -> Vec<u8> {
    let data = render(x, y);
    let frame = Frame::new(W, H, PixelFormat::Rgba, &data).unwrap();
    eye_features(&frame, &landmarks(), &PatchParams::default()).unwrap().to_vec()
}

#[test]
fn rendered_eyes_calibrate_and_predict_held_out_gaze() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let grid: Vec<(f64, f64)> =
        [0.1, 0.5, 0.9].iter().flat_map(|&v| [0.1, 0.5, 0.9].map(|u| (u * SCREEN.0, v * SCREEN.1))).collect();
    let sample = |(x, y): (f64, f64)| CalibrationSample::from_bytes(&features(x, y), x, y);
    let clicks: Vec<(f64, f64)> =
        (0..25).map(|_| (rng.gen_range(0.0..SCREEN.0), rng.gen_range(0.0..SCREEN.1))).collect();
    let request = CalibrationRequest {
        calibration: grid.into_iter().map(sample).collect(),
        recent: clicks.into_iter().map(sample).collect(),
        ridge: Default::default(),
        setup: Default::default(),
    };
    let model = calibrate(&request).unwrap().model;

    // Held-out gaze inside the calibrated area, one frame each at 30 Hz.
    let targets: Vec<ScreenPoint> = (0..30)
        .map(|_| ScreenPoint { x: rng.gen_range(0.1..0.9) * SCREEN.0, y: rng.gen_range(0.1..0.9) * SCREEN.1 })
        .collect();
    let predictions: Vec<ScreenPoint> =
        targets.iter().map(|t| model.predict_bytes(&features(t.x, t.y)).unwrap()).collect();
    let report = validate(&targets, &predictions, &Default::default()).unwrap();
    // The features are a non-linear (rasterised, equalised) function of the gaze, so a linear map
    // fitted on 34 frames is approximate (~120 px here, 3°; WebGazer reports ~4° on real webcams).
    // The bound, a tenth of the screen width, is far below chance: a constant guess at the centre
    // is ~470 px off on average.
    assert!(report.mean_px < 192.0, "mean error {} px ({}°)", report.mean_px, report.mean_deg);

    // A fixation on one target: raw predictions are identical frames here, so Kalman must keep them.
    let fixed: Vec<TimedPoint> =
        (0..10).map(|i| TimedPoint { t: i as f64 / 30.0, x: predictions[0].x, y: predictions[0].y }).collect();
    let smoothed = smooth(&fixed, &KalmanParams::default()).unwrap();
    assert!(smoothed.iter().all(|p| (p.x - predictions[0].x).abs() < 1e-9 && (p.y - predictions[0].y).abs() < 1e-9));
}

#[test]
fn frame_features_message_holds_the_boxes_and_features() {
    let data = render(960.0, 540.0);
    let frame = Frame::new(W, H, PixelFormat::Rgba, &data).unwrap();
    let f = deper_gaze::api::FrameFeatures::compute(&frame, &landmarks(), &PatchParams::default()).unwrap();
    // Left eye: x 200 ± 18 grown by 3.6 → floor(178.4) = 178 .. ceil(221.6) = 222; y 110 ± 7 → 99 .. 121.
    assert_eq!(f.boxes[0], deper_gaze::patch::PatchBox { x: 178, y: 99, width: 44, height: 22 });
    assert_eq!(f.features, features(960.0, 540.0));
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(json["boxes"][1]["x"], 98);
    assert_eq!(json["features"].as_array().unwrap().len(), 120);
}
