//! Gaze samples → fixations → attention steps, with deper-core's builders (the same code the
//! native eye-tracker importer runs, `deper_core::import::gaze`).
//!
//! The page maps each smoothed screen prediction into the displayed image
//! ([`ImageRect::normalise`]: (0, 0) top-left, (1, 1) bottom-right of the image) and hands the
//! trial's samples here. They are cleaned exactly as the importer cleans them
//! ([`deper_core::import::clean_trace`]: non-finite points and points going back in time are
//! dropped, coordinates outside [0, 1] are clamped, each repair counted), then
//! [`deper_core::trajectory::fixations_to_steps`] finds the fixations (I-VT or I-DT) and turns
//! them into at most 30 steps, attaching the words of any timed utterances. Unlike the importer,
//! times are not rebased: the page gives seconds since the image appeared, which is also the
//! origin of the utterance times.
//!
//! [`ImageRect::visual_angle`] gives the image's size in degrees for
//! [`GazeParams::image_width_deg`] / [`GazeParams::image_height_deg`] from the viewing setup.

use crate::error::{GazeError, Result};
use crate::kalman::TimedPoint;
use crate::validation::ViewingSetup;
use deper_core::import::{clean_trace, ImportReport};
use deper_core::trajectory::{fixations_to_steps, idt, ivt, FixationMethod, GazeParams};
use deper_core::{AttentionStep, Fixation, RawSample, Utterance};
use serde::{Deserialize, Serialize};

/// Where the image is displayed, in screen (CSS) px.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageRect {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

impl ImageRect {
    fn check(&self) -> Result<()> {
        for (field, v) in [("left", self.left), ("top", self.top)] {
            if !v.is_finite() {
                return Err(GazeError::InvalidParam { field, message: format!("must be finite, got {v}") });
            }
        }
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(GazeError::InvalidParam { field, message: format!("must be finite and > 0, got {v}") });
            }
        }
        Ok(())
    }

    /// A screen point as an image-normalised sample (not clamped: cleaning counts the clamps).
    pub fn normalise(&self, p: TimedPoint) -> RawSample {
        RawSample { x: (p.x - self.left) / self.width, y: (p.y - self.top) / self.height, t: p.t }
    }

    /// (width, height) of the image in degrees of visual angle, as [`ViewingSetup::px_to_deg`].
    pub fn visual_angle(&self, setup: &ViewingSetup) -> (f64, f64) {
        (setup.px_to_deg(self.width), setup.px_to_deg(self.height))
    }
}

/// Steps of one trial and what was repaired on the way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionResult {
    /// Every fixation the filter found (before the step limit), in time order.
    pub fixations: Vec<Fixation>,
    pub steps: Vec<AttentionStep>,
    /// Fixations found before the step limit.
    pub found: usize,
    /// Steps dropped by the step limit (the shortest ones).
    pub dropped_over_limit: usize,
    /// Samples dropped for a NaN or infinite coordinate or time.
    pub dropped_nonfinite_points: usize,
    /// Samples dropped because their time went backwards.
    pub dropped_backwards_time: usize,
    /// Samples outside the image, clamped to its edge.
    pub clamped_points: usize,
}

/// Image-normalised gaze samples → attention steps (see the [module docs](self)).
pub fn samples_to_attention(
    samples: &[RawSample],
    utterances: &[Utterance],
    params: &GazeParams,
) -> Result<AttentionResult> {
    for (field, v) in [
        ("image_width_deg", params.image_width_deg),
        ("image_height_deg", params.image_height_deg),
        ("min_box_deg", params.min_box_deg),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(GazeError::InvalidParam { field, message: format!("must be finite and > 0, got {v}") });
        }
    }
    let mut report = ImportReport::default();
    let cleaned = clean_trace(samples.iter().copied(), &mut report);
    let (steps, build) = fixations_to_steps(&cleaned, utterances, params);
    // The steps' fixations again, for the page's replay: the same filter on the same samples.
    let deg_per_unit = (params.image_width_deg, params.image_height_deg);
    let fixations = match params.method {
        FixationMethod::Ivt => ivt(&cleaned, &params.ivt, deg_per_unit),
        FixationMethod::Idt => idt(&cleaned, &params.idt, deg_per_unit),
    };
    Ok(AttentionResult {
        fixations,
        steps,
        found: build.found,
        dropped_over_limit: build.dropped_over_limit,
        dropped_nonfinite_points: report.dropped_nonfinite_points,
        dropped_backwards_time: report.dropped_backwards_time,
        clamped_points: report.clamped_points,
    })
}

/// Screen points of one trial → attention steps: [`ImageRect::normalise`] then
/// [`samples_to_attention`].
pub fn screen_points_to_attention(
    points: &[TimedPoint],
    rect: &ImageRect,
    utterances: &[Utterance],
    params: &GazeParams,
) -> Result<AttentionResult> {
    rect.check()?;
    let samples: Vec<RawSample> = points.iter().map(|&p| rect.normalise(p)).collect();
    samples_to_attention(&samples, utterances, params)
}
