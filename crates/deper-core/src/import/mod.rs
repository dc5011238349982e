//! Streaming importers. Each reads one input file record by record, builds
//! triplets and hands them to a sink, so memory stays flat in the file size.
//!
//! * [`ln`]: Localized Narratives JSONL (COCO-LN, Flickr30k-LN, …).
//! * [`authors`]: the DEPER authors' JSON records.
//! * [`gaze`]: raw eye-tracker samples (CSV or JSON) plus captions.
//!
//! Malformed records stop the import with a [`RecordError`] naming file, line
//! and field, unless `skip_bad` is set: then they are counted in the
//! [`ImportReport`] by reason and the import goes on. Errors that leave the
//! rest of the file unreadable (a broken JSON array, unsorted gaze samples,
//! I/O errors) and errors returned by the sink always stop the import.
//!
//! Every importer cleans its points the same way ([`clean_trace`]): points
//! with a non-finite coordinate or time are dropped, points whose time goes
//! back before the previous kept point are dropped, coordinates outside
//! [0, 1] are clamped; negative durations become 0 ([`clean_duration`]).
//! Each repair is counted in the report. Records whose trajectory ends up
//! empty are kept and counted in [`ImportReport::empty_trajectories`].
//!
//! Fast path: records are parsed with plain `serde_json`; only a record that
//! fails is parsed again with `serde_path_to_error` to find the field path.

pub mod authors;
pub mod gaze;
pub mod ln;

use crate::{RawSample, RecordError, Triplet};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead};
use std::path::Path;

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
    /// Gaze samples dropped because the tracker marked them invalid (`validity` 0/false).
    pub dropped_invalid_samples: usize,
    /// Gaze trials without a caption in the captions file (kept with an empty description).
    pub missing_captions: usize,
    /// Display names of the subjects seen, by subject id (the authors' `subject_name`;
    /// empty for importers whose input has no names). The sink receives triplets only,
    /// so this is where the names come back.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subject_names: BTreeMap<String, String>,
}

impl ImportReport {
    /// Adds the repair counters of `other` (one record's) to these.
    pub fn absorb_repairs(&mut self, other: &ImportReport) {
        self.empty_trajectories += other.empty_trajectories;
        self.clamped_points += other.clamped_points;
        self.dropped_nonfinite_points += other.dropped_nonfinite_points;
        self.dropped_backwards_time += other.dropped_backwards_time;
        self.repaired_negative_durations += other.repaired_negative_durations;
        self.dropped_over_step_limit += other.dropped_over_step_limit;
        self.dropped_invalid_samples += other.dropped_invalid_samples;
        self.missing_captions += other.missing_captions;
    }

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

/// Cleans one trace (or one trace segment) in time order, counting each repair in `report`:
///
/// 1. a point with a NaN or infinite `x`, `y` or `t` is dropped (`dropped_nonfinite_points`);
/// 2. a point whose `t` is before the previous *kept* point's `t` is dropped
///    (`dropped_backwards_time`); equal times are kept;
/// 3. `x` and `y` outside [0, 1] are clamped (`clamped_points`, one per point however
///    many of its coordinates were clamped).
pub fn clean_trace(points: impl IntoIterator<Item = RawSample>, report: &mut ImportReport) -> Vec<RawSample> {
    let points = points.into_iter();
    let mut kept: Vec<RawSample> = Vec::with_capacity(points.size_hint().0);
    let mut last_t = f64::NEG_INFINITY;
    for p in points {
        if !(p.x.is_finite() && p.y.is_finite() && p.t.is_finite()) {
            report.dropped_nonfinite_points += 1;
            continue;
        }
        if p.t < last_t {
            report.dropped_backwards_time += 1;
            continue;
        }
        last_t = p.t;
        let (x, y) = (p.x.clamp(0.0, 1.0), p.y.clamp(0.0, 1.0));
        if x != p.x || y != p.y {
            report.clamped_points += 1;
        }
        kept.push(RawSample { x, y, t: p.t });
    }
    kept
}

/// A duration with negative values set to 0 (counted in `repaired_negative_durations`).
pub fn clean_duration(duration: f64, report: &mut ImportReport) -> f64 {
    if duration < 0.0 {
        report.repaired_negative_durations += 1;
        0.0
    } else {
        duration
    }
}

/// Calls the progress callback every ~1 MiB of input or every 1000 records.
#[derive(Debug, Default)]
pub(crate) struct ProgressTicker {
    last_bytes: u64,
    records_since: usize,
}

impl ProgressTicker {
    const BYTES: u64 = 1 << 20;
    const RECORDS: usize = 1000;

    /// One more record read; `bytes` consumed so far.
    pub(crate) fn record(&mut self, bytes: u64, progress: &mut Progress) {
        self.records_since += 1;
        if self.records_since >= Self::RECORDS || bytes.saturating_sub(self.last_bytes) >= Self::BYTES {
            self.report(bytes, progress);
        }
    }

    /// Reports `bytes` now (e.g. at the end of the input).
    pub(crate) fn report(&mut self, bytes: u64, progress: &mut Progress) {
        self.records_since = 0;
        self.last_bytes = bytes;
        progress(bytes);
    }
}

/// Size of the read buffer of the line-based importers.
pub(crate) const READ_BUFFER: usize = 1 << 20;

/// Reads a file line by line into one reused buffer, counting lines (1-based) and bytes.
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    /// Number of the line last returned (1-based).
    pub(crate) line: usize,
    /// Bytes consumed so far.
    pub(crate) bytes: u64,
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(reader: R) -> Self {
        Self { reader, buf: Vec::new(), line: 0, bytes: 0 }
    }

    /// The next line without its line terminator (`\n` or `\r\n`), or `None` at the end.
    /// A last line without a terminator is returned too.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        self.bytes += n as u64;
        Ok(Some(self.current()))
    }

    /// The next line that is not blank, with its 1-based number; I/O errors name `path`.
    pub(crate) fn next_record(&mut self, path: &Path) -> crate::Result<Option<(usize, &[u8])>> {
        loop {
            match self.next_line() {
                Ok(Some(line)) if is_blank(line) => continue,
                Ok(Some(_)) => return Ok(Some((self.line, self.current()))),
                Ok(None) => return Ok(None),
                Err(e) => return Err(crate::Error::io(path, e)),
            }
        }
    }

    /// The line last read, without its terminator.
    fn current(&self) -> &[u8] {
        let mut line: &[u8] = &self.buf;
        if let Some(rest) = line.strip_suffix(b"\n") {
            line = rest;
        }
        if let Some(rest) = line.strip_suffix(b"\r") {
            line = rest;
        }
        line
    }
}

/// True when a line holds only ASCII whitespace.
pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// A line as UTF-8, or a record error naming the first invalid byte.
pub(crate) fn line_str<'a>(bytes: &'a [u8], file: &Path, line: usize) -> Result<&'a str, RecordError> {
    std::str::from_utf8(bytes).map_err(|e| {
        RecordError::new(file, line, None, format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1))
    })
}

/// Parses one JSON record whose text starts on line `first_line` of `file`.
///
/// The fast path is plain `serde_json`; when it fails the text is parsed again with
/// `serde_path_to_error` so that the error names the field (e.g. `traces[0][1].x`).
/// The error's line is the file line where serde_json stopped.
pub(crate) fn parse_json_record<T: DeserializeOwned>(
    text: &str,
    file: &Path,
    first_line: usize,
) -> Result<T, RecordError> {
    match serde_json::from_str::<T>(text) {
        Ok(v) => Ok(v),
        Err(fast) => {
            let mut de = serde_json::Deserializer::from_str(text);
            let (field, err) = match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(e) => (field_path(&e.path().to_string()), e.into_inner()),
                // Only trailing characters can make the slow path succeed.
                Ok(_) => (None, de.end().err().unwrap_or(fast)),
            };
            Err(json_record_error(&err, field, file, first_line))
        }
    }
}

/// A record error from a serde_json error inside a record starting on `first_line`.
pub(crate) fn json_record_error(
    err: &serde_json::Error,
    field: Option<String>,
    file: &Path,
    first_line: usize,
) -> RecordError {
    let line = first_line + err.line().saturating_sub(1);
    RecordError::new(file, line, field, json_message(err))
}

/// serde_json's message without its " at line L column C" suffix, with the column kept.
pub(crate) fn json_message(err: &serde_json::Error) -> String {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match full.strip_suffix(&suffix) {
        Some(msg) if err.line() > 0 => format!("{msg} (column {})", err.column()),
        Some(msg) => msg.to_string(),
        None => full,
    }
}

/// A `serde_path_to_error` path as a field name: `None` for the record itself,
/// trailing unknown segments (`.?`) removed.
fn field_path(path: &str) -> Option<String> {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_suffix(".?") {
            p = rest;
        } else if let Some(rest) = p.strip_suffix('?') {
            p = rest;
        } else {
            break;
        }
    }
    if p.is_empty() || p == "." {
        None
    } else {
        Some(p.to_string())
    }
}

/// An id that the input writes as a string or an integer; kept as its decimal string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Id(pub(crate) String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl serde::de::Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Id, E> {
                Ok(Id(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

/// Opens `path` for buffered reading with a large buffer.
pub(crate) fn open(path: &Path) -> crate::Result<io::BufReader<std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
    Ok(io::BufReader::with_capacity(READ_BUFFER, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: f64, y: f64, t: f64) -> RawSample {
        RawSample { x, y, t }
    }

    #[test]
    fn clean_trace_drops_and_clamps() {
        let mut r = ImportReport::default();
        let pts = vec![
            p(0.5, 0.5, 0.0),
            p(f64::NAN, 0.5, 0.1),
            p(0.5, f64::INFINITY, 0.2),
            p(0.5, 0.5, f64::NEG_INFINITY),
            p(1.5, -0.2, 0.3),
            p(0.4, 0.4, 0.25),
            p(0.4, 0.4, 0.3),
            p(0.2, 1.0, 0.4),
        ];
        let kept = clean_trace(pts, &mut r);
        assert_eq!(kept, vec![p(0.5, 0.5, 0.0), p(1.0, 0.0, 0.3), p(0.4, 0.4, 0.3), p(0.2, 1.0, 0.4)]);
        assert_eq!(r.dropped_nonfinite_points, 3);
        assert_eq!(r.dropped_backwards_time, 1);
        assert_eq!(r.clamped_points, 1);
    }

    #[test]
    fn negative_durations_become_zero() {
        let mut r = ImportReport::default();
        assert_eq!(clean_duration(-0.5, &mut r), 0.0);
        assert_eq!(clean_duration(0.5, &mut r), 0.5);
        assert_eq!(r.repaired_negative_durations, 1);
    }

    #[test]
    fn field_paths() {
        assert_eq!(field_path("traces[0][1].x").as_deref(), Some("traces[0][1].x"));
        assert_eq!(field_path("traces[0][1].?").as_deref(), Some("traces[0][1]"));
        assert_eq!(field_path("."), None);
        assert_eq!(field_path("?"), None);
    }

    #[test]
    fn json_errors_name_field_and_line() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct P {
            x: f64,
        }
        let e = parse_json_record::<Vec<P>>("[{\"x\": 1},\n {\"x\": \"a\"}]", Path::new("f.json"), 10)
            .expect_err("must fail");
        assert_eq!(e.line, 11);
        assert_eq!(e.field.as_deref(), Some("[1].x"));
        assert!(e.message.starts_with("invalid type"), "{}", e.message);
        assert!(!e.message.contains("at line"), "{}", e.message);
    }
}
