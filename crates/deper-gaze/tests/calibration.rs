//! Ridge calibration end to end: recovers a known linear mapping from synthetic features, with
//! and without noise, predicts held-out points, and goes through the page's JSON messages.
#![allow(clippy::unwrap_used)]

use deper_gaze::api::{calibrate, CalibrationRequest, CalibrationResponse, PredictRequest, ValidationRequest};
use deper_gaze::patch::FEATURE_LEN;
use deper_gaze::ridge::{CalibrationSample, RidgeModel, ScreenPoint};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Standard normal deviate (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let (u, v): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// A linear map features → screen: weights and offset.
struct Truth {
    wx: Vec<f64>,
    wy: Vec<f64>,
    offset: (f64, f64),
}

impl Truth {
    fn random(rng: &mut ChaCha8Rng) -> Self {
        Self {
            wx: (0..FEATURE_LEN).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            wy: (0..FEATURE_LEN).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            offset: (960.0, 540.0),
        }
    }

    fn apply(&self, f: &[f64]) -> (f64, f64) {
        let dot = |w: &[f64]| w.iter().zip(f).map(|(a, b)| a * b).sum::<f64>();
        (self.offset.0 + dot(&self.wx), self.offset.1 + dot(&self.wy))
    }
}

fn random_features(rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..FEATURE_LEN).map(|_| rng.gen_range(0.0..255.0)).collect()
}

fn rms(model: &RidgeModel, points: &[(Vec<f64>, (f64, f64))]) -> f64 {
    let s: f64 = points
        .iter()
        .map(|(f, (x, y))| {
            let p = model.predict(f).unwrap();
            (p.x - x).powi(2) + (p.y - y).powi(2)
        })
        .sum();
    (s / points.len() as f64).sqrt()
}

#[test]
fn recovers_a_known_linear_map_from_full_rank_features() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let truth = Truth::random(&mut rng);
    let held_out: Vec<_> = (0..50)
        .map(|_| {
            let f = random_features(&mut rng);
            let t = truth.apply(&f);
            (f, t)
        })
        .collect();

    // Noise-free, 300 samples > 120 features: the weights themselves come back. λ = 1e-5 against
    // eigenvalues of XcᵀXc of order 10⁵ biases them by ~1e-10; the bound leaves room for rounding.
    let samples: Vec<_> = (0..300)
        .map(|_| {
            let f = random_features(&mut rng);
            let (x, y) = truth.apply(&f);
            CalibrationSample { features: f, x, y }
        })
        .collect();
    let model = RidgeModel::fit(&samples, 1e-5).unwrap();
    for (got, want) in model.weights_x.iter().chain(&model.weights_y).zip(truth.wx.iter().chain(&truth.wy)) {
        assert!((got - want).abs() < 1e-6, "weight {got} vs {want}");
    }
    assert!(rms(&model, &held_out) < 1e-4, "held-out rms {}", rms(&model, &held_out));

    // Targets with σ = 2 px noise, 600 samples: least squares leaves a held-out error of about
    // σ·√(d/n) = 2·√(120/600) ≈ 0.9 px (rms over both axes ≈ 1.3 px); 2 px is well above that and
    // well below the 2.8 px of the noise itself.
    let samples: Vec<_> = (0..600)
        .map(|_| {
            let f = random_features(&mut rng);
            let (x, y) = truth.apply(&f);
            CalibrationSample { features: f, x: x + 2.0 * normal(&mut rng), y: y + 2.0 * normal(&mut rng) }
        })
        .collect();
    let model = RidgeModel::fit(&samples, 1e-5).unwrap();
    let err = rms(&model, &held_out);
    assert!(err < 2.0, "held-out rms with noisy targets {err}");
}

/// Eye features of a participant looking at screen point `g`: in this synthetic eye, each feature
/// moves linearly with the gaze (`base + M·g`, g normalised to [-1, 1]²) plus sensor noise.
struct Eye {
    base: Vec<f64>,
    m: Vec<[f64; 2]>,
}

impl Eye {
    fn random(rng: &mut ChaCha8Rng) -> Self {
        Self {
            base: (0..FEATURE_LEN).map(|_| rng.gen_range(60.0..190.0)).collect(),
            m: (0..FEATURE_LEN).map(|_| [rng.gen_range(-40.0..40.0), rng.gen_range(-40.0..40.0)]).collect(),
        }
    }

    fn features(&self, x: f64, y: f64, noise: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let g = [x / 960.0 - 1.0, y / 540.0 - 1.0];
        self.base.iter().zip(&self.m).map(|(b, m)| b + m[0] * g[0] + m[1] * g[1] + noise * normal(rng)).collect()
    }
}

fn nine_points() -> Vec<(f64, f64)> {
    let xs = [192.0, 960.0, 1728.0];
    let ys = [108.0, 540.0, 972.0];
    ys.iter().flat_map(|&y| xs.iter().map(move |&x| (x, y))).collect()
}

fn request(eye: &Eye, noise: f64, rng: &mut ChaCha8Rng, clicks: usize) -> CalibrationRequest {
    let sample =
        |x: f64, y: f64, rng: &mut ChaCha8Rng| CalibrationSample { features: eye.features(x, y, noise, rng), x, y };
    CalibrationRequest {
        calibration: nine_points().into_iter().map(|(x, y)| sample(x, y, rng)).collect(),
        recent: (0..clicks).map(|_| sample(rng.gen_range(0.0..1920.0), rng.gen_range(0.0..1080.0), rng)).collect(),
        ridge: Default::default(),
        setup: Default::default(),
    }
}

#[test]
fn nine_point_calibration_predicts_held_out_points() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let eye = Eye::random(&mut rng);
    let targets: Vec<(f64, f64)> = (0..40).map(|_| (rng.gen_range(0.0..1920.0), rng.gen_range(0.0..1080.0))).collect();

    // Noise-free: the nine points span the features' affine plane, so every point of it is exact.
    let response = calibrate(&request(&eye, 0.0, &mut rng, 0)).unwrap();
    assert_eq!(response.model.n_samples, 9);
    let held_out: Vec<_> = targets.iter().map(|&(x, y)| (eye.features(x, y, 0.0, &mut rng), (x, y))).collect();
    let err = rms(&response.model, &held_out);
    assert!(err < 1e-3, "noise-free held-out rms {err}");
    assert!(response.training.mean_px < 1e-3);

    // Sensor noise of 2 grey levels per feature, nine points plus 30 clicks. The 120 features
    // carry the gaze redundantly, so the map averages the noise: the error stays a small fraction
    // of the ~200 px a webcam tracker achieves. 30 px is about 0.8° at the default setup.
    let response = calibrate(&request(&eye, 2.0, &mut rng, 30)).unwrap();
    assert_eq!(response.model.n_samples, 39);
    let held_out: Vec<_> = targets.iter().map(|&(x, y)| (eye.features(x, y, 2.0, &mut rng), (x, y))).collect();
    let err = rms(&response.model, &held_out);
    assert!(err < 30.0, "noisy held-out rms {err}");

    // One prediction through the page's message.
    let predict: PredictRequest =
        serde_json::from_value(serde_json::json!({"t": 2.5, "features": held_out[0].0})).unwrap();
    let (p, want) = (predict.run(&response.model).unwrap(), response.model.predict(&held_out[0].0).unwrap());
    assert_eq!((p.t, p.x, p.y), (2.5, want.x, want.y));

    // The same predictions through the validation message.
    let validation = ValidationRequest {
        targets: held_out.iter().map(|(_, (x, y))| ScreenPoint { x: *x, y: *y }).collect(),
        predictions: held_out.iter().map(|(f, _)| response.model.predict(f).unwrap()).collect(),
        setup: Default::default(),
    }
    .run()
    .unwrap();
    assert_eq!(validation.n, 40);
    assert!(validation.mean_px <= err + 1e-9, "mean {} vs rms {err}", validation.mean_px);
    assert!(validation.mean_deg < 1.0);
}

#[test]
fn calibration_messages_round_trip_as_json() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let eye = Eye::random(&mut rng);
    let req = request(&eye, 1.0, &mut rng, 3);
    let json = serde_json::to_string(&req).unwrap();
    let back: CalibrationRequest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, req);
    let response = calibrate(&back).unwrap();
    let json = serde_json::to_string(&response).unwrap();
    let back: CalibrationResponse = serde_json::from_str(&json).unwrap();
    assert_eq!(back.model.n_features(), FEATURE_LEN);
    assert_eq!(back.model.n_samples, 12);

    // Only `calibration` is required; a misspelt field is refused, not ignored.
    let minimal = serde_json::json!({
        "calibration": req.calibration.iter().map(|s| serde_json::json!({"features": s.features, "x": s.x, "y": s.y})).collect::<Vec<_>>(),
        "ridge": {"lambda": 0.001}
    });
    let parsed: CalibrationRequest = serde_json::from_value(minimal.clone()).unwrap();
    assert_eq!((parsed.ridge.lambda, parsed.ridge.max_recent), (0.001, 50));
    assert!(parsed.recent.is_empty());
    let mut typo = minimal;
    typo["recnt"] = serde_json::json!([]);
    let err = serde_json::from_value::<CalibrationRequest>(typo).unwrap_err();
    assert!(err.to_string().contains("recnt"), "{err}");

    // Too few calibration points is an error the page can show as it is.
    let few = CalibrationRequest { calibration: req.calibration[..2].to_vec(), recent: Vec::new(), ..req };
    assert_eq!(calibrate(&few).unwrap_err().to_string(), "ridge fit: need at least 3 samples, got 2");
}
