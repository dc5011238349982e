//! Ridge regression from eye features to screen position, fitted on the click calibration.
//!
//! As in WebGazer (Papoutsaki et al., IJCAI 2016): two independent ridge regressions (screen x and
//! screen y) on the 120 eye features, with λ = 1e-5 by default ([`RidgeParams::lambda`]), trained
//! on the 9-point click calibration plus the most recent clicks ([`CalibrationSet`]).
//!
//! **Intercept.** The model has an unpenalised intercept: features and targets are centred on
//! their means before the fit, and `predict(f) = ȳ + (f − μ)·W`. Screen coordinates sit far from 0
//! (the screen centre is ~(960, 540) px), and without an intercept the penalty would pull that
//! offset towards 0, so predictions would depend on where the origin is. With centring, shifting
//! all targets shifts all predictions by the same amount, whatever λ.
//!
//! **Solve.** With `Xc` the n×d centred features and `Yc` the n×2 centred targets, `W` minimises
//! `‖Xc W − Yc‖² + λ‖W‖²`. When `n ≤ d` (the usual case: tens of clicks, 120 features) the dual form
//! `W = Xcᵀ (Xc Xcᵀ + λI)⁻¹ Yc` solves an n×n system; otherwise the primal
//! `W = (Xcᵀ Xc + λI)⁻¹ Xcᵀ Yc` solves a d×d one. Both are the same W (push-through identity) and
//! are solved by Cholesky in f64. A pivot ≤ `m·ε·(largest diagonal entry)` (m×m system, ε the f64
//! machine epsilon: the usual numerical-rank threshold) is reported as
//! [`GazeError::Singular`]: it happens with λ = 0 and repeated or too few distinct samples
//! (centring removes one degree of freedom, so with λ = 0 the dual system is always singular).

use crate::error::{check_finite, GazeError, Result};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Fewest samples a fit accepts: a 2-D affine map of gaze needs three points not on a line.
pub const MIN_SAMPLES: usize = 3;

/// A point on the screen, in CSS pixels from the top-left corner of the page's viewport.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScreenPoint {
    pub x: f64,
    pub y: f64,
}

/// One training pair: the eye features when the participant looked at (clicked) a screen point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSample {
    pub features: Vec<f64>,
    pub x: f64,
    pub y: f64,
}

impl CalibrationSample {
    /// A sample from the 120 byte features of [`crate::patch::eye_features`].
    pub fn from_bytes(features: &[u8], x: f64, y: f64) -> Self {
        Self { features: features.iter().map(|&v| f64::from(v)).collect(), x, y }
    }
}

/// Ridge settings. Missing fields take their defaults when deserialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RidgeParams {
    /// Penalty on the weights. Default 1e-5, WebGazer's value (features are grey levels
    /// 0..=255, so this is a tiny penalty that only resolves the directions the clicks do not
    /// span). Must be finite and ≥ 0. On the rendered eyes of `tests/pipeline.rs` (34 frames) a
    /// larger λ generalised better (held-out error 119 px at 1e-5, 95 px at 1e3, 72 px at 1e5):
    /// worth tuning on real recordings before changing the default.
    pub lambda: f64,
    /// Most recent clicks kept besides the calibration points ([`CalibrationSet`]). Default 50:
    /// enough to follow a participant who shifts in the chair, few enough that an old posture is
    /// soon forgotten and the fit stays a 50×50 solve.
    pub max_recent: usize,
}

impl Default for RidgeParams {
    fn default() -> Self {
        Self { lambda: 1e-5, max_recent: 50 }
    }
}

/// The fitted mapping features → screen point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RidgeModel {
    /// μ, the mean feature vector of the training samples.
    pub feature_mean: Vec<f64>,
    /// ȳ, the mean target.
    pub target_mean: ScreenPoint,
    /// Weights of screen x, one per feature.
    pub weights_x: Vec<f64>,
    /// Weights of screen y, one per feature.
    pub weights_y: Vec<f64>,
    /// λ used.
    pub lambda: f64,
    /// Samples the model was fitted on.
    pub n_samples: usize,
}

impl RidgeModel {
    /// Fits the model (see the [module docs](self)).
    pub fn fit(samples: &[CalibrationSample], lambda: f64) -> Result<Self> {
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(GazeError::InvalidParam {
                field: "lambda",
                message: format!("must be finite and ≥ 0, got {lambda}"),
            });
        }
        let n = samples.len();
        if n < MIN_SAMPLES {
            return Err(GazeError::TooFewSamples { what: "ridge fit", got: n, need: MIN_SAMPLES });
        }
        let d = samples[0].features.len();
        for (i, s) in samples.iter().enumerate() {
            if s.features.len() != d || d == 0 {
                return Err(GazeError::FeatureLength {
                    what: "samples",
                    index: i,
                    expected: d.max(1),
                    got: s.features.len(),
                });
            }
            for (j, &v) in s.features.iter().enumerate() {
                check_finite(|| format!("samples[{i}].features[{j}]"), v)?;
            }
            check_finite(|| format!("samples[{i}].x"), s.x)?;
            check_finite(|| format!("samples[{i}].y"), s.y)?;
        }
        let inv_n = 1.0 / n as f64;
        let mut mu = vec![0.0; d];
        for s in samples {
            for (m, v) in mu.iter_mut().zip(&s.features) {
                *m += v * inv_n;
            }
        }
        let ybar = ScreenPoint {
            x: samples.iter().map(|s| s.x).sum::<f64>() * inv_n,
            y: samples.iter().map(|s| s.y).sum::<f64>() * inv_n,
        };
        // Row-major n×d centred features, and the two centred target columns.
        let xc: Vec<f64> = samples.iter().flat_map(|s| s.features.iter().zip(&mu).map(|(v, m)| v - m)).collect();
        let yx: Vec<f64> = samples.iter().map(|s| s.x - ybar.x).collect();
        let yy: Vec<f64> = samples.iter().map(|s| s.y - ybar.y).collect();
        let row = |i: usize| &xc[i * d..(i + 1) * d];

        let (weights_x, weights_y) = if n <= d {
            // Dual: (Xc Xcᵀ + λI) A = Yc, W = Xcᵀ A.
            let mut k = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..=i {
                    let v = dot(row(i), row(j));
                    k[i * n + j] = v;
                    k[j * n + i] = v;
                }
                k[i * n + i] += lambda;
            }
            let l = cholesky(&mut k, n)?;
            let (ax, ay) = (solve(l, n, yx), solve(l, n, yy));
            let mut wx = vec![0.0; d];
            let mut wy = vec![0.0; d];
            for i in 0..n {
                for (c, &v) in row(i).iter().enumerate() {
                    wx[c] += v * ax[i];
                    wy[c] += v * ay[i];
                }
            }
            (wx, wy)
        } else {
            // Primal: (Xcᵀ Xc + λI) W = Xcᵀ Yc.
            let mut g = vec![0.0; d * d];
            let mut bx = vec![0.0; d];
            let mut by = vec![0.0; d];
            for i in 0..n {
                let r = row(i);
                for a in 0..d {
                    bx[a] += r[a] * yx[i];
                    by[a] += r[a] * yy[i];
                    for b in 0..=a {
                        g[a * d + b] += r[a] * r[b];
                    }
                }
            }
            for a in 0..d {
                for b in 0..a {
                    g[b * d + a] = g[a * d + b];
                }
                g[a * d + a] += lambda;
            }
            let l = cholesky(&mut g, d)?;
            (solve(l, d, bx), solve(l, d, by))
        };
        Ok(Self { feature_mean: mu, target_mean: ybar, weights_x, weights_y, lambda, n_samples: n })
    }

    /// Number of features the model expects.
    pub fn n_features(&self) -> usize {
        self.feature_mean.len()
    }

    /// Predicted screen point of one feature vector.
    pub fn predict(&self, features: &[f64]) -> Result<ScreenPoint> {
        if features.len() != self.n_features() {
            return Err(GazeError::FeatureLength {
                what: "predict",
                index: 0,
                expected: self.n_features(),
                got: features.len(),
            });
        }
        let (mut x, mut y) = (self.target_mean.x, self.target_mean.y);
        for (j, ((&f, &m), (&wx, &wy))) in
            features.iter().zip(&self.feature_mean).zip(self.weights_x.iter().zip(&self.weights_y)).enumerate()
        {
            check_finite(|| format!("features[{j}]"), f)?;
            x += (f - m) * wx;
            y += (f - m) * wy;
        }
        Ok(ScreenPoint { x, y })
    }

    /// [`Self::predict`] on the 120 byte features of [`crate::patch::eye_features`].
    pub fn predict_bytes(&self, features: &[u8]) -> Result<ScreenPoint> {
        let f: Vec<f64> = features.iter().map(|&v| f64::from(v)).collect();
        self.predict(&f)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// In-place Cholesky of the symmetric positive-definite row-major `m × m` matrix `a`: on return
/// its lower triangle holds L with `a = L Lᵀ`.
fn cholesky(a: &mut [f64], m: usize) -> Result<&[f64]> {
    let max_diag = (0..m).map(|i| a[i * m + i].abs()).fold(0.0, f64::max);
    // The usual numerical-rank threshold: a pivot this small is rounding noise. For grey-level
    // features the dual system (n ≤ 120) has max_diag ≤ 120·255², so tol ≤ 2e-7, well under the
    // default λ = 1e-5 that floors the pivots of directions the samples do not span.
    let tol = m as f64 * f64::EPSILON * max_diag;
    for j in 0..m {
        let mut diag = a[j * m + j];
        for k in 0..j {
            diag -= a[j * m + k] * a[j * m + k];
        }
        if diag.is_nan() || diag <= tol {
            return Err(GazeError::Singular { pivot: j, value: diag });
        }
        let ljj = diag.sqrt();
        a[j * m + j] = ljj;
        for i in j + 1..m {
            let mut v = a[i * m + j];
            for k in 0..j {
                v -= a[i * m + k] * a[j * m + k];
            }
            a[i * m + j] = v / ljj;
        }
    }
    Ok(a)
}

/// Solves `L Lᵀ x = b` with the factor of [`cholesky`].
fn solve(l: &[f64], m: usize, mut b: Vec<f64>) -> Vec<f64> {
    for i in 0..m {
        let s: f64 = (0..i).map(|k| l[i * m + k] * b[k]).sum();
        b[i] = (b[i] - s) / l[i * m + i];
    }
    for i in (0..m).rev() {
        let s: f64 = (i + 1..m).map(|k| l[k * m + i] * b[k]).sum();
        b[i] = (b[i] - s) / l[i * m + i];
    }
    b
}

/// The training set: the calibration clicks, always kept, plus a bounded window of the most
/// recent clicks made during the study (the oldest is dropped first).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CalibrationSet {
    pub calibration: Vec<CalibrationSample>,
    pub recent: VecDeque<CalibrationSample>,
}

impl CalibrationSet {
    /// Adds a calibration click (kept for the whole session).
    pub fn push_calibration(&mut self, sample: CalibrationSample) {
        self.calibration.push(sample);
    }

    /// Adds a click made during the study, keeping at most `max_recent` of them.
    pub fn push_click(&mut self, sample: CalibrationSample, max_recent: usize) {
        self.recent.push_back(sample);
        while self.recent.len() > max_recent {
            self.recent.pop_front();
        }
    }

    /// All samples a fit uses: the calibration clicks, then the recent ones.
    pub fn samples(&self) -> Vec<CalibrationSample> {
        self.calibration.iter().chain(&self.recent).cloned().collect()
    }

    /// Fits a [`RidgeModel`] on [`Self::samples`]; `params.max_recent` also trims the window, so
    /// a smaller limit given later takes effect.
    pub fn fit(&self, params: &RidgeParams) -> Result<RidgeModel> {
        let skip = self.recent.len().saturating_sub(params.max_recent);
        let samples: Vec<_> = self.calibration.iter().chain(self.recent.iter().skip(skip)).cloned().collect();
        RidgeModel::fit(&samples, params.lambda)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(features: Vec<f64>, x: f64, y: f64) -> CalibrationSample {
        CalibrationSample { features, x, y }
    }

    /// Features 3-dimensional, targets an affine map of them.
    fn affine(n: usize) -> Vec<CalibrationSample> {
        (0..n)
            .map(|i| {
                let f = vec![(i % 5) as f64, ((i * 7) % 11) as f64, ((i * i) % 13) as f64];
                let (x, y) = (500.0 + 3.0 * f[0] - 2.0 * f[1] + 0.5 * f[2], 300.0 - f[0] + 4.0 * f[2]);
                sample(f, x, y)
            })
            .collect()
    }

    #[test]
    fn primal_and_dual_both_recover_an_affine_map() {
        // n = 3 ≤ d = 3 takes the dual form, n = 40 the primal; both must give the true weights.
        for n in [40, 3] {
            let samples = affine(n);
            let m = RidgeModel::fit(&samples, 1e-9).unwrap();
            if n == 40 {
                for (w, t) in m.weights_x.iter().zip([3.0, -2.0, 0.5]) {
                    assert!((w - t).abs() < 1e-8, "{:?}", m.weights_x);
                }
                for (w, t) in m.weights_y.iter().zip([-1.0, 0.0, 4.0]) {
                    assert!((w - t).abs() < 1e-8, "{:?}", m.weights_y);
                }
            }
            for s in &samples {
                let p = m.predict(&s.features).unwrap();
                assert!((p.x - s.x).abs() < 1e-6 && (p.y - s.y).abs() < 1e-6, "n = {n}: {p:?} vs {s:?}");
            }
        }
    }

    #[test]
    fn intercept_is_not_penalised() {
        // With a large λ the slopes shrink, but shifting every target shifts every prediction by
        // exactly the same amount: the offset lives in the unpenalised intercept.
        let samples = affine(30);
        let shifted: Vec<_> = samples.iter().map(|s| sample(s.features.clone(), s.x + 1000.0, s.y - 500.0)).collect();
        let (a, b) = (RidgeModel::fit(&samples, 50.0).unwrap(), RidgeModel::fit(&shifted, 50.0).unwrap());
        for (wa, wb) in a.weights_x.iter().zip(&b.weights_x) {
            assert!((wa - wb).abs() < 1e-12);
        }
        for s in &samples {
            let (pa, pb) = (a.predict(&s.features).unwrap(), b.predict(&s.features).unwrap());
            assert!((pb.x - pa.x - 1000.0).abs() < 1e-9 && (pb.y - pa.y + 500.0).abs() < 1e-9);
        }
    }

    #[test]
    fn bad_input_gives_clear_errors() {
        let s = affine(5);
        assert_eq!(
            RidgeModel::fit(&s[..2], 1e-5),
            Err(GazeError::TooFewSamples { what: "ridge fit", got: 2, need: 3 })
        );
        let mut short = s.clone();
        short[3].features.pop();
        assert_eq!(
            RidgeModel::fit(&short, 1e-5),
            Err(GazeError::FeatureLength { what: "samples", index: 3, expected: 3, got: 2 })
        );
        let mut nan = s.clone();
        nan[2].features[1] = f64::NAN;
        let err = RidgeModel::fit(&nan, 1e-5).unwrap_err();
        assert!(err.to_string().starts_with("samples[2].features[1]:"), "{err}");
        assert!(matches!(RidgeModel::fit(&s, -1.0), Err(GazeError::InvalidParam { field: "lambda", .. })));
        // λ = 0: repeated samples make the primal system singular; the dual one always is.
        let repeated: Vec<_> = (0..10).map(|i| sample(vec![1.0, 2.0, 3.0], i as f64, 0.0)).collect();
        assert!(matches!(RidgeModel::fit(&repeated, 0.0), Err(GazeError::Singular { .. })));
        assert!(matches!(RidgeModel::fit(&s[..3], 0.0), Err(GazeError::Singular { .. })));
        // With λ > 0 the same data fit: all features equal, so the prediction is the mean target.
        let m = RidgeModel::fit(&repeated, 1e-5).unwrap();
        assert!((m.predict(&[1.0, 2.0, 3.0]).unwrap().x - 4.5).abs() < 1e-12);
        // The most spread grey-level features there are (0 or 255 each): the default λ is far above
        // the rounding threshold, in the dual (9 samples) and the primal (200 samples) form.
        for n in [9, 200] {
            let extreme: Vec<_> = (0..n)
                .map(|i| {
                    let f: Vec<f64> =
                        (0..120).map(|j| if (i * 7 + j * 3 + i * j) % 5 < 2 { 0.0 } else { 255.0 }).collect();
                    sample(f, i as f64, 0.0)
                })
                .collect();
            assert!(RidgeModel::fit(&extreme, 1e-5).is_ok(), "n = {n}");
        }
        assert_eq!(
            m.predict(&[1.0]).unwrap_err(),
            GazeError::FeatureLength { what: "predict", index: 0, expected: 3, got: 1 }
        );
    }

    #[test]
    fn calibration_set_keeps_a_bounded_window_of_recent_clicks() {
        let all = affine(70);
        let mut set = CalibrationSet::default();
        for s in &all[..9] {
            set.push_calibration(s.clone());
        }
        for s in &all[9..] {
            set.push_click(s.clone(), 50);
        }
        assert_eq!(set.calibration.len(), 9);
        assert_eq!(set.recent.len(), 50);
        // The oldest 11 clicks were dropped.
        assert_eq!(set.recent.front(), Some(&all[20]));
        assert_eq!(set.samples().len(), 59);
        assert_eq!(set.fit(&RidgeParams::default()).unwrap().n_samples, 59);
        assert_eq!(set.fit(&RidgeParams { max_recent: 10, ..RidgeParams::default() }).unwrap().n_samples, 19);
        let p = RidgeParams::default();
        assert_eq!((p.lambda, p.max_recent), (1e-5, 50));
    }
}
