//! Kalman smoothing of predicted gaze points.
//!
//! A constant-velocity model per screen axis (x and y are independent and share the parameters):
//! state `(p, v)` in px and px/s, measurement `p + noise`. Between two samples `dt` seconds apart
//! the state moves `p += v·dt` and gains the process noise of a white-noise acceleration with
//! spectral density `q` (px²/s³; Bar-Shalom, Li & Kirubarajan, *Estimation with Applications to
//! Tracking and Navigation*, 2001, §6.2.2):
//!
//! `Q = q · [[dt³/3, dt²/2], [dt²/2, dt]]`, measurement variance `R = σ²`.
//!
//! Defaults ([`KalmanParams`]): `σ = 100 px` — webcam gaze after ridge calibration is typically
//! off by 100–200 px (WebGazer reports about 4° ≈ 170 px at 60 cm); `q = 10⁶ px²/s³` — over a
//! 33 ms frame this lets the velocity change by about √(q·dt) ≈ 180 px/s, so a saccade of a few
//! hundred px is followed within a few frames while fixation jitter is averaged over several.
//! The filter starts at the first measurement with velocity 0, position variance `R` and velocity
//! variance `initial_velocity_std²` (default (1000 px/s)², a slow saccade).

use crate::error::{check_finite, GazeError, Result};
use serde::{Deserialize, Serialize};

/// Noise model of the filter. Missing fields take their defaults when deserialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KalmanParams {
    /// σ, the standard deviation of a raw prediction, in px. Default 100.
    pub measurement_std_px: f64,
    /// q, the spectral density of the white-noise acceleration, in px²/s³. Default 1e6.
    pub process_noise: f64,
    /// Standard deviation of the velocity at the first sample, in px/s. Default 1000.
    pub initial_velocity_std: f64,
}

impl Default for KalmanParams {
    fn default() -> Self {
        Self { measurement_std_px: 100.0, process_noise: 1e6, initial_velocity_std: 1000.0 }
    }
}

impl KalmanParams {
    fn check(&self) -> Result<()> {
        for (field, v) in [
            ("measurement_std_px", self.measurement_std_px),
            ("process_noise", self.process_noise),
            ("initial_velocity_std", self.initial_velocity_std),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(GazeError::InvalidParam { field, message: format!("must be finite and > 0, got {v}") });
            }
        }
        Ok(())
    }
}

/// A timestamped screen point (t in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimedPoint {
    pub t: f64,
    pub x: f64,
    pub y: f64,
}

/// One axis: position, velocity and their covariance `[[pp, pv], [pv, vv]]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    p: f64,
    v: f64,
    pp: f64,
    pv: f64,
    vv: f64,
}

impl Axis {
    fn start(z: f64, params: &KalmanParams) -> Self {
        let r = params.measurement_std_px.powi(2);
        Self { p: z, v: 0.0, pp: r, pv: 0.0, vv: params.initial_velocity_std.powi(2) }
    }

    fn step(&mut self, dt: f64, z: f64, params: &KalmanParams) -> f64 {
        let q = params.process_noise;
        // Predict: F = [[1, dt], [0, 1]], P ← F P Fᵀ + Q.
        self.p += self.v * dt;
        self.pp += 2.0 * dt * self.pv + dt * dt * self.vv + q * dt.powi(3) / 3.0;
        self.pv += dt * self.vv + q * dt * dt / 2.0;
        self.vv += q * dt;
        // Update with H = [1, 0].
        let s = self.pp + params.measurement_std_px.powi(2);
        let (k0, k1) = (self.pp / s, self.pv / s);
        let innovation = z - self.p;
        self.p += k0 * innovation;
        self.v += k1 * innovation;
        // P ← (I − K H) P, written out for the symmetric 2×2 case.
        let (pp, pv) = (self.pp, self.pv);
        self.pp = (1.0 - k0) * pp;
        self.pv = (1.0 - k0) * pv;
        self.vv -= k1 * pv;
        self.p
    }
}

/// A running filter: feed it predictions in time order, get smoothed points back.
#[derive(Debug, Clone, PartialEq)]
pub struct GazeKalman {
    params: KalmanParams,
    state: Option<(f64, Axis, Axis)>,
}

impl GazeKalman {
    pub fn new(params: KalmanParams) -> Result<Self> {
        params.check()?;
        Ok(Self { params, state: None })
    }

    /// Forgets the track (e.g. after the face was lost); the next point starts a new one.
    pub fn reset(&mut self) {
        self.state = None;
    }

    /// Filters one measurement. Equal times are allowed (`dt = 0`: a second measurement of the
    /// same instant); earlier times are an error.
    pub fn update(&mut self, point: TimedPoint) -> Result<TimedPoint> {
        check_finite(|| "point.t".into(), point.t)?;
        check_finite(|| "point.x".into(), point.x)?;
        check_finite(|| "point.y".into(), point.y)?;
        let params = &self.params;
        let (x, y) = match &mut self.state {
            None => {
                self.state = Some((point.t, Axis::start(point.x, params), Axis::start(point.y, params)));
                (point.x, point.y)
            }
            Some((last_t, ax, ay)) => {
                let dt = point.t - *last_t;
                if dt < 0.0 {
                    return Err(GazeError::TimeBackwards { what: "points", index: 0, t: point.t, previous: *last_t });
                }
                *last_t = point.t;
                (ax.step(dt, point.x, params), ay.step(dt, point.y, params))
            }
        };
        Ok(TimedPoint { t: point.t, x, y })
    }
}

/// Filters a whole series (see [`GazeKalman::update`]); an error names the offending index.
pub fn smooth(points: &[TimedPoint], params: &KalmanParams) -> Result<Vec<TimedPoint>> {
    let mut filter = GazeKalman::new(params.clone())?;
    points
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            filter.update(p).map_err(|e| match e {
                GazeError::TimeBackwards { t, previous, .. } => {
                    GazeError::TimeBackwards { what: "points", index: i, t, previous }
                }
                GazeError::NonFinite { field, value } => GazeError::NonFinite {
                    field: format!("points[{i}].{}", field.strip_prefix("point.").unwrap_or(&field)),
                    value,
                },
                other => other,
            })
        })
        .collect()
}
