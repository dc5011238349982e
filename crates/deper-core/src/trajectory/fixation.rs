//! Gaze samples → fixations → attention steps. (stub: signatures fixed, body to be written)

use super::BuildReport;
use crate::{AttentionStep, Fixation, RawSample, Utterance};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FixationMethod {
    #[default]
    Ivt,
    Idt,
}

/// Velocity-threshold identification (Salvucci & Goldberg 2000).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IvtParams {
    /// Degrees of visual angle per second.
    pub velocity_threshold: f64,
    /// Seconds.
    pub min_duration: f64,
}

/// Dispersion-threshold identification (Salvucci & Goldberg 2000).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdtParams {
    /// Degrees of visual angle, (max x − min x) + (max y − min y).
    pub dispersion_threshold: f64,
    /// Seconds.
    pub min_duration: f64,
}

/// How gaze samples in normalised image coordinates relate to visual angle, and the step rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GazeParams {
    pub method: FixationMethod,
    pub ivt: IvtParams,
    pub idt: IdtParams,
    /// Degrees of visual angle spanned by the image width.
    pub image_width_deg: f64,
    /// Degrees of visual angle spanned by the image height.
    pub image_height_deg: f64,
    /// Smallest step box side, in degrees (roughly the fovea).
    pub min_box_deg: f64,
    pub max_steps: usize,
}

pub fn ivt(samples: &[RawSample], params: &IvtParams, deg_per_unit: (f64, f64)) -> Vec<Fixation> {
    let _ = (samples, params, deg_per_unit);
    unimplemented!()
}

pub fn idt(samples: &[RawSample], params: &IdtParams, deg_per_unit: (f64, f64)) -> Vec<Fixation> {
    let _ = (samples, params, deg_per_unit);
    unimplemented!()
}

pub fn fixations_to_steps(
    samples: &[RawSample],
    utterances: &[Utterance],
    params: &GazeParams,
) -> (Vec<AttentionStep>, BuildReport) {
    let _ = (samples, utterances, params);
    unimplemented!()
}
