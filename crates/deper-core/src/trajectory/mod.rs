//! Builders that turn raw attention signals into attention steps.
//!
//! * [`mouse`]: a Localized-Narratives-style mouse trace → dwells → steps.
//! * [`fixation`]: raw gaze samples → fixations (I-VT or I-DT) → steps.
//!
//! Both keep, for each step, the words of the timed caption spoken during it
//! ([`assign_words`]) and cap a trajectory at [`crate::MAX_STEPS`] steps
//! ([`limit_steps`]). The order in both builders is: find dwells/fixations,
//! turn them into steps, apply the step limit, then attach words, so words
//! spoken during a dropped step are not moved onto a neighbouring one.
//!
//! Durations are compared with a tolerance of [`TIME_EPS`] (1 ns) so that a
//! dwell lasting exactly the minimum duration is not lost to float rounding
//! of sample times (e.g. `0.29 - 0.19 < 0.1`).

pub mod fixation;
pub mod mouse;

pub use fixation::{fixations_to_steps, idt, ivt, FixationMethod, GazeParams, IdtParams, IvtParams};
pub use mouse::{mouse_trace_to_steps, mouse_trajectory, DwellParams};

use crate::{AttentionStep, BBox, RawSample, Utterance};

/// What a builder did besides producing steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Dwells or fixations found before the step limit was applied.
    pub found: usize,
    /// Steps dropped to respect the step limit.
    pub dropped_over_limit: usize,
}

/// Tolerance, in seconds, of every "duration ≥ minimum" test of the builders.
pub const TIME_EPS: f64 = 1e-9;

/// Attaches the words of each utterance to the step it overlaps most in time.
///
/// Rules, applied to each utterance in the given order:
///
/// * The words are the utterance split on whitespace, kept as written
///   (no case folding, punctuation kept). An utterance without words is skipped.
/// * A step's interval is `[start, start + duration]`; steps without `start`
///   (e.g. the authors' records) never get words.
/// * The overlap with a step is the length of the intersection of the two
///   closed intervals. When both intervals have positive length the overlap
///   must be positive (merely touching at an endpoint is no overlap). When the
///   utterance (or the step) is a single point, it overlaps when the point lies
///   inside the other interval, with overlap length 0, so any step with a
///   positive overlap is preferred to it.
/// * The words go to the step with the largest overlap; on a tie, to the
///   earlier step in `steps`. An utterance overlapping no step is dropped.
/// * Words are appended to whatever the step already holds, so words keep the
///   utterance order.
///
/// A reversed utterance interval (`end_time < start_time`) is read with its
/// ends swapped.
pub fn assign_words(steps: &mut [AttentionStep], utterances: &[Utterance]) {
    for u in utterances {
        let words: Vec<&str> = u.utterance.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let (us, ue) = (u.start_time.min(u.end_time), u.start_time.max(u.end_time));
        let mut best: Option<(usize, f64)> = None;
        for (i, step) in steps.iter().enumerate() {
            let Some(s) = step.start else { continue };
            let e = s + step.duration.max(0.0);
            let overlap = e.min(ue) - s.max(us);
            let point = ue <= us || e <= s;
            let overlaps = if point { overlap >= 0.0 } else { overlap > 0.0 };
            if !overlaps {
                continue;
            }
            let overlap = overlap.max(0.0);
            if best.is_none_or(|(_, b)| overlap > b) {
                best = Some((i, overlap));
            }
        }
        if let Some((i, _)) = best {
            steps[i].words.extend(words.iter().map(|w| (*w).to_string()));
        }
    }
}

/// Keeps at most `max_steps` steps and returns them with the number dropped.
///
/// When there are too many steps, the `max_steps` longest ones are kept
/// (equal durations: the earlier step wins) and returned in their original
/// temporal order. Dwell time is the measure of attention a step carries:
/// the long dwells are where the person actually looked while describing,
/// whereas the short ones are mostly transits and hesitations, so dropping
/// the shortest loses the least attention. (The paper caps trajectories at
/// [`crate::MAX_STEPS`] steps.)
pub fn limit_steps(steps: Vec<AttentionStep>, max_steps: usize) -> (Vec<AttentionStep>, usize) {
    if steps.len() <= max_steps {
        return (steps, 0);
    }
    let dropped = steps.len() - max_steps;
    let mut order: Vec<usize> = (0..steps.len()).collect();
    // Stable sort: equal durations keep index order, i.e. earlier first.
    order.sort_by(|&a, &b| steps[b].duration.total_cmp(&steps[a].duration));
    let mut keep = vec![false; steps.len()];
    for &i in &order[..max_steps] {
        keep[i] = true;
    }
    let kept = steps.into_iter().zip(keep).filter_map(|(s, k)| k.then_some(s)).collect();
    (kept, dropped)
}

/// Speed between two samples: `hypot(Δx·scale.0, Δy·scale.1) / Δt` (units per
/// second, or degrees per second with `scale` in degrees per unit); `Δt <= 0`
/// gives 0 for the same point and infinity otherwise.
pub(crate) fn speed(a: &RawSample, b: &RawSample, scale: (f64, f64)) -> f64 {
    let dx = (b.x - a.x) * scale.0;
    let dy = (b.y - a.y) * scale.1;
    let dist = dx.hypot(dy);
    let dt = b.t - a.t;
    if dt > 0.0 {
        dist / dt
    } else if dist == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Grows `b` to at least `min_w` × `min_h` (see [`BBox::with_min_size_xy`]) and clamps it to [0, 1].
pub(crate) fn grow_to_min_size(b: BBox, min_w: f64, min_h: f64) -> BBox {
    b.with_min_size_xy(min_w, min_h).clamped()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(start: Option<f64>, duration: f64) -> AttentionStep {
        AttentionStep { bbox: BBox::from_corners(0.0, 0.0, 1.0, 1.0), duration, start, words: Vec::new() }
    }

    fn utt(text: &str, start_time: f64, end_time: f64) -> Utterance {
        Utterance { utterance: text.to_string(), start_time, end_time }
    }

    #[test]
    fn assign_words_picks_largest_overlap_earlier_on_tie() {
        // Steps: S0 [0, 1], S1 [1.5, 3], S2 (no start), S3 [3.25, 4].
        let mut steps = vec![step(Some(0.0), 1.0), step(Some(1.5), 1.5), step(None, 100.0), step(Some(3.25), 0.75)];
        let utterances = vec![
            utt("  a  dog ", 0.25, 0.75),    // inside S0 only
            utt("Running, fast", 0.75, 2.0), // S0: 0.25, S1: 0.5 → S1
            utt("on grass", 2.5, 3.75),      // S1: 0.5, S3: 0.5 → tie → S1 (earlier)
            utt("near", 2.875, 3.625),       // S1: 0.125, S3: 0.375 → S3
            utt("um", 3.5, 3.5),             // point inside S3
            utt("between", 1.0, 1.5),        // touches S0 and S1 only at endpoints → dropped
            utt("later", 5.0, 6.0),          // outside all steps → dropped
            utt("   ", 0.0, 1.0),            // no words
        ];
        assign_words(&mut steps, &utterances);
        assert_eq!(steps[0].words, vec!["a", "dog"]);
        assert_eq!(steps[1].words, vec!["Running,", "fast", "on", "grass"]);
        assert!(steps[2].words.is_empty());
        assert_eq!(steps[3].words, vec!["near", "um"]);
    }

    #[test]
    fn assign_words_point_utterance_on_shared_boundary_goes_to_earlier_step() {
        let mut steps = vec![step(Some(0.0), 1.0), step(Some(1.0), 1.0)];
        assign_words(&mut steps, &[utt("here", 1.0, 1.0), utt("there", 1.5, 1.5)]);
        assert_eq!(steps[0].words, vec!["here"]);
        assert_eq!(steps[1].words, vec!["there"]);
    }

    #[test]
    fn limit_steps_keeps_longest_in_temporal_order() {
        let durations = [0.5, 0.2, 0.9, 0.2, 0.7, 0.2];
        let steps: Vec<_> = durations.iter().enumerate().map(|(i, &d)| step(Some(i as f64), d)).collect();
        let (kept, dropped) = limit_steps(steps.clone(), 4);
        assert_eq!(dropped, 2);
        // 0.9, 0.7, 0.5 and the earliest of the three 0.2s (index 1).
        let starts: Vec<_> = kept.iter().map(|s| s.start).collect();
        assert_eq!(starts, vec![Some(0.0), Some(1.0), Some(2.0), Some(4.0)]);

        let (same, none) = limit_steps(steps.clone(), 6);
        assert_eq!((same, none), (steps.clone(), 0));
        let (empty, all) = limit_steps(steps, 0);
        assert!(empty.is_empty());
        assert_eq!(all, 6);
    }

    #[test]
    fn grow_to_min_size_per_axis_and_edges() {
        let b = grow_to_min_size(BBox::from_corners(0.4, 0.5, 0.42, 0.5), 0.1, 0.2);
        assert!((b.x1 - 0.36).abs() < 1e-12 && (b.x2 - 0.46).abs() < 1e-12, "{b:?}");
        assert!((b.y1 - 0.4).abs() < 1e-12 && (b.y2 - 0.6).abs() < 1e-12, "{b:?}");
        // Already large enough on x; pushed inside the square on y.
        let b = grow_to_min_size(BBox::from_corners(0.1, 0.99, 0.3, 1.0), 0.1, 0.2);
        assert_eq!((b.x1, b.x2), (0.1, 0.3));
        assert!((b.y1 - 0.8).abs() < 1e-12 && b.y2 == 1.0, "{b:?}");
    }
}
