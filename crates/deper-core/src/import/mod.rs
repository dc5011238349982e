//! Streaming importers. Each reads one input file record by record, builds
//! triplets and hands them to a sink, so memory stays flat in the file size.
//!
//! * [`ln`]: Localized Narratives JSONL (COCO-LN, Flickr30k-LN, …).
//! * [`authors`]: the DEPER authors' JSON records.
//! * [`gaze`]: raw eye-tracker samples (CSV or JSON) plus captions.
//!
//! Malformed records stop the import with a [`RecordError`] naming file, line
//! and field, unless `skip_bad` is set: then they are counted in the
//! [`ImportReport`] by reason and the import goes on.

pub mod authors;
pub mod gaze;
pub mod ln;

use crate::{RecordError, Triplet};
use serde::Serialize;
use std::collections::BTreeMap;

/// Receives each triplet an importer builds.
pub type Sink<'a> = dyn FnMut(Triplet) -> crate::Result<()> + 'a;
/// Told how many bytes of the input have been consumed so far.
pub type Progress<'a> = dyn FnMut(u64) + 'a;

/// Number of example errors kept in a report.
const MAX_EXAMPLES: usize = 5;

/// What an import did, including every repair and skip, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    /// Records read (good and bad).
    pub records: usize,
    /// Triplets handed to the sink.
    pub triplets: usize,
    /// Triplets kept with an empty trajectory (e.g. a narrative without a trace).
    pub empty_trajectories: usize,
    /// Points whose coordinates lay outside [0, 1] and were clamped.
    pub clamped_points: usize,
    /// Points dropped because a coordinate or time was NaN or infinite.
    pub dropped_nonfinite_points: usize,
    /// Points dropped because their time went backwards.
    pub dropped_backwards_time: usize,
    /// Negative durations set to zero.
    pub repaired_negative_durations: usize,
    /// Steps dropped to respect the 30-step limit.
    pub dropped_over_step_limit: usize,
    /// Records skipped (only with `skip_bad`).
    pub skipped: usize,
    /// Skipped records by reason.
    pub skip_reasons: BTreeMap<String, usize>,
    /// The first few skip errors, in full.
    pub skip_examples: Vec<String>,
}

impl ImportReport {
    /// Records a bad record: fails unless `skip_bad`, else counts it.
    pub fn bad_record(&mut self, err: RecordError, skip_bad: bool) -> crate::Result<()> {
        if !skip_bad {
            return Err(err.into());
        }
        self.skipped += 1;
        *self.skip_reasons.entry(err.kind()).or_default() += 1;
        if self.skip_examples.len() < MAX_EXAMPLES {
            self.skip_examples.push(err.to_string());
        }
        Ok(())
    }
}
