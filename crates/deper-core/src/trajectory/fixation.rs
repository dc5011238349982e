//! Gaze samples → fixations → attention steps.
//!
//! Gaze samples are in normalised image coordinates; the fixation filters
//! work in degrees of visual angle, so each takes `deg_per_unit` =
//! (degrees spanned by one image width, degrees spanned by one image height).
//! Both filters follow Salvucci & Goldberg (2000), "Identifying fixations and
//! saccades in eye-tracking protocols".
//!
//! * [`ivt`] (velocity threshold): the velocity of each pair of consecutive
//!   samples, `hypot(Δx·deg_x, Δy·deg_y) / Δt` in °/s (Δt = 0: 0 for the same
//!   point, infinite otherwise), below the threshold marks the pair as *slow*.
//!   **Convention:** velocities belong to the intervals between samples, and a
//!   fixation is a maximal run of consecutive slow intervals together with
//!   all their end samples. Equivalently, each sample is classified by the
//!   velocity into the next sample, and the first sample after a run of slow
//!   samples (the one the last slow velocity leads to) closes the run. So a
//!   fixation includes both the sample where the eye lands after a saccade and
//!   the last sample before it leaves, with no off-by-one sample at either end.
//!   A run is kept when `t_last − t_first ≥ min_duration`.
//! * [`idt`] (dispersion threshold): a window is initialised over the
//!   samples covering `min_duration` (from the first sample to the first one
//!   at least `min_duration` later). If its dispersion
//!   `(max x − min x)·deg_x + (max y − min y)·deg_y` is at most the threshold,
//!   the window grows one sample at a time until adding the next sample would
//!   exceed the threshold (or the samples run out); the window, without that
//!   sample, is a fixation, and the scan continues at that sample. Otherwise
//!   the first sample of the window is dropped and the scan moves one on.
//!
//! A [`crate::Fixation`] has the centroid (mean) of its samples, `start` =
//! time of the first sample, `duration = t_last − t_first`, the bounding box
//! of its samples and their count. Durations are compared with
//! [`super::TIME_EPS`] tolerance.
//!
//! [`fixations_to_steps`] runs the chosen filter with
//! `deg_per_unit = (image_width_deg, image_height_deg)` and turns each
//! fixation into a step: the fixation's bounding box grown symmetrically to
//! at least `min_box_deg` on each side (`min_box_deg / image_width_deg` units
//! wide, `min_box_deg / image_height_deg` units high), kept inside the image;
//! its duration and start. Then [`super::limit_steps`] and
//! [`super::assign_words`], as for mouse traces.

use super::{assign_words, grow_to_min_size, limit_steps, speed, BuildReport, TIME_EPS};
use crate::{AttentionStep, BBox, Fixation, RawSample, Utterance};
use serde::{Deserialize, Serialize};

/// Which fixation filter [`fixations_to_steps`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FixationMethod {
    /// Velocity threshold, [`ivt`]. The default: robust at the 60–1000 Hz of
    /// current eye trackers and linear in the number of samples.
    #[default]
    Ivt,
    /// Dispersion threshold, [`idt`]. Better for low-rate or noisy trackers.
    Idt,
}

/// Velocity-threshold identification (Salvucci & Goldberg 2000).
/// Missing fields take their defaults when deserialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IvtParams {
    /// Degrees of visual angle per second; an interval strictly slower than
    /// this is fixation. Default 30 °/s, the usual value for I-VT (e.g. the
    /// Tobii I-VT filter); saccades peak at hundreds of °/s.
    pub velocity_threshold: f64,
    /// Seconds. Default 0.1 s (100 ms), the conventional lower bound of a
    /// fixation (Salvucci & Goldberg use 100–200 ms). Some literature uses
    /// 60 ms (Tobii's default); 100 ms also matches the I-DT default so both
    /// filters find the same fixations on clean data.
    pub min_duration: f64,
}

impl Default for IvtParams {
    fn default() -> Self {
        Self { velocity_threshold: 30.0, min_duration: 0.1 }
    }
}

/// Dispersion-threshold identification (Salvucci & Goldberg 2000).
/// Missing fields take their defaults when deserialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdtParams {
    /// Degrees of visual angle, (max x − min x) + (max y − min y).
    /// Default 1.0°, the usual I-DT value (0.5–1° in the literature, about
    /// the size of the fovea's central part plus tracker noise).
    pub dispersion_threshold: f64,
    /// Seconds; also the initial window length. Default 0.1 s (100 ms).
    pub min_duration: f64,
}

impl Default for IdtParams {
    fn default() -> Self {
        Self { dispersion_threshold: 1.0, min_duration: 0.1 }
    }
}

/// How gaze samples in normalised image coordinates relate to visual angle, and the step rule.
/// Missing fields take their defaults when deserialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GazeParams {
    /// Filter to run. Default [`FixationMethod::Ivt`].
    pub method: FixationMethod,
    pub ivt: IvtParams,
    pub idt: IdtParams,
    /// Degrees of visual angle spanned by the image width; must be positive.
    /// Default 30°: about a 448-px image on a typical desktop monitor at a
    /// typical 60–70 cm viewing distance. Callers should set it from the
    /// recording setup (screen size, resolution, distance, displayed size).
    pub image_width_deg: f64,
    /// Degrees of visual angle spanned by the image height; must be
    /// positive. Default 30° (square image, as above).
    pub image_height_deg: f64,
    /// Smallest step box side, in degrees. Default 2°, roughly the fovea:
    /// a fixation sees about that much sharply even when its samples are
    /// all at one point.
    pub min_box_deg: f64,
    /// Most steps kept, the longest ones. Default [`crate::MAX_STEPS`] (30).
    pub max_steps: usize,
}

impl Default for GazeParams {
    fn default() -> Self {
        Self {
            method: FixationMethod::Ivt,
            ivt: IvtParams::default(),
            idt: IdtParams::default(),
            image_width_deg: 30.0,
            image_height_deg: 30.0,
            min_box_deg: 2.0,
            max_steps: crate::MAX_STEPS,
        }
    }
}

/// Fixation from a non-empty run of samples.
fn fixation_of(run: &[RawSample]) -> Option<Fixation> {
    let (first, last) = (run.first()?, run.last()?);
    let n = run.len() as f64;
    let x = run.iter().map(|s| s.x).sum::<f64>() / n;
    let y = run.iter().map(|s| s.y).sum::<f64>() / n;
    Some(Fixation {
        x,
        y,
        start: first.t,
        duration: last.t - first.t,
        bbox: BBox::covering(run.iter().map(|s| (s.x, s.y)))?,
        n_samples: run.len(),
    })
}

fn long_enough(run: &[RawSample], min_duration: f64) -> bool {
    match (run.first(), run.last()) {
        (Some(a), Some(b)) => b.t - a.t + TIME_EPS >= min_duration,
        _ => false,
    }
}

/// Velocity-threshold fixations (see the [module docs](self) for the convention).
///
/// `deg_per_unit` = (degrees per image width, degrees per image height).
pub fn ivt(samples: &[RawSample], params: &IvtParams, deg_per_unit: (f64, f64)) -> Vec<Fixation> {
    let mut out = Vec::new();
    // `begin` is the first sample of the current run of slow intervals, if any.
    let mut begin: Option<usize> = None;
    for (i, pair) in samples.windows(2).enumerate() {
        let slow = speed(&pair[0], &pair[1], deg_per_unit) < params.velocity_threshold;
        match (slow, begin) {
            (true, None) => begin = Some(i),
            (false, Some(b)) => {
                // Slow intervals b..i-1 cover samples b..=i.
                push_if_long(&mut out, &samples[b..=i], params.min_duration);
                begin = None;
            }
            _ => {}
        }
    }
    if let Some(b) = begin {
        push_if_long(&mut out, &samples[b..], params.min_duration);
    }
    out
}

fn push_if_long(out: &mut Vec<Fixation>, run: &[RawSample], min_duration: f64) {
    if long_enough(run, min_duration) {
        out.extend(fixation_of(run));
    }
}

/// Dispersion-threshold fixations (Salvucci & Goldberg's window algorithm,
/// see the [module docs](self)).
///
/// `deg_per_unit` = (degrees per image width, degrees per image height).
pub fn idt(samples: &[RawSample], params: &IdtParams, deg_per_unit: (f64, f64)) -> Vec<Fixation> {
    let dispersion = |b: &BBox| b.width() * deg_per_unit.0 + b.height() * deg_per_unit.1;
    let n = samples.len();
    let mut out = Vec::new();
    let mut i = 0;
    // `end` is the last sample of the initial window; it never moves back.
    let mut end = 0;
    while i < n {
        end = end.max(i);
        while end < n && samples[end].t - samples[i].t + TIME_EPS < params.min_duration {
            end += 1;
        }
        if end >= n {
            break;
        }
        let window = &samples[i..=end];
        let Some(mut bbox) = BBox::covering(window.iter().map(|s| (s.x, s.y))) else {
            break;
        };
        if dispersion(&bbox) > params.dispersion_threshold {
            i += 1;
            continue;
        }
        let mut j = end + 1;
        while j < n {
            let s = &samples[j];
            let grown = BBox { x1: bbox.x1.min(s.x), y1: bbox.y1.min(s.y), x2: bbox.x2.max(s.x), y2: bbox.y2.max(s.y) };
            if dispersion(&grown) > params.dispersion_threshold {
                break;
            }
            bbox = grown;
            j += 1;
        }
        out.extend(fixation_of(&samples[i..j]));
        i = j;
    }
    out
}

/// Runs the chosen fixation filter and returns one step per fixation, in time
/// order, with the utterances spoken during each step attached as words.
///
/// See the [module docs](self) for the box rule.
pub fn fixations_to_steps(
    samples: &[RawSample],
    utterances: &[Utterance],
    params: &GazeParams,
) -> (Vec<AttentionStep>, BuildReport) {
    let deg_per_unit = (params.image_width_deg, params.image_height_deg);
    let fixations = match params.method {
        FixationMethod::Ivt => ivt(samples, &params.ivt, deg_per_unit),
        FixationMethod::Idt => idt(samples, &params.idt, deg_per_unit),
    };
    let (min_w, min_h) = (params.min_box_deg / params.image_width_deg, params.min_box_deg / params.image_height_deg);
    let steps: Vec<_> = fixations
        .iter()
        .map(|f| AttentionStep {
            bbox: grow_to_min_size(f.bbox, min_w, min_h),
            duration: f.duration,
            start: Some(f.start),
            words: Vec::new(),
        })
        .collect();
    let found = steps.len();
    let (mut steps, dropped_over_limit) = limit_steps(steps, params.max_steps);
    assign_words(&mut steps, utterances);
    (steps, BuildReport { found, dropped_over_limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A known fixation of a synthetic stream.
    struct Known {
        x: f64,
        y: f64,
        first: usize,
        last: usize,
    }

    fn t(i: usize) -> f64 {
        i as f64 / 100.0
    }

    /// 100 Hz stream: fixations at constant positions (plus a deterministic
    /// jitter of at most ±0.0005 units = ±0.015° when `jitter`), joined by
    /// two in-flight saccade samples on the straight line between them
    /// (≈ 5° apart at 30°/image, i.e. ≈ 500 °/s).
    fn stream(fixations: &[Known], jitter: bool) -> Vec<RawSample> {
        let mut out = Vec::new();
        for (k, f) in fixations.iter().enumerate() {
            assert_eq!(out.len(), f.first);
            for i in f.first..=f.last {
                let (jx, jy) =
                    if jitter { (((i * 7) % 5) as f64 - 2.0, ((i * 3) % 5) as f64 - 2.0) } else { (0.0, 0.0) };
                out.push(RawSample { x: f.x + jx * 0.00025, y: f.y + jy * 0.00025, t: t(i) });
            }
            if let Some(next) = fixations.get(k + 1) {
                for (m, i) in (f.last + 1..next.first).enumerate() {
                    let a = (m + 1) as f64 / (next.first - f.last) as f64;
                    out.push(RawSample { x: f.x + a * (next.x - f.x), y: f.y + a * (next.y - f.y), t: t(i) });
                }
            }
        }
        out
    }

    /// Three fixations (0.29 s, 0.24 s, 0.29 s) and, between the second and
    /// the third, a 0.04 s one (5 samples) that both filters must drop.
    fn known() -> Vec<Known> {
        vec![
            Known { x: 0.2, y: 0.3, first: 0, last: 29 },
            Known { x: 0.7, y: 0.4, first: 32, last: 56 },
            Known { x: 0.5, y: 0.8, first: 59, last: 63 },
            Known { x: 0.4, y: 0.6, first: 66, last: 95 },
        ]
    }

    const DEG: (f64, f64) = (30.0, 30.0);

    #[track_caller]
    fn check(found: &[Fixation], expected: &[Known], tol: f64) {
        assert_eq!(found.len(), expected.len(), "{found:?}");
        for (f, k) in found.iter().zip(expected) {
            assert!((f.x - k.x).abs() < tol && (f.y - k.y).abs() < tol, "centroid {f:?} vs ({}, {})", k.x, k.y);
            assert!((f.start - t(k.first)).abs() < 1e-12, "start {f:?}");
            assert!((f.duration - (t(k.last) - t(k.first))).abs() < 1e-12, "duration {f:?}");
            assert_eq!(f.n_samples, k.last - k.first + 1);
        }
    }

    fn expected_three() -> Vec<Known> {
        known().into_iter().filter(|k| k.last - k.first > 10).collect()
    }

    #[test]
    fn defaults_are_documented_values() {
        let p = GazeParams::default();
        assert_eq!(p.method, FixationMethod::Ivt);
        assert_eq!((p.ivt.velocity_threshold, p.ivt.min_duration), (30.0, 0.1));
        assert_eq!((p.idt.dispersion_threshold, p.idt.min_duration), (1.0, 0.1));
        assert_eq!((p.image_width_deg, p.image_height_deg, p.min_box_deg), (30.0, 30.0, 2.0));
        assert_eq!(p.max_steps, 30);
        let partial: GazeParams =
            serde_json::from_str(r#"{"method": "idt", "idt": {"dispersion_threshold": 0.5}}"#).expect("parse");
        assert_eq!(partial.method, FixationMethod::Idt);
        assert_eq!(partial.idt, IdtParams { dispersion_threshold: 0.5, min_duration: 0.1 });
    }

    #[test]
    fn ivt_finds_three_fixations_exactly() {
        let samples = stream(&known(), false);
        let found = ivt(&samples, &IvtParams::default(), DEG);
        check(&found, &expected_three(), 1e-9);
        // Points only: the bounding boxes are the points themselves.
        assert_eq!(found[0].bbox, BBox::from_corners(0.2, 0.3, 0.2, 0.3));
    }

    #[test]
    fn ivt_finds_three_fixations_with_jitter() {
        let samples = stream(&known(), true);
        let found = ivt(&samples, &IvtParams::default(), DEG);
        check(&found, &expected_three(), 1e-3);
        assert!(found[0].bbox.width() <= 0.001 + 1e-12 && found[0].bbox.width() > 0.0);
    }

    #[test]
    fn ivt_drops_fixation_shorter_than_min_duration() {
        // 10 samples (0.09 s) are dropped; 11 samples (exactly 0.10 s) are kept.
        let ks = vec![
            Known { x: 0.2, y: 0.2, first: 0, last: 9 },
            Known { x: 0.8, y: 0.2, first: 12, last: 22 },
            Known { x: 0.8, y: 0.8, first: 25, last: 34 },
        ];
        let samples = stream(&ks, false);
        let found = ivt(&samples, &IvtParams::default(), DEG);
        check(&found, &ks[1..2], 1e-9);
        let found = idt(&samples, &IdtParams::default(), DEG);
        check(&found, &ks[1..2], 1e-9);
    }

    #[test]
    fn ivt_velocity_uses_per_axis_degrees() {
        // Step 0.01 units per 0.01 s along x: 30 °/s at 30°/width (not below the
        // threshold, a saccade), 20 °/s at 20°/width (a fixation).
        let samples: Vec<_> = (0..20).map(|i| RawSample { x: 0.1 + 0.01 * i as f64, y: 0.5, t: t(i) }).collect();
        assert!(ivt(&samples, &IvtParams::default(), (30.0 + 1e-9, 1.0)).is_empty());
        let found = ivt(&samples, &IvtParams::default(), (20.0, 1000.0));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].n_samples, 20);
        assert!((found[0].bbox.x2 - 0.29).abs() < 1e-12);
    }

    #[test]
    fn idt_finds_same_three_fixations() {
        let samples = stream(&known(), false);
        check(&idt(&samples, &IdtParams::default(), DEG), &expected_three(), 1e-9);
        let samples = stream(&known(), true);
        let found_idt = idt(&samples, &IdtParams::default(), DEG);
        check(&found_idt, &expected_three(), 1e-3);
        assert_eq!(found_idt, ivt(&samples, &IvtParams::default(), DEG));
    }

    #[test]
    fn idt_dispersion_just_over_threshold_splits() {
        // 20 samples at x = 0.5 then 20 at x = 0.5 + shift, 10° per unit:
        // dispersion = 10·shift degrees against the 1° threshold.
        let make = |shift: f64| -> Vec<RawSample> {
            (0..40).map(|i| RawSample { x: if i < 20 { 0.5 } else { 0.5 + shift }, y: 0.5, t: t(i) }).collect()
        };
        let p = IdtParams::default();
        let split = idt(&make(0.1 + 1e-6), &p, (10.0, 10.0));
        assert_eq!(split.len(), 2, "{split:?}");
        assert_eq!((split[0].n_samples, split[1].n_samples), (20, 20));
        assert!((split[0].start - 0.0).abs() < 1e-12 && (split[0].duration - 0.19).abs() < 1e-12);
        assert!((split[1].start - 0.2).abs() < 1e-12 && (split[1].duration - 0.19).abs() < 1e-12);
        assert!((split[1].x - (0.6 + 1e-6)).abs() < 1e-9);

        let whole = idt(&make(0.1 - 1e-6), &p, (10.0, 10.0));
        assert_eq!(whole.len(), 1, "{whole:?}");
        assert_eq!(whole[0].n_samples, 40);
        assert!((whole[0].duration - 0.39).abs() < 1e-12);
        // The y axis counts with its own scale: the same shift on y at 5°/unit is within 1°.
        let on_y: Vec<_> = make(0.1 + 1e-6).into_iter().map(|s| RawSample { x: s.y, y: s.x, t: s.t }).collect();
        assert_eq!(idt(&on_y, &p, (10.0, 5.0)).len(), 1);
    }

    #[test]
    fn idt_drops_window_that_never_fits() {
        // Alternating far-apart samples: every initial window is too dispersed.
        let samples: Vec<_> =
            (0..50).map(|i| RawSample { x: if i % 2 == 0 { 0.1 } else { 0.9 }, y: 0.5, t: t(i) }).collect();
        assert!(idt(&samples, &IdtParams::default(), DEG).is_empty());
        assert!(idt(&[], &IdtParams::default(), DEG).is_empty());
        assert!(ivt(&[], &IvtParams::default(), DEG).is_empty());
        assert!(ivt(&samples[..1], &IvtParams { velocity_threshold: 30.0, min_duration: 0.0 }, DEG).is_empty());
    }

    #[test]
    fn fixations_to_steps_uses_per_axis_min_box() {
        // 40° wide, 20° high, 2° minimum: boxes at least 0.05 wide and 0.1 high.
        let mut samples = stream(
            &[Known { x: 0.2, y: 0.3, first: 0, last: 29 }, Known { x: 0.99, y: 0.02, first: 32, last: 56 }],
            false,
        );
        // Then a slow horizontal drift 0.40 → 0.46 at y = 0.5 (8 °/s): 0.06 wide already.
        let t0 = samples.len();
        for i in 0..=30 {
            samples.push(RawSample { x: 0.40 + 0.002 * i as f64, y: 0.5, t: t(t0 + 2 + i) });
        }
        let utterances = vec![
            Utterance { utterance: "a red kite".into(), start_time: 0.05, end_time: 0.2 },
            Utterance { utterance: "top right".into(), start_time: 0.25, end_time: 0.5 },
        ];
        let params = GazeParams { image_width_deg: 40.0, image_height_deg: 20.0, ..GazeParams::default() };
        let (steps, report) = fixations_to_steps(&samples, &utterances, &params);
        assert_eq!(report, BuildReport { found: 3, dropped_over_limit: 0 });
        assert_eq!(steps.len(), 3);
        let close = |b: &BBox, e: [f64; 4]| b.to_array().iter().zip(e).all(|(a, e)| (a - e).abs() < 1e-12);
        // Point at (0.2, 0.3): 0.175–0.225 × 0.25–0.35.
        assert!(close(&steps[0].bbox, [0.175, 0.25, 0.225, 0.35]), "{:?}", steps[0].bbox);
        // Point at (0.99, 0.02): x 0.965–1.015 → 0.95–1.0; y −0.03–0.07 → 0–0.1.
        assert!(close(&steps[1].bbox, [0.95, 0.0, 1.0, 0.1]), "{:?}", steps[1].bbox);
        // Drift: x 0.40–0.46 kept, y grown to 0.45–0.55.
        assert!(close(&steps[2].bbox, [0.40, 0.45, 0.40 + 0.002 * 30.0, 0.55]), "{:?}", steps[2].bbox);
        assert_eq!(steps[0].start, Some(0.0));
        assert!((steps[0].duration - 0.29).abs() < 1e-12);
        assert_eq!(steps[1].start, Some(t(32)));
        assert_eq!(steps[2].start, Some(t(t0 + 2)));
        assert!((steps[2].duration - 0.3).abs() < 1e-12);
        // "top right" overlaps step 0 by 0.04 s and step 1 by 0.18 s.
        assert_eq!(steps[0].words, vec!["a", "red", "kite"]);
        assert_eq!(steps[1].words, vec!["top", "right"]);

        // Same boxes through I-DT (threshold 3°, above the drift's 2.4°); a step
        // limit of 2 drops the shortest (step 1, 0.24 s).
        let idt = IdtParams { dispersion_threshold: 3.0, ..IdtParams::default() };
        let params = GazeParams { method: FixationMethod::Idt, idt, max_steps: 2, ..params };
        let (limited, report) = fixations_to_steps(&samples, &[], &params);
        assert_eq!(report, BuildReport { found: 3, dropped_over_limit: 1 });
        assert_eq!(limited[0].bbox, steps[0].bbox);
        assert_eq!(limited[1].bbox, steps[2].bbox);
    }
}
