//! Builders that turn raw attention signals into attention steps.
//!
//! * [`mouse`]: a Localized-Narratives-style mouse trace → dwells → steps.
//! * [`fixation`]: raw gaze samples → fixations (I-VT or I-DT) → steps.
//!
//! Both keep, for each step, the words of the timed caption spoken during it
//! ([`assign_words`]) and cap a trajectory at [`crate::MAX_STEPS`] steps
//! ([`limit_steps`]).

pub mod fixation;
pub mod mouse;

pub use fixation::{fixations_to_steps, idt, ivt, FixationMethod, GazeParams, IdtParams, IvtParams};
pub use mouse::{mouse_trace_to_steps, DwellParams};

use crate::{AttentionStep, Utterance};

/// What a builder did besides producing steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Dwells or fixations found before the step limit was applied.
    pub found: usize,
    /// Steps dropped to respect the step limit.
    pub dropped_over_limit: usize,
}
