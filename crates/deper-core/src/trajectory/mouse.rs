//! Mouse trace → attention steps.
//!
//! A Localized Narratives annotator moves the mouse over what they are
//! talking about; where the pointer rests (a *dwell*) is the analogue of a
//! gaze fixation. Dwells are found with a combined velocity and dispersion
//! rule, in normalised image units (the image is 1 × 1) and seconds:
//!
//! 1. Each trace segment is handled on its own. A segment break is a pen
//!    lift, so a dwell never spans two segments.
//! 2. The samples of a segment are scanned in order, growing a candidate
//!    dwell that starts at the first sample. A sample joins the current dwell
//!    when both
//!    * (a) its speed from the previous sample, Euclidean distance / Δt, is
//!      at most [`DwellParams::max_speed`] (Δt = 0: speed 0 for the same
//!      point, infinite otherwise), and
//!    * (b) the dwell's dispersion with the sample added (the width plus the
//!      height of its bounding box) is at most [`DwellParams::max_dispersion`].
//!
//!    Otherwise the current dwell is closed and a new one starts at this
//!    sample. The last dwell is closed at the end of the segment.
//! 3. A closed dwell is kept when its duration, `t_last − t_first`, is at
//!    least [`DwellParams::min_duration`] (within [`super::TIME_EPS`]).
//!    A lone sample has duration 0, so transit samples vanish here.
//! 4. Each kept dwell becomes a step: box = bounding box of the dwell's
//!    samples grown to at least [`DwellParams::min_box_size`] per side with
//!    [`crate::BBox::with_min_size`] and clamped to the image;
//!    `duration = t_last − t_first`; `start = t_first`. Steps are in time order.
//! 5. [`super::limit_steps`] keeps the [`DwellParams::max_steps`] longest
//!    steps, then [`super::assign_words`] attaches the timed caption.
//!
//! [`BuildReport::found`] counts the dwells kept in step 3,
//! [`BuildReport::dropped_over_limit`] those removed in step 5.

use super::{assign_words, limit_steps, speed, BuildReport, TIME_EPS};
use crate::import::{clean_trace, ImportReport};
use crate::{AttentionStep, BBox, RawSample, Trajectory, TrajectorySource, Utterance};
use serde::{Deserialize, Serialize};

/// Parameters of the dwell rule (see the [module docs](self)). Units are
/// normalised image units (the image is 1 × 1) and seconds. Missing fields
/// take their defaults when deserialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DwellParams {
    /// Highest pointer speed, in image units per second, for a sample to stay
    /// in a dwell. Default 0.5: half the image per second. Pointing at an
    /// object involves slow adjustments (well below this), whereas moving on
    /// to the next object crosses a large part of the image in a fraction of
    /// a second (several units per second).
    pub max_speed: f64,
    /// Largest dispersion of a dwell, bounding-box width + height in image
    /// units. Default 0.15: a dwell may cover e.g. a 0.1 × 0.05 region, the
    /// size of a typical mentioned object in a COCO/Flickr image; a slow
    /// sweep across a larger region is cut into several dwells.
    pub max_dispersion: f64,
    /// Shortest dwell kept, in seconds. Default 0.2: about the shortest
    /// fixation-like pause of a hand-held pointer; shorter rests are transits
    /// or tremor.
    pub min_duration: f64,
    /// Smallest step box side, in image units. Default 0.05: a still pointer
    /// gives a zero-size box, so it is grown to a region about the size of a
    /// small object (5 % of the image side, ~22 px of a 448-px image).
    pub min_box_size: f64,
    /// Most steps kept, the longest ones. Default [`crate::MAX_STEPS`] (30),
    /// the paper's limit.
    pub max_steps: usize,
}

impl Default for DwellParams {
    fn default() -> Self {
        Self {
            max_speed: 0.5,
            max_dispersion: 0.15,
            min_duration: 0.2,
            min_box_size: 0.05,
            max_steps: crate::MAX_STEPS,
        }
    }
}

/// Splits each trace segment into dwells and returns one step per dwell, in time order,
/// with the utterances spoken during each step attached as words.
///
/// The rule is described in the [module docs](self).
pub fn mouse_trace_to_steps(
    segments: &[Vec<RawSample>],
    utterances: &[Utterance],
    params: &DwellParams,
) -> (Vec<AttentionStep>, BuildReport) {
    let mut steps = Vec::new();
    for segment in segments {
        for dwell in split_dwells(segment, params) {
            let (first, last) = (dwell[0], dwell[dwell.len() - 1]);
            let duration = last.t - first.t;
            if duration + TIME_EPS < params.min_duration {
                continue;
            }
            let Some(bbox) = BBox::covering(dwell.iter().map(|s| (s.x, s.y))) else {
                continue;
            };
            steps.push(AttentionStep {
                bbox: bbox.with_min_size(params.min_box_size).clamped(),
                duration,
                start: Some(first.t),
                words: Vec::new(),
            });
        }
    }
    // Segments are normally in time order already; a stable sort makes sure.
    steps.sort_by(|a, b| a.start.unwrap_or(0.0).total_cmp(&b.start.unwrap_or(0.0)));
    let found = steps.len();
    let (mut steps, dropped_over_limit) = limit_steps(steps, params.max_steps);
    assign_words(&mut steps, utterances);
    (steps, BuildReport { found, dropped_over_limit })
}

/// The trajectory of one recorded mouse trace, as the study export (deper-store) and the
/// browser (deper-web) build it: samples put in time order (a stable sort, so equal times keep
/// their order), cleaned with [`clean_trace`], then [`mouse_trace_to_steps`] with the default
/// [`DwellParams`] as one segment. No usable sample gives an empty trajectory.
pub fn mouse_trajectory(mut samples: Vec<RawSample>, utterances: &[Utterance]) -> Trajectory {
    samples.sort_by(|a, b| a.t.total_cmp(&b.t));
    let cleaned = clean_trace(samples, &mut ImportReport::default());
    if cleaned.is_empty() {
        return Trajectory::empty(TrajectorySource::Mouse);
    }
    let (steps, _) = mouse_trace_to_steps(&[cleaned], utterances, &DwellParams::default());
    Trajectory { source: TrajectorySource::Mouse, steps }
}

/// Steps 2 of the rule: cuts one segment into candidate dwells (non-empty
/// runs of consecutive samples), before the duration filter.
fn split_dwells<'a>(segment: &'a [RawSample], params: &DwellParams) -> Vec<&'a [RawSample]> {
    let mut dwells = Vec::new();
    let Some(first) = segment.first() else {
        return dwells;
    };
    let mut begin = 0;
    let mut bbox = BBox { x1: first.x, y1: first.y, x2: first.x, y2: first.y };
    for i in 1..segment.len() {
        let s = &segment[i];
        let grown = BBox { x1: bbox.x1.min(s.x), y1: bbox.y1.min(s.y), x2: bbox.x2.max(s.x), y2: bbox.y2.max(s.y) };
        let slow = speed(&segment[i - 1], s, (1.0, 1.0)) <= params.max_speed;
        let compact = grown.width() + grown.height() <= params.max_dispersion;
        if slow && compact {
            bbox = grown;
        } else {
            dwells.push(&segment[begin..i]);
            begin = i;
            bbox = BBox { x1: s.x, y1: s.y, x2: s.x, y2: s.y };
        }
    }
    dwells.push(&segment[begin..]);
    dwells
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64, y: f64, t: f64) -> RawSample {
        RawSample { x, y, t }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[track_caller]
    fn assert_box(b: &BBox, x1: f64, y1: f64, x2: f64, y2: f64) {
        assert!(
            close(b.x1, x1) && close(b.y1, y1) && close(b.x2, x2) && close(b.y2, y2),
            "got {b:?}, expected [{x1}, {y1}, {x2}, {y2}]"
        );
    }

    #[track_caller]
    fn assert_step(step: &AttentionStep, start: f64, duration: f64) {
        let got = step.start.expect("builder steps have a start");
        assert!(close(got, start) && close(step.duration, duration), "got start {got} dur {}", step.duration);
    }

    #[test]
    fn mouse_trajectory_orders_cleans_and_builds() {
        // Out of order, with a NaN and an out-of-image point: the pointer rests at (0.3, 0.4)
        // for 0.5 s, jumps, then rests at (1.2 → 1.0, 0.5) for 0.3 s.
        let samples = vec![
            s(0.3, 0.4, 0.25),
            s(0.3, 0.4, 0.0),
            s(f64::NAN, 0.4, 0.1),
            s(0.3, 0.4, 0.5),
            s(1.2, 0.5, 2.0),
            s(1.2, 0.5, 2.3),
        ];
        let t = mouse_trajectory(samples, &[]);
        assert_eq!(t.source, TrajectorySource::Mouse);
        assert_eq!(t.steps.len(), 2);
        assert_step(&t.steps[0], 0.0, 0.5);
        assert_box(&t.steps[0].bbox, 0.275, 0.375, 0.325, 0.425);
        assert_step(&t.steps[1], 2.0, 0.3);
        assert!(close(t.steps[1].bbox.x2, 1.0), "{:?}", t.steps[1].bbox);
        assert!(mouse_trajectory(vec![s(f64::NAN, 0.0, 0.0)], &[]).is_empty());
    }

    #[test]
    fn defaults_are_documented_values() {
        let p = DwellParams::default();
        assert_eq!((p.max_speed, p.max_dispersion, p.min_duration, p.min_box_size), (0.5, 0.15, 0.2, 0.05));
        assert_eq!(p.max_steps, 30);
        let partial: DwellParams = serde_json::from_str(r#"{"max_speed": 1.0}"#).expect("partial params parse");
        assert_eq!(partial, DwellParams { max_speed: 1.0, ..DwellParams::default() });
    }

    #[test]
    fn three_dwells_separated_by_jumps() {
        let trace = vec![
            // Dwell A: x 0.10–0.13, y 0.10–0.13 (speeds ≈ 0.22/s, dispersion 0.06).
            // Both sides 0.03 < 0.05 → grown around (0.115, 0.115) to 0.09–0.14.
            s(0.10, 0.10, 0.0),
            s(0.12, 0.11, 0.1),
            s(0.11, 0.13, 0.2),
            s(0.13, 0.12, 0.3),
            // In-flight sample: a one-sample dwell of duration 0, dropped.
            s(0.35, 0.30, 0.35),
            // Dwell B: x 0.60–0.68, y 0.50–0.56 (speeds ≈ 0.28/s, dispersion 0.14): no growth.
            s(0.60, 0.50, 0.4),
            s(0.62, 0.50, 0.5),
            s(0.64, 0.52, 0.6),
            s(0.66, 0.54, 0.7),
            s(0.68, 0.56, 0.8),
            // Dwell C at the right edge: x 0.99–1.0 → 0.97–1.02 → shifted to 0.95–1.0;
            // y 0–0 → −0.025–0.025 → shifted to 0–0.05.
            s(0.99, 0.0, 1.0),
            s(0.99, 0.0, 1.1),
            s(1.0, 0.0, 1.2),
        ];
        let utterances = vec![
            Utterance { utterance: "a bird".into(), start_time: 0.0, end_time: 0.3 },
            Utterance { utterance: "on a branch".into(), start_time: 0.3, end_time: 0.75 },
            Utterance { utterance: "sky".into(), start_time: 1.05, end_time: 1.5 },
        ];
        let (steps, report) = mouse_trace_to_steps(&[trace], &utterances, &DwellParams::default());
        assert_eq!(report, BuildReport { found: 3, dropped_over_limit: 0 });
        assert_eq!(steps.len(), 3);
        assert_box(&steps[0].bbox, 0.09, 0.09, 0.14, 0.14);
        assert_step(&steps[0], 0.0, 0.3);
        assert_box(&steps[1].bbox, 0.60, 0.50, 0.68, 0.56);
        assert_step(&steps[1], 0.4, 0.4);
        assert_box(&steps[2].bbox, 0.95, 0.0, 1.0, 0.05);
        assert_step(&steps[2], 1.0, 0.2);
        // "on a branch" overlaps A only at t = 0.3 (a touch) and B for 0.35 s.
        assert_eq!(steps[0].words, vec!["a", "bird"]);
        assert_eq!(steps[1].words, vec!["on", "a", "branch"]);
        assert_eq!(steps[2].words, vec!["sky"]);
    }

    #[test]
    fn dwell_shorter_than_min_duration_is_dropped() {
        let trace = vec![
            s(0.2, 0.2, 0.0),
            s(0.2, 0.2, 0.25), // 0.25 s dwell: kept
            s(0.8, 0.8, 0.3),
            s(0.8, 0.8, 0.45), // 0.15 s dwell: dropped
            s(0.2, 0.8, 0.5),
            s(0.2, 0.8, 0.7), // exactly 0.2 s: kept
        ];
        let (steps, report) = mouse_trace_to_steps(&[trace], &[], &DwellParams::default());
        assert_eq!(report, BuildReport { found: 2, dropped_over_limit: 0 });
        assert_eq!(steps.len(), 2);
        assert_step(&steps[0], 0.0, 0.25);
        assert_step(&steps[1], 0.5, 0.2);
        assert_box(&steps[1].bbox, 0.175, 0.775, 0.225, 0.825);
    }

    #[test]
    fn dwell_does_not_span_segments() {
        let first = vec![s(0.5, 0.5, 0.0), s(0.5, 0.5, 0.1), s(0.51, 0.5, 0.2)];
        let second = vec![s(0.51, 0.5, 0.3), s(0.52, 0.5, 0.4), s(0.52, 0.51, 0.5)];
        let p = DwellParams::default();
        let (steps, report) = mouse_trace_to_steps(&[first.clone(), second.clone()], &[], &p);
        assert_eq!(report.found, 2);
        assert_step(&steps[0], 0.0, 0.2);
        assert_box(&steps[0].bbox, 0.48, 0.475, 0.53, 0.525);
        assert_step(&steps[1], 0.3, 0.2);
        assert_box(&steps[1].bbox, 0.49, 0.48, 0.54, 0.53);
        // The same samples as one segment form a single dwell.
        let joined: Vec<_> = first.into_iter().chain(second).collect();
        let (steps, _) = mouse_trace_to_steps(&[joined], &[], &p);
        assert_eq!(steps.len(), 1);
        assert_step(&steps[0], 0.0, 0.5);
    }

    #[test]
    fn slow_drift_is_split_by_dispersion() {
        // x = 0.10 + 0.02 i every 0.1 s: speed 0.2/s, always slow. Width reaches
        // 0.14 at i = 7 and would be 0.16 > 0.15 at i = 8, which starts a new dwell.
        let trace: Vec<_> = (0..12).map(|i| s(0.10 + 0.02 * i as f64, 0.5, 0.1 * i as f64)).collect();
        let (steps, report) = mouse_trace_to_steps(&[trace], &[], &DwellParams::default());
        assert_eq!(report.found, 2);
        assert_step(&steps[0], 0.0, 0.7);
        assert_box(&steps[0].bbox, 0.10, 0.475, 0.24, 0.525);
        assert_step(&steps[1], 0.8, 0.3);
        assert_box(&steps[1].bbox, 0.26, 0.475, 0.32, 0.525);
    }

    #[test]
    fn more_than_max_steps_keeps_longest_in_order() {
        // Dwell k: two samples at the same point, 0.3 + 0.01·((11 k) mod 35) s
        // apart (a permutation of 0.30..=0.64); consecutive dwells alternate
        // between two far corners. The five shortest have (11 k) mod 35 in
        // 0..5, i.e. k = 0, 16, 32, 13, 29.
        let mut trace = Vec::new();
        let mut starts = Vec::new();
        let mut t = 0.0;
        for k in 0..35usize {
            let d = 0.3 + 0.01 * ((11 * k) % 35) as f64;
            let p = if k % 2 == 0 { 0.2 } else { 0.8 };
            trace.push(s(p, p, t));
            trace.push(s(p, p, t + d));
            starts.push(t);
            t += d + 0.05;
        }
        let (steps, report) = mouse_trace_to_steps(&[trace], &[], &DwellParams::default());
        assert_eq!(report, BuildReport { found: 35, dropped_over_limit: 5 });
        let dropped = [0, 13, 16, 29, 32];
        let expected: Vec<_> = (0..35).filter(|k| !dropped.contains(k)).map(|k| Some(starts[k])).collect();
        let got: Vec<_> = steps.iter().map(|st| st.start).collect();
        assert_eq!(got, expected);
        assert!(steps.iter().all(|st| st.duration > 0.345));
    }

    #[test]
    fn speed_with_zero_dt() {
        assert_eq!(speed(&s(0.1, 0.1, 1.0), &s(0.1, 0.1, 1.0), (1.0, 1.0)), 0.0);
        assert_eq!(speed(&s(0.1, 0.1, 1.0), &s(0.2, 0.1, 1.0), (1.0, 1.0)), f64::INFINITY);
        assert!(close(speed(&s(0.0, 0.0, 0.0), &s(0.3, 0.4, 2.0), (1.0, 1.0)), 0.25));
    }
}
