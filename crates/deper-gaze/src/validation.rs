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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: f64, y: f64) -> ScreenPoint {
        ScreenPoint { x, y }
    }

    #[test]
    fn errors_in_px_and_degrees_match_hand_values() {
        // 10 px/cm at 50 cm. Pairs: a 30-40-50 triangle (5 cm: 2·atan(5/100) = 5.724810°), an exact
        // hit, 100 px (10 cm: 2·atan(10/100) = 11.421186°) and 2·50·tan(0.5°)·10 = 8.726868 px (1°).
        let setup = ViewingSetup { px_per_cm: 10.0, distance_cm: 50.0 };
        let one_deg_px = 8.726867790758789;
        let targets = [p(100.0, 100.0), p(5.0, 5.0), p(0.0, 0.0), p(10.0, 20.0)];
        let predictions = [p(130.0, 140.0), p(5.0, 5.0), p(-60.0, 80.0), p(10.0, 20.0 + one_deg_px)];
        let r = validate(&targets, &predictions, &setup).unwrap();
        assert_eq!(r.n, 4);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        for (got, want) in r.errors_px.iter().zip([50.0, 0.0, 100.0, one_deg_px]) {
            assert!(close(*got, want), "{:?}", r.errors_px);
        }
        for (got, want) in r.errors_deg.iter().zip([5.724810452223496, 0.0, 11.421186274999286, 1.0]) {
            assert!(close(*got, want), "{:?}", r.errors_deg);
        }
        assert!(close(r.mean_px, (50.0 + 100.0 + one_deg_px) / 4.0));
        assert!(close(r.median_px, (one_deg_px + 50.0) / 2.0));
        assert!(close(r.mean_deg, (5.724810452223496 + 11.421186274999286 + 1.0) / 4.0));
        assert!(close(r.median_deg, (1.0 + 5.724810452223496) / 2.0));
        // Odd count: the middle value.
        let r = validate(&targets[..3], &predictions[..3], &setup).unwrap();
        assert!(close(r.median_px, 50.0));
    }

    #[test]
    fn defaults_are_css_pixels_at_60_cm() {
        let s = ViewingSetup::default();
        assert!((s.px_per_cm - 37.79527559055118).abs() < 1e-12);
        assert_eq!(s.distance_cm, 60.0);
        // 10 cm at 60 cm: 2·atan(5/60) = 9.527283°.
        assert!((s.px_to_deg(10.0 * s.px_per_cm) - 9.527283381452355).abs() < 1e-9);
        let parsed: ViewingSetup = serde_json::from_str(r#"{"distance_cm": 50}"#).unwrap();
        assert_eq!(parsed, ViewingSetup { distance_cm: 50.0, ..s });
    }

    #[test]
    fn bad_input_is_named() {
        let s = ViewingSetup::default();
        assert_eq!(
            validate(&[p(0.0, 0.0)], &[], &s),
            Err(GazeError::LengthMismatch { what: "validation", left: 1, right: 0 })
        );
        assert!(matches!(validate(&[], &[], &s), Err(GazeError::TooFewSamples { .. })));
        let err = validate(&[p(0.0, 0.0), p(1.0, 1.0)], &[p(0.0, 0.0), p(1.0, f64::NAN)], &s).unwrap_err();
        assert!(err.to_string().starts_with("predictions[1].y:"), "{err}");
        let bad = ViewingSetup { distance_cm: 0.0, ..s };
        assert!(matches!(
            validate(&[p(0.0, 0.0)], &[p(0.0, 0.0)], &bad),
            Err(GazeError::InvalidParam { field: "distance_cm", .. })
        ));
    }
}
