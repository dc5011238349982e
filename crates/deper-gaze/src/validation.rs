//! Validation of a calibration: error between shown targets and predicted gaze, in pixels and in
//! degrees of visual angle.
//!
//! An error of `e` px is `e / px_per_cm` cm on the screen; at viewing distance `D` cm it subtends
//! `2·atan(e_cm / (2D))` degrees — the angle of a segment of that length centred on the line of
//! sight. Away from the screen centre the true angle is slightly smaller (the screen is farther
//! and oblique); the formula is the usual one for reporting tracker accuracy and is exact where
//! the participant looks straight at the screen.
//!
//! Defaults ([`ViewingSetup`]): 96 px per inch = 37.795 px/cm, the CSS reference pixel (a page
//! that knows the real screen size should pass it), and 60 cm, a typical desktop viewing
//! distance (the usual 50–70 cm range of webcam eye-tracking studies).

use crate::error::{check_finite, GazeError, Result};
use crate::ridge::ScreenPoint;
use serde::{Deserialize, Serialize};

/// Screen resolution and viewing distance. Missing fields take their defaults when deserialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewingSetup {
    /// Screen pixels (CSS px) per centimetre. Default 96 / 2.54.
    pub px_per_cm: f64,
    /// Eye-to-screen distance in cm. Default 60.
    pub distance_cm: f64,
}

impl Default for ViewingSetup {
    fn default() -> Self {
        Self { px_per_cm: 96.0 / 2.54, distance_cm: 60.0 }
    }
}

impl ViewingSetup {
    fn check(&self) -> Result<()> {
        for (field, v) in [("px_per_cm", self.px_per_cm), ("distance_cm", self.distance_cm)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(GazeError::InvalidParam { field, message: format!("must be finite and > 0, got {v}") });
            }
        }
        Ok(())
    }

    /// Degrees of visual angle subtended by `px` pixels (see the [module docs](self)).
    pub fn px_to_deg(&self, px: f64) -> f64 {
        let cm = px / self.px_per_cm;
        2.0 * (cm / (2.0 * self.distance_cm)).atan().to_degrees()
    }
}

/// Errors of a validation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Target/prediction pairs.
    pub n: usize,
    pub mean_px: f64,
    /// Median (mean of the two middle values for an even count).
    pub median_px: f64,
    pub mean_deg: f64,
    pub median_deg: f64,
    /// Per pair, in the order given.
    pub errors_px: Vec<f64>,
    pub errors_deg: Vec<f64>,
    /// The setup used for the degrees.
    pub setup: ViewingSetup,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 0 {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

/// Euclidean errors between `targets[i]` and `predictions[i]` and their summary.
pub fn validate(
    targets: &[ScreenPoint],
    predictions: &[ScreenPoint],
    setup: &ViewingSetup,
) -> Result<ValidationReport> {
    setup.check()?;
    if targets.len() != predictions.len() {
        return Err(GazeError::LengthMismatch { what: "validation", left: targets.len(), right: predictions.len() });
    }
    if targets.is_empty() {
        return Err(GazeError::TooFewSamples { what: "validation", got: 0, need: 1 });
    }
    let mut errors_px = Vec::with_capacity(targets.len());
    for (i, (t, p)) in targets.iter().zip(predictions).enumerate() {
        check_finite(|| format!("targets[{i}].x"), t.x)?;
        check_finite(|| format!("targets[{i}].y"), t.y)?;
        check_finite(|| format!("predictions[{i}].x"), p.x)?;
        check_finite(|| format!("predictions[{i}].y"), p.y)?;
        errors_px.push((t.x - p.x).hypot(t.y - p.y));
    }
    let errors_deg: Vec<f64> = errors_px.iter().map(|&e| setup.px_to_deg(e)).collect();
    let n = errors_px.len();
    Ok(ValidationReport {
        n,
        mean_px: errors_px.iter().sum::<f64>() / n as f64,
        median_px: median(&errors_px),
        mean_deg: errors_deg.iter().sum::<f64>() / n as f64,
        median_deg: median(&errors_deg),
        errors_px,
        errors_deg,
        setup: setup.clone(),
    })
}
