//! Mouse trace → attention steps. (stub: signatures fixed, body to be written)

use super::BuildReport;
use crate::{AttentionStep, RawSample, Utterance};
use serde::{Deserialize, Serialize};

/// Parameters of the dwell rule (documented on the fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DwellParams {
    pub max_speed: f64,
    pub max_dispersion: f64,
    pub min_duration: f64,
    pub min_box_size: f64,
    pub max_steps: usize,
}

impl Default for DwellParams {
    fn default() -> Self {
        Self { max_speed: 0.5, max_dispersion: 0.15, min_duration: 0.2, min_box_size: 0.05, max_steps: crate::MAX_STEPS }
    }
}

/// Splits each trace segment into dwells and returns one step per dwell, in time order,
/// with the utterances spoken during each step attached as words.
pub fn mouse_trace_to_steps(
    segments: &[Vec<RawSample>],
    utterances: &[Utterance],
    params: &DwellParams,
) -> (Vec<AttentionStep>, BuildReport) {
    let _ = (segments, utterances, params);
    unimplemented!()
}
