//! Gaze samples → attention steps through deper-core's builders: the result must be what the
//! native path (`clean_trace` + `fixations_to_steps`) gives on the same samples.
#![allow(clippy::unwrap_used)]

use deper_core::import::{clean_trace, ImportReport};
use deper_core::trajectory::{fixations_to_steps, FixationMethod, GazeParams};
use deper_core::{RawSample, Utterance};
use deper_gaze::api::AttentionRequest;
use deper_gaze::attention::{samples_to_attention, screen_points_to_attention, ImageRect};
use deper_gaze::kalman::TimedPoint;
use deper_gaze::validation::ViewingSetup;
use deper_gaze::GazeError;

/// 30 Hz screen gaze on an 800×600 image shown at (100, 50): three 0.5 s fixations with ±4 px
/// jitter, joined by one in-flight sample each.
fn screen_points() -> Vec<TimedPoint> {
    let fixations = [(300.0, 200.0), (700.0, 450.0), (180.0, 560.0)];
    let mut out = Vec::new();
    for (k, &(x, y)) in fixations.iter().enumerate() {
        for i in 0..15 {
            let j = ((i * 7) % 5) as f64 - 2.0;
            out.push((x + 2.0 * j, y - 2.0 * j));
        }
        if let Some(&(nx, ny)) = fixations.get(k + 1) {
            out.push(((x + nx) / 2.0, (y + ny) / 2.0));
        }
    }
    out.into_iter().enumerate().map(|(i, (x, y))| TimedPoint { t: i as f64 / 30.0, x, y }).collect()
}

const RECT: ImageRect = ImageRect { left: 100.0, top: 50.0, width: 800.0, height: 600.0 };

#[test]
fn screen_gaze_becomes_the_same_steps_as_the_native_builders() {
    let setup = ViewingSetup::default();
    let (w_deg, h_deg) = RECT.visual_angle(&setup);
    let params = GazeParams { image_width_deg: w_deg, image_height_deg: h_deg, ..GazeParams::default() };
    let utterances = vec![Utterance { utterance: "a red kite".into(), start_time: 0.6, end_time: 0.9 }];
    let points = screen_points();
    let result = screen_points_to_attention(&points, &RECT, &utterances, &params).unwrap();

    let samples: Vec<RawSample> = points.iter().map(|&p| RECT.normalise(p)).collect();
    let (native, report) =
        fixations_to_steps(&clean_trace(samples, &mut ImportReport::default()), &utterances, &params);
    assert_eq!(result.steps, native);
    assert_eq!((result.found, result.dropped_over_limit), (report.found, report.dropped_over_limit));

    assert_eq!(result.steps.len(), 3);
    assert_eq!(result.fixations.len(), 3);
    assert_eq!(result.fixations[0].n_samples, 15);
    assert!((result.fixations[0].duration - 14.0 / 30.0).abs() < 1e-12);
    // Fixation centres in image units: ((x − 100)/800, (y − 50)/600).
    for (step, (cx, cy)) in result.steps.iter().zip([(0.25, 0.25), (0.75, 2.0 / 3.0), (0.1, 0.85)]) {
        let (bx, by) = ((step.bbox.x1 + step.bbox.x2) / 2.0, (step.bbox.y1 + step.bbox.y2) / 2.0);
        assert!((bx - cx).abs() < 0.01 && (by - cy).abs() < 0.01, "{step:?} vs ({cx}, {cy})");
    }
    assert_eq!(result.steps[1].words, vec!["a", "red", "kite"]);
    // I-DT through the same entry point finds the same three fixations.
    let idt = GazeParams { method: FixationMethod::Idt, ..params };
    assert_eq!(screen_points_to_attention(&points, &RECT, &[], &idt).unwrap().steps.len(), 3);
}

#[test]
fn samples_are_cleaned_as_the_importer_cleans_them() {
    let mut samples: Vec<RawSample> = screen_points().iter().map(|&p| RECT.normalise(p)).collect();
    samples.insert(5, RawSample { x: f64::NAN, y: 0.5, t: 5.0 / 30.0 });
    samples.insert(9, RawSample { x: 0.5, y: 0.5, t: 0.0 });
    // Off the image to the left during the last fixation: clamped to x = 0 (a jump, so it ends
    // that fixation one sample early).
    let n = samples.len();
    samples[n - 2].x = -0.2;
    let result = samples_to_attention(&samples, &[], &GazeParams::default()).unwrap();
    assert_eq!((result.dropped_nonfinite_points, result.dropped_backwards_time, result.clamped_points), (1, 1, 1));
    assert_eq!(result.steps.len(), 3);
    let mut report = ImportReport::default();
    let cleaned = clean_trace(samples.iter().copied(), &mut report);
    assert_eq!(cleaned.len(), samples.len() - 2);
    assert_eq!(result.steps, fixations_to_steps(&cleaned, &[], &GazeParams::default()).0);

    // The same through the page's message, with defaults filled in.
    let request: AttentionRequest = serde_json::from_value(serde_json::json!({
        "samples": samples.iter().filter(|s| s.x.is_finite()).collect::<Vec<_>>(),
    }))
    .unwrap();
    assert_eq!(request.run().unwrap().steps, result.steps);
}

#[test]
fn image_geometry_and_bad_parameters() {
    // 10 cm wide at 60 cm with CSS pixels: 2·atan(5/60) = 9.527283°.
    let rect = ImageRect { left: 0.0, top: 0.0, width: 10.0 * 96.0 / 2.54, height: 5.0 * 96.0 / 2.54 };
    let (w, h) = rect.visual_angle(&ViewingSetup::default());
    assert!((w - 9.527283381452355).abs() < 1e-9);
    assert!((h - 2.0 * (2.5f64 / 60.0).atan().to_degrees()).abs() < 1e-9);
    let p = RECT.normalise(TimedPoint { t: 1.5, x: 500.0, y: 350.0 });
    assert_eq!(p, RawSample { x: 0.5, y: 0.5, t: 1.5 });

    let bad = ImageRect { width: 0.0, ..RECT };
    assert!(matches!(
        screen_points_to_attention(&[], &bad, &[], &GazeParams::default()),
        Err(GazeError::InvalidParam { field: "width", .. })
    ));
    let params = GazeParams { image_width_deg: -1.0, ..GazeParams::default() };
    let err = samples_to_attention(&[], &[], &params).unwrap_err();
    assert_eq!(err.to_string(), "image_width_deg: must be finite and > 0, got -1");
    assert!(samples_to_attention(&[], &[], &GazeParams::default()).unwrap().steps.is_empty());
}
