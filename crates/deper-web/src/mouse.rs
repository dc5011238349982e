//! Mouse samples recorded by the page → an attention trajectory, with the builder the study
//! export uses ([`deper_core::trajectory::mouse_trajectory`]: time order, `clean_trace`, the
//! dwell rule with default parameters), so the page and native build the same steps.

use deper_core::trajectory::mouse_trajectory;
use deper_core::{RawSample, Trajectory};
use serde::Deserialize;

/// One pointer sample: time in milliseconds (any origin), position normalised to the image
/// (0..1 across its width and height).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MouseSample {
    pub t_ms: f64,
    pub x: f64,
    pub y: f64,
}

/// Parses `[{t_ms, x, y}, …]` (JSON text); errors name the sample and field.
pub fn parse_samples(json: &str) -> Result<Vec<MouseSample>, String> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| format!("mouse samples: {}: {}", e.path(), e.inner()))
}

/// The trajectory of one trial's samples. `width` and `height` (the image's displayed size in
/// pixels) must be positive: samples are already normalised, so they only guard against a
/// page that measured a hidden (zero-size) image, whose coordinates would be meaningless.
pub fn trajectory(samples: &[MouseSample], width: f64, height: f64) -> Result<Trajectory, String> {
    if !(width.is_finite() && width > 0.0 && height.is_finite() && height > 0.0) {
        return Err(format!("image size {width}×{height} must be positive"));
    }
    let raw = samples.iter().map(|s| RawSample { x: s.x, y: s.y, t: s.t_ms / 1000.0 }).collect();
    Ok(mouse_trajectory(raw, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_steps_native_builds() {
        let json = r#"[{"t_ms":1000,"x":0.3,"y":0.4},{"t_ms":1250,"x":0.3,"y":0.4},{"t_ms":1500,"x":0.31,"y":0.4},
            {"t_ms":1600,"x":0.9,"y":0.9}]"#;
        let samples = parse_samples(json).unwrap();
        let t = trajectory(&samples, 640.0, 480.0).unwrap();
        let raw = samples.iter().map(|s| RawSample { x: s.x, y: s.y, t: s.t_ms / 1000.0 }).collect();
        assert_eq!(t, mouse_trajectory(raw, &[]));
        assert_eq!(t.steps.len(), 1);
        assert!((t.steps[0].duration - 0.5).abs() < 1e-12);
        assert!((t.steps[0].start.unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_input_names_the_field() {
        let err = parse_samples(r#"[{"t_ms":0,"x":0.1,"y":0.2},{"t_ms":1,"x":"left","y":0}]"#).unwrap_err();
        assert!(err.contains("[1].x"), "{err}");
        assert!(trajectory(&[], 0.0, 10.0).unwrap_err().contains("must be positive"));
        assert!(trajectory(&[], 10.0, 10.0).unwrap().is_empty());
    }
}
