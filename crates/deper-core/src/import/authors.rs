//! Importer of the DEPER authors' JSON records.
//!
//! Input: one JSON array of records (a top-level object or any other value is
//! an error):
//!
//! ```json
//! [{"name": "COCO_val2014_000000391895.jpg", "caption": "A man …",
//!   "subject": 3, "subject_name": "S3",
//!   "X": [0.31, 0.62], "Y": [0.40, 0.55], "T": [0.35, 0.20],
//!   "bboxes": [[0.25, 0.33, 0.37, 0.47], [0.55, 0.48, 0.69, 0.62]],
//!   "split": "train"}, …]
//! ```
//!
//! * One step per entry of `bboxes`, with duration `T[i]` seconds (negative → 0,
//!   counted) and no start time. `T` must have as many entries as `bboxes`, and
//!   so must `X` and `Y` (the fixation centres, optional, otherwise unused);
//!   a mismatch is a record error naming the field.
//! * A box's corners may come in any order ([`BBox::from_corners`]); corners
//!   outside [0, 1] are clamped, counted in `clamped_points` once per corner
//!   point clamped (so at most 2 per box).
//! * At most `max_steps` steps are kept ([`limit_steps`]: the longest ones, in
//!   order); the others are counted in `dropped_over_step_limit`.
//! * `subject` may be an integer or a string; the subject id is its decimal
//!   string. `subject_name` (optional) goes to [`ImportReport::subject_names`]
//!   (first name seen per subject wins) — the sink only receives triplets.
//! * `split` is parsed with [`Split::parse`]; an unknown value is a record error
//!   on field `split`.
//! * Triplet id: `"{name}/{subject}"`; image id: `name` without its extension.
//!
//! The array is streamed element by element (each element is read as raw JSON,
//! then parsed), so memory stays flat however long the file. Record errors name
//! the file line where serde_json stopped inside the element (the element's
//! first line for semantic errors such as length mismatches). A syntax error in
//! the array itself (e.g. a truncated file) stops the import even with
//! `skip_bad`, since nothing after it can be read.

use super::{
    clean_duration, json_record_error, open, parse_json_record, Id, ImportReport, Progress, ProgressTicker, Sink,
};
use crate::trajectory::limit_steps;
use crate::{AttentionStep, BBox, Description, RecordError, Split, Trajectory, TrajectorySource, Triplet};
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::cell::Cell;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

/// Options of [`import_authors_json`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorsOptions {
    /// Skip (and count) bad records instead of stopping at the first one.
    pub skip_bad: bool,
    /// Most steps kept per trajectory.
    pub max_steps: usize,
}

impl Default for AuthorsOptions {
    fn default() -> Self {
        Self { skip_bad: false, max_steps: crate::MAX_STEPS }
    }
}

#[derive(Debug, Deserialize)]
struct AuthorsRecord {
    name: String,
    caption: String,
    subject: Id,
    #[serde(default)]
    subject_name: Option<String>,
    #[serde(rename = "X", default)]
    x: Option<Vec<f64>>,
    #[serde(rename = "Y", default)]
    y: Option<Vec<f64>>,
    #[serde(rename = "T")]
    t: Vec<f64>,
    bboxes: Vec<[f64; 4]>,
    split: String,
}

/// Counts bytes and newlines read through it. serde_json's reader pulls bytes
/// one at a time, so the counts are exact up to its one byte of look-ahead.
struct CountingReader<R> {
    inner: R,
    pos: Rc<Position>,
}

#[derive(Debug, Default)]
struct Position {
    bytes: Cell<u64>,
    newlines: Cell<usize>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = buf.get(..n).unwrap_or_default();
        let newlines = read.iter().filter(|&&b| b == b'\n').count();
        self.pos.newlines.set(self.pos.newlines.get() + newlines);
        self.pos.bytes.set(self.pos.bytes.get() + n as u64);
        Ok(n)
    }
}

/// Streams the authors' JSON array into `sink`, one triplet per record.
pub fn import_authors_json(
    path: &Path,
    opts: &AuthorsOptions,
    sink: &mut Sink,
    progress: &mut Progress,
) -> crate::Result<ImportReport> {
    let pos = Rc::new(Position::default());
    let reader = CountingReader { inner: open(path)?, pos: Rc::clone(&pos) };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut state = State {
        path,
        opts,
        sink,
        progress,
        pos: Rc::clone(&pos),
        report: ImportReport::default(),
        ticker: ProgressTicker::default(),
        fatal: None,
    };
    let result = (&mut state).deserialize(&mut de).and_then(|()| de.end());
    if let Some(err) = state.fatal.take() {
        return Err(err);
    }
    if let Err(e) = result {
        if e.is_io() {
            return Err(crate::Error::io(path, e.into()));
        }
        let mut err = json_record_error(&e, None, path, 1);
        if e.classify() == serde_json::error::Category::Data {
            err.message = format!("expected a JSON array of records at the top level: {}", err.message);
        }
        return Err(err.into());
    }
    let State { report, mut ticker, .. } = state;
    ticker.report(pos.bytes.get(), progress);
    Ok(report)
}

/// The streaming visitor: holds everything an element needs.
struct State<'a, 's, 'p> {
    path: &'a Path,
    opts: &'a AuthorsOptions,
    sink: &'a mut Sink<'s>,
    progress: &'a mut Progress<'p>,
    pos: Rc<Position>,
    report: ImportReport,
    ticker: ProgressTicker,
    /// An error that must stop the import (sink error, bad record without `skip_bad`).
    fatal: Option<crate::Error>,
}

impl<'de> DeserializeSeed<'de> for &mut State<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for &mut State<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            if let Err(err) = self.element(raw.get()) {
                self.fatal = Some(err);
                return Err(serde::de::Error::custom("import stopped"));
            }
        }
        Ok(())
    }
}

impl State<'_, '_, '_> {
    fn element(&mut self, text: &str) -> crate::Result<()> {
        self.report.records += 1;
        // The element's last byte has just been read, so its last line is the current one.
        let end_line = self.pos.newlines.get() + 1;
        let inside = text.bytes().filter(|&b| b == b'\n').count();
        let line = end_line.saturating_sub(inside).max(1);
        let built = parse_json_record::<AuthorsRecord>(text, self.path, line)
            .and_then(|rec| build(rec, self.opts, self.path, line, &mut self.report));
        match built {
            Ok(triplet) => {
                (self.sink)(triplet)?;
                self.report.triplets += 1;
            }
            Err(err) => self.report.bad_record(err, self.opts.skip_bad)?,
        }
        self.ticker.record(self.pos.bytes.get(), self.progress);
        Ok(())
    }
}

/// Image id: the file name without its extension (directories kept).
fn image_id(name: &str) -> &str {
    match name.rfind('.') {
        Some(i) if i > 0 && !name.get(i..).unwrap_or_default().contains(['/', '\\']) => name.get(..i).unwrap_or(name),
        _ => name,
    }
}

fn build(
    rec: AuthorsRecord,
    opts: &AuthorsOptions,
    path: &Path,
    line: usize,
    report: &mut ImportReport,
) -> Result<Triplet, RecordError> {
    let n = rec.bboxes.len();
    let mismatch = |field: &str, len: usize| {
        RecordError::new(
            path,
            line,
            Some(field.to_string()),
            format!("invalid length: `{field}` has {len} entries but `bboxes` has {n}"),
        )
    };
    if rec.t.len() != n {
        return Err(mismatch("T", rec.t.len()));
    }
    for (field, values) in [("X", &rec.x), ("Y", &rec.y)] {
        if let Some(v) = values {
            if v.len() != n {
                return Err(mismatch(field, v.len()));
            }
        }
    }
    let split = Split::parse(&rec.split).ok_or_else(|| {
        RecordError::new(
            path,
            line,
            Some("split".into()),
            format!("invalid value: unknown split {:?}, expected train, val or test", rec.split),
        )
    })?;

    // Every record error is found above, so the repairs below are counted only for kept records.
    let mut steps = Vec::with_capacity(n);
    for (b, &t) in rec.bboxes.iter().zip(&rec.t) {
        let [xa, ya, xb, yb] = *b;
        if !([xa, ya, xb, yb, t].iter().all(|v| v.is_finite())) {
            // serde_json never yields non-finite numbers; kept for safety.
            report.dropped_nonfinite_points += 1;
            continue;
        }
        let raw = BBox::from_corners(xa, ya, xb, yb);
        let bbox = raw.clamped();
        report.clamped_points += usize::from(bbox.x1 != raw.x1 || bbox.y1 != raw.y1);
        report.clamped_points += usize::from(bbox.x2 != raw.x2 || bbox.y2 != raw.y2);
        let duration = clean_duration(t, report);
        steps.push(AttentionStep { bbox, duration, start: None, words: Vec::new() });
    }
    let (steps, dropped) = limit_steps(steps, opts.max_steps);
    report.dropped_over_step_limit += dropped;
    if steps.is_empty() {
        report.empty_trajectories += 1;
    }
    let subject = rec.subject.0;
    if let Some(name) = rec.subject_name {
        report.subject_names.entry(subject.clone()).or_insert(name);
    }
    Ok(Triplet {
        id: format!("{}/{}", rec.name, subject),
        image: image_id(&rec.name).to_string(),
        subject,
        description: Description { text: rec.caption, utterances: Vec::new() },
        trajectory: Trajectory { source: TrajectorySource::Gaze, steps },
        split,
    })
}

#[cfg(test)]
mod tests {
    use super::image_id;

    #[test]
    fn image_ids_drop_the_extension_only() {
        assert_eq!(image_id("COCO_val2014_000000391895.jpg"), "COCO_val2014_000000391895");
        assert_eq!(image_id("a.b.png"), "a.b");
        assert_eq!(image_id("noext"), "noext");
        assert_eq!(image_id(".hidden"), ".hidden");
        assert_eq!(image_id("dir.v2/file"), "dir.v2/file");
    }
}
