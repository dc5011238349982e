//! Simulated Localized-Narratives-style mouse traces with timed speech.
//!
//! A trial is one persona viewing and describing one scene. The pointer is
//! sampled at 30 Hz from t = 0. It jumps between objects along slightly curved
//! paths (mean speed well above the dwell rule's 0.5 units/s, even at the ends
//! of a jump), and during a dwell it rests on the attended object with a small
//! tremor (an AR(1) offset whose per-sample step is capped, so dwell speed
//! stays well below 0.5 units/s and dispersion below 0.15). The description is
//! spoken while pointing: the words of the k-th mention start shortly after
//! the k-th attended dwell begins (or when the previous words end), at the
//! persona's speech rate. The time spent on an object is stretched to roughly
//! the speech it carries; beyond the persona's habitual dwell duration that
//! time is split into several dwells on the same object, separated by small
//! quick re-aims (so short-dwell personas give more, shorter steps). The last
//! visit lasts until the speaking ends. Start and end points may lie slightly
//! outside the image, as in real LN data.
//!
//! Coordinates are rounded to 4 decimals and times to 3, so the JSONL written
//! from a trace parses back to exactly the same numbers.

use crate::persona::{Persona, Visit};
use crate::rand_util::{lognormal, normal, unit_range};
use crate::scene::{Scene, SceneObject};
use deper_core::{RawSample, Utterance};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Samples per second of the simulated pointer.
pub const SAMPLE_RATE: f64 = 30.0;
/// Shortest simulated dwell, seconds (comfortably above the builder's 0.2 s).
pub const MIN_DWELL_S: f64 = 0.3;
/// Longest per-sample pointer step during a dwell (≈ 0.36 units/s at 30 Hz).
const MAX_DWELL_STEP: f64 = 0.012;
/// Most dwells one visit of an object is split into.
const MAX_PIECES: usize = 4;
/// Shortest re-aim jump within an object (fast enough to end a dwell).
const MIN_REAIM: f64 = 0.05;
/// Longest slow drift across one dwell (keeps dispersion well below 0.15).
const MAX_DRIFT: f64 = 0.05;

/// Ground truth of one simulated dwell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DwellRecord {
    /// Object index in the scene.
    pub object: usize,
    /// A silent return to an object seen before.
    pub revisit: bool,
    /// Time of the first and last dwell sample, seconds.
    pub start: f64,
    pub end: f64,
    /// The resting point the dwell started at.
    pub x: f64,
    pub y: f64,
}

/// One simulated (persona, scene) trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub visits: Vec<Visit>,
    pub dwells: Vec<DwellRecord>,
    /// Raw pointer samples (may lie slightly outside [0, 1]).
    pub trace: Vec<RawSample>,
    /// One utterance per spoken word, LN style.
    pub utterances: Vec<Utterance>,
    /// The description: the utterances joined by spaces.
    pub caption: String,
    /// Objects mentioned, in mention order.
    pub mentioned: Vec<usize>,
}

fn round_to(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

fn time_of(index: usize) -> f64 {
    index as f64 / SAMPLE_RATE
}

/// Simulates one trial from the trial's own random stream.
pub fn simulate(persona: &Persona, scene: &Scene, rng: &mut impl Rng) -> Trial {
    let v = &persona.viewing;
    let visits = persona.plan_visits(scene, rng);
    let view: Vec<usize> = visits.iter().filter(|v| !v.revisit).map(|v| v.object).collect();
    let (slots, mentioned) = persona.compose(scene, &view, rng);
    let slot_words: Vec<Vec<&str>> = slots.iter().map(|s| s.split_whitespace().collect()).collect();
    let word_dt = 1.0 / persona.wording.speech_rate;
    let speed = (v.mouse_speed * lognormal(rng, 1.0, 0.2)).max(1.4);

    let mut pts: Vec<(f64, f64)> = vec![(unit_range(rng, -0.03, 1.03), unit_range(rng, -0.03, 1.03))];
    let mut utterances: Vec<Utterance> = Vec::new();
    let mut dwells = Vec::with_capacity(visits.len());
    let mut speech_end = 0.0_f64;
    let mut slot = 0;
    for (vi, visit) in visits.iter().enumerate() {
        let o = &scene.objects[visit.object];
        let c = dwell_point(o, v.dwell_spread, rng);
        move_to(&mut pts, c, speed, rng);
        let start_idx = pts.len();
        let t_start = time_of(start_idx);
        let mut d = lognormal(rng, v.dwell_median_s, v.dwell_sigma).clamp(MIN_DWELL_S, 4.0);
        if visit.revisit {
            d = (d * 0.6).max(MIN_DWELL_S);
        } else {
            if let Some(words) = slot_words.get(slot) {
                let mut t = (t_start + unit_range(rng, 0.05, 0.2)).max(speech_end);
                for w in words {
                    let dur = word_dt * unit_range(rng, 0.8, 1.25);
                    utterances.push(Utterance { utterance: (*w).to_string(), start_time: t, end_time: t + 0.85 * dur });
                    t += dur;
                }
                speech_end = t;
                d = d.max(0.8 * words.len() as f64 * word_dt);
            }
            slot += 1;
        }
        if vi + 1 == visits.len() {
            d = d.max(speech_end - t_start + 0.1);
        }
        // Time on the object beyond the persona's habitual dwell is spent in
        // several dwells on it, each after a small quick re-aim (at most four).
        let mut remaining = d;
        let mut at = c;
        for piece_no in 0..MAX_PIECES {
            let piece = if piece_no + 1 < MAX_PIECES && remaining > (1.6 * v.dwell_median_s).max(2.0 * MIN_DWELL_S) {
                lognormal(rng, v.dwell_median_s, v.dwell_sigma).clamp(MIN_DWELL_S, remaining - MIN_DWELL_S)
            } else {
                remaining
            };
            if piece_no > 0 {
                at = reaim_point(o, at, rng);
                move_to(&mut pts, at, speed, rng);
            }
            dwell(&mut pts, at, piece, o, v.dwell_spread, v.jitter, rng);
            remaining -= piece;
            if remaining <= 0.0 {
                break;
            }
        }
        dwells.push(DwellRecord {
            object: visit.object,
            revisit: visit.revisit,
            start: round_to(t_start, 1e3),
            end: round_to(time_of(pts.len() - 1), 1e3),
            x: round_to(c.0, 1e4),
            y: round_to(c.1, 1e4),
        });
    }
    if rng.gen_bool(0.7) {
        let away = (unit_range(rng, -0.03, 1.03), unit_range(rng, -0.03, 1.03));
        move_to(&mut pts, away, speed, rng);
        pts.push(away);
    }

    let trace: Vec<RawSample> = pts
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| RawSample { x: round_to(x, 1e4), y: round_to(y, 1e4), t: round_to(time_of(i), 1e3) })
        .collect();
    let t_end = trace.last().map_or(0.0, |s| s.t);
    for u in &mut utterances {
        u.start_time = round_to(u.start_time, 1e3).min(t_end);
        u.end_time = round_to(u.end_time, 1e3).min(t_end);
    }
    let caption = slots.iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join(" ");
    Trial { visits, dwells, trace, utterances, caption, mentioned }
}

/// Where the pointer comes to rest on an object: its centre, shifted by up to
/// 60 % of the half-extent times the persona's spread.
fn dwell_point(o: &SceneObject, spread: f64, rng: &mut impl Rng) -> (f64, f64) {
    let hw = o.bbox.width() / 2.0;
    let hh = o.bbox.height() / 2.0;
    (o.cx + spread * unit_range(rng, -0.6, 0.6) * hw, o.cy + spread * unit_range(rng, -0.6, 0.6) * hh)
}

/// A new resting point on the same object, at least [`MIN_REAIM`] away from
/// `from` when the object allows it (the farthest of a few candidates otherwise).
fn reaim_point(o: &SceneObject, from: (f64, f64), rng: &mut impl Rng) -> (f64, f64) {
    let b = &o.bbox;
    let mut best = from;
    let mut best_d = -1.0;
    for _ in 0..8 {
        let p =
            (o.cx + unit_range(rng, -0.7, 0.7) * b.width() / 2.0, o.cy + unit_range(rng, -0.7, 0.7) * b.height() / 2.0);
        let (dx, dy) = (p.0 - from.0, p.1 - from.1);
        let d = (dx * dx + dy * dy).sqrt();
        if d >= MIN_REAIM {
            return p;
        }
        if d > best_d {
            best = p;
            best_d = d;
        }
    }
    best
}

/// Appends the samples of a fast, slightly curved jump towards `to` (excluding `to`).
fn move_to(pts: &mut Vec<(f64, f64)>, to: (f64, f64), speed: f64, rng: &mut impl Rng) {
    let from = pts.last().copied().unwrap_or(to);
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let dist = (dx * dx + dy * dy).sqrt();
    let n = ((dist / speed * SAMPLE_RATE).ceil() as usize).max(2);
    let bend = unit_range(rng, -0.2, 0.2);
    let ctrl = ((from.0 + to.0) / 2.0 - dy * bend, (from.1 + to.1) / 2.0 + dx * bend);
    for j in 1..n {
        let u = j as f64 / n as f64;
        // Half linear, half smoothstep: quick start and stop without a crawl at the ends.
        let s = 0.5 * u + 0.5 * u * u * (3.0 - 2.0 * u);
        let a = (1.0 - s) * (1.0 - s);
        let b = 2.0 * (1.0 - s) * s;
        let c = s * s;
        pts.push((a * from.0 + b * ctrl.0 + c * to.0, a * from.1 + b * ctrl.1 + c * to.1));
    }
}

/// Appends the samples of a dwell of `duration` seconds starting at `c`.
fn dwell(
    pts: &mut Vec<(f64, f64)>,
    c: (f64, f64),
    duration: f64,
    o: &SceneObject,
    spread: f64,
    jitter: f64,
    rng: &mut impl Rng,
) {
    let n = ((duration * SAMPLE_RATE).round() as usize).max((MIN_DWELL_S * SAMPLE_RATE) as usize);
    // Wandering personas drift slowly towards a second point on the object.
    let drift_len = (spread * o.radius * 0.8).min(MAX_DRIFT).min(0.25 * duration);
    let (gx, gy) = (normal(rng), normal(rng));
    let norm = (gx * gx + gy * gy).sqrt().max(1e-9);
    let b = &o.bbox;
    let target = (
        (c.0 + gx / norm * drift_len).clamp(b.x1 + 0.2 * b.width(), b.x2 - 0.2 * b.width()),
        (c.1 + gy / norm * drift_len).clamp(b.y1 + 0.2 * b.height(), b.y2 - 0.2 * b.height()),
    );
    let sigma = (0.03 * o.radius).min(0.003) * jitter;
    let mut off = (0.0, 0.0);
    for j in 0..n {
        let f = if n > 1 { j as f64 / (n - 1) as f64 } else { 0.0 };
        let base = (c.0 + (target.0 - c.0) * f, c.1 + (target.1 - c.1) * f);
        if j > 0 {
            off = (0.85 * off.0 + sigma * normal(rng), 0.85 * off.1 + sigma * normal(rng));
        }
        let mut p = (base.0 + off.0, base.1 + off.1);
        if j > 0 {
            if let Some(&prev) = pts.last() {
                let (sx, sy) = (p.0 - prev.0, p.1 - prev.1);
                let step = (sx * sx + sy * sy).sqrt();
                if step > MAX_DWELL_STEP {
                    p = (prev.0 + sx * MAX_DWELL_STEP / step, prev.1 + sy * MAX_DWELL_STEP / step);
                }
            }
        }
        pts.push(p);
    }
}
