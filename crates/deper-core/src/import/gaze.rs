//! Importer of raw eye-tracker samples plus captions.
//!
//! # Samples file
//!
//! Either CSV or JSON Lines ([`SampleFormat`]; by default chosen from the
//! extension — `.csv` → CSV, `.jsonl`/`.ndjson`/`.json` → JSON Lines — and
//! otherwise from the first non-blank line: `{` → JSON Lines, else CSV).
//!
//! * **CSV**: the first non-blank line is the header (a UTF-8 BOM is ignored);
//!   columns are found by name, case-insensitively, in any order: `subject`,
//!   `image`, `timestamp`, `x`, `y` (required), `validity` and `eye`
//!   (optional); other columns are ignored. Fields are separated by commas and
//!   may be double-quoted (`""` is a quote inside a quoted field; a quoted
//!   field cannot span lines). Surrounding spaces of unquoted fields are
//!   trimmed.
//! * **JSON Lines**: one sample object per line with the same keys:
//!   `{"subject": "s1" | 1, "image": "img1.jpg", "timestamp": 12.5, "x": 0.4,
//!   "y": 0.6, "validity": 1, "eye": "left"}` (`validity`, `eye` optional;
//!   unknown keys ignored).
//!
//! Values: `timestamp` in [`TimeUnit`]s; `x`, `y` in [`CoordSpace`] units.
//! An empty (CSV) or `null` (JSON) timestamp, `x` or `y` — what trackers write
//! on track loss — reads as NaN, so the sample is dropped and counted in
//! `dropped_nonfinite_points`; so are `NaN`/`inf` written out in CSV. Any other
//! non-number is a record error naming the column. `validity` is `1`/`0`/
//! `true`/`false` (empty or absent: valid); invalid samples are dropped and
//! counted in `dropped_invalid_samples`. `eye` is `left`/`right` (or `l`/`r`,
//! any case; empty: unknown).
//!
//! Eyes: with [`GazeImportOptions::eye`] = `Some(eye)`, samples labelled with
//! the other eye are dropped (not counted: that is a selection, not a repair)
//! and unlabelled samples are kept. With `None`, two consecutive samples of a
//! trial with the same timestamp, labelled with different eyes (a binocular
//! pair), are merged into one at their mean position (the mean of the finite
//! coordinates); all other samples, e.g. every sample of a file without an
//! `eye` column, are kept as they are.
//!
//! # Trials
//!
//! A trial is the samples of one (`subject`, `image`) pair. The file must be
//! sorted by subject, image, timestamp: trials are streamed one at a time, and
//! a trial key that reappears after another trial is an error naming the line
//! (always fatal, even with `skip_bad`: the rest of the file cannot be used as
//! is). Only the finished keys are remembered, not their samples. Within a
//! trial, a sample going back in time is dropped and counted; times are
//! rebased so the first kept sample of the trial is at 0 s. Each trial's kept
//! samples (cleaned with [`super::clean_trace`]) go to
//! [`fixations_to_steps`]; a trial whose samples were all dropped is kept
//! with an empty trajectory (counted in `empty_trajectories`).
//!
//! [`ImportReport::records`] counts sample rows (blank lines and the header
//! excluded); [`ImportReport::triplets`] counts trials.
//!
//! # Captions file
//!
//! Optional (`captions_path` = `None`: every description is empty). JSON Lines,
//! `{"subject": "s1" | 1, "image": "img1.jpg", "caption": "…"}`, loaded into
//! memory first (one caption per trial, so small). A later line
//! for the same pair replaces an earlier one. Bad caption lines are record
//! errors naming the captions file (skipped and counted with `skip_bad`; they
//! are not counted in `records`). A trial without a caption gets an empty
//! description text and is counted in `missing_captions` (so without a captions
//! file every trial is counted there).
//!
//! Triplet id: `"{image}/{subject}"`; image id: `image` as written; source: gaze.

use super::{
    clean_trace, line_str, open, parse_json_record, Id, ImportReport, LineReader, Progress, ProgressTicker, Sink,
};
use crate::trajectory::{fixations_to_steps, GazeParams};
use crate::{Description, RawSample, RecordError, Split, Trajectory, TrajectorySource, Triplet};
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

/// Layout of the samples file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleFormat {
    /// From the extension, else from the first non-blank line.
    #[default]
    Auto,
    Csv,
    JsonLines,
}

/// Unit of the `timestamp` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    #[default]
    Seconds,
    Milliseconds,
}

impl TimeUnit {
    fn to_seconds(self, t: f64) -> f64 {
        match self {
            TimeUnit::Seconds => t,
            TimeUnit::Milliseconds => t / 1000.0,
        }
    }
}

/// Space of the `x`, `y` columns.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoordSpace {
    /// Already normalised to the image: (0, 0) top-left, (1, 1) bottom-right.
    #[default]
    Normalized,
    /// Pixels of an image `width` × `height` pixels (origin top-left).
    Pixels { width: f64, height: f64 },
}

/// An eye of a binocular tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Eye {
    Left,
    Right,
}

impl Eye {
    /// `left`/`right`/`l`/`r`, any case; `Ok(None)` for an empty value.
    fn parse(s: &str) -> Result<Option<Eye>, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "left" | "l" => Ok(Some(Eye::Left)),
            "right" | "r" => Ok(Some(Eye::Right)),
            other => Err(format!("unknown eye {other:?} (expected left or right)")),
        }
    }
}

/// Options of [`import_gaze`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GazeImportOptions {
    pub format: SampleFormat,
    pub time_unit: TimeUnit,
    pub coords: CoordSpace,
    /// Keep only this eye's samples; `None`: merge binocular pairs (see the module docs).
    pub eye: Option<Eye>,
    /// Fixation detection and step rule.
    pub gaze: GazeParams,
    /// Skip (and count) bad records instead of stopping at the first one.
    pub skip_bad: bool,
    /// Split given to every triplet.
    pub split: Split,
}

impl Default for GazeImportOptions {
    /// Auto format, seconds, normalised coordinates, binocular pairs merged,
    /// default fixation parameters, stop at the first bad record, split train.
    fn default() -> Self {
        Self::new(GazeParams::default())
    }
}

impl GazeImportOptions {
    /// The defaults (see [`Default`]) with fixation parameters `gaze`.
    pub fn new(gaze: GazeParams) -> Self {
        Self {
            format: SampleFormat::Auto,
            time_unit: TimeUnit::Seconds,
            coords: CoordSpace::Normalized,
            eye: None,
            gaze,
            skip_bad: false,
            split: Split::Train,
        }
    }
}

/// One parsed sample row, before unit conversion.
#[derive(Debug)]
struct Sample<'a> {
    subject: Cow<'a, str>,
    image: Cow<'a, str>,
    t: f64,
    x: f64,
    y: f64,
    valid: bool,
    eye: Option<Eye>,
}

/// A sample as a JSON Lines row.
#[derive(Debug, Deserialize)]
struct JsonSample {
    subject: Id,
    image: Id,
    timestamp: Option<f64>,
    x: Option<f64>,
    y: Option<f64>,
    #[serde(default)]
    validity: Option<Validity>,
    #[serde(default)]
    eye: Option<String>,
}

/// `1`/`0`, `true`/`false`, or those as strings.
#[derive(Debug, Clone, Copy)]
struct Validity(bool);

impl Validity {
    fn parse(s: &str) -> Result<Option<bool>, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "1" | "true" => Ok(Some(true)),
            "0" | "false" => Ok(Some(false)),
            other => Err(format!("unknown validity {other:?} (expected 1, 0, true or false)")),
        }
    }
}

impl<'de> Deserialize<'de> for Validity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Validity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("1, 0, true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Validity, E> {
                Ok(Validity(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Validity, E> {
                match v {
                    0 => Ok(Validity(false)),
                    1 => Ok(Validity(true)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Validity, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Validity, E> {
                match Validity::parse(v) {
                    Ok(Some(b)) => Ok(Validity(b)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
struct CaptionRecord {
    subject: Id,
    image: Id,
    caption: String,
}

/// Column indices of a CSV header.
#[derive(Debug)]
struct Columns {
    subject: usize,
    image: usize,
    timestamp: usize,
    x: usize,
    y: usize,
    validity: Option<usize>,
    eye: Option<usize>,
}

impl Columns {
    fn from_header(fields: &[Cow<'_, str>], file: &Path, line: usize) -> Result<Self, RecordError> {
        let find = |name: &str| fields.iter().position(|f| f.trim().eq_ignore_ascii_case(name));
        let required = ["subject", "image", "timestamp", "x", "y"];
        let missing: Vec<&str> = required.iter().copied().filter(|n| find(n).is_none()).collect();
        let get = |name: &str| {
            find(name).ok_or_else(|| {
                RecordError::new(
                    file,
                    line,
                    Some(name.to_string()),
                    format!(
                        "the CSV header lacks the column(s) {} (a header row naming subject, image, timestamp, x, y is required)",
                        missing.join(", ")
                    ),
                )
            })
        };
        Ok(Self {
            subject: get("subject")?,
            image: get("image")?,
            timestamp: get("timestamp")?,
            x: get("x")?,
            y: get("y")?,
            validity: find("validity"),
            eye: find("eye"),
        })
    }
}

/// Splits one CSV line into fields: comma-separated, double quotes with `""` escapes,
/// unquoted fields trimmed. An unterminated quote is an error.
fn split_csv(line: &str) -> Result<Vec<Cow<'_, str>>, String> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t']);
        if let Some(mut quoted) = trimmed.strip_prefix('"') {
            let mut value = String::new();
            loop {
                let Some(i) = quoted.find('"') else {
                    return Err("unterminated quoted field".to_string());
                };
                value.push_str(quoted.get(..i).unwrap_or_default());
                let next = quoted.get(i + 1..).unwrap_or_default();
                match next.strip_prefix('"') {
                    Some(more) => {
                        value.push('"');
                        quoted = more;
                    }
                    None => {
                        quoted = next;
                        break;
                    }
                }
            }
            fields.push(Cow::Owned(value));
            let after = quoted.trim_start_matches([' ', '\t']);
            match after.strip_prefix(',') {
                Some(r) => rest = r,
                None if after.is_empty() => return Ok(fields),
                None => return Err("unexpected text after a quoted field".to_string()),
            }
        } else {
            match rest.split_once(',') {
                Some((field, r)) => {
                    fields.push(Cow::Borrowed(field.trim()));
                    rest = r;
                }
                None => {
                    fields.push(Cow::Borrowed(rest.trim()));
                    return Ok(fields);
                }
            }
        }
    }
}

/// A CSV number; empty → NaN (track loss).
fn csv_number(s: &str, column: &str, file: &Path, line: usize) -> Result<f64, RecordError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(f64::NAN);
    }
    s.parse::<f64>().map_err(|_| RecordError::new(file, line, Some(column.to_string()), format!("not a number: {s:?}")))
}

fn csv_sample<'a>(
    fields: &'a [Cow<'a, str>],
    cols: &Columns,
    file: &Path,
    line: usize,
) -> Result<Sample<'a>, RecordError> {
    let get = |i: usize, name: &str| -> Result<&'a str, RecordError> {
        fields.get(i).map(|c| c.as_ref()).ok_or_else(|| {
            RecordError::new(
                file,
                line,
                Some(name.to_string()),
                format!("the row has {} fields, too few for column `{name}`", fields.len()),
            )
        })
    };
    let opt = |i: Option<usize>| i.and_then(|i| fields.get(i)).map(|c| c.as_ref()).unwrap_or("");
    let valid = Validity::parse(opt(cols.validity))
        .map_err(|m| RecordError::new(file, line, Some("validity".into()), m))?
        .unwrap_or(true);
    let eye = Eye::parse(opt(cols.eye)).map_err(|m| RecordError::new(file, line, Some("eye".into()), m))?;
    Ok(Sample {
        subject: Cow::Borrowed(get(cols.subject, "subject")?),
        image: Cow::Borrowed(get(cols.image, "image")?),
        t: csv_number(get(cols.timestamp, "timestamp")?, "timestamp", file, line)?,
        x: csv_number(get(cols.x, "x")?, "x", file, line)?,
        y: csv_number(get(cols.y, "y")?, "y", file, line)?,
        valid,
        eye,
    })
}

fn json_sample(text: &str, file: &Path, line: usize) -> Result<Sample<'static>, RecordError> {
    let s: JsonSample = parse_json_record(text, file, line)?;
    let eye = match &s.eye {
        Some(e) => Eye::parse(e).map_err(|m| RecordError::new(file, line, Some("eye".into()), m))?,
        None => None,
    };
    Ok(Sample {
        subject: Cow::Owned(s.subject.0),
        image: Cow::Owned(s.image.0),
        t: s.timestamp.unwrap_or(f64::NAN),
        x: s.x.unwrap_or(f64::NAN),
        y: s.y.unwrap_or(f64::NAN),
        valid: s.validity.is_none_or(|v| v.0),
        eye,
    })
}

/// The samples of the trial being read.
#[derive(Debug)]
struct Trial {
    subject: String,
    image: String,
    samples: Vec<RawSample>,
    last_eye: Option<Eye>,
    last_merged: bool,
}

impl Trial {
    fn new(subject: String, image: String) -> Self {
        Self { subject, image, samples: Vec::new(), last_eye: None, last_merged: false }
    }

    /// Adds a sample, merging it with the previous one when they form a binocular pair.
    fn push(&mut self, s: RawSample, eye: Option<Eye>, merge_eyes: bool) {
        if merge_eyes && !self.last_merged {
            if let (Some(e), Some(prev_eye), Some(prev)) = (eye, self.last_eye, self.samples.last_mut()) {
                if e != prev_eye && prev.t == s.t {
                    prev.x = finite_mean(prev.x, s.x);
                    prev.y = finite_mean(prev.y, s.y);
                    self.last_merged = true;
                    return;
                }
            }
        }
        self.samples.push(s);
        self.last_eye = eye;
        self.last_merged = false;
    }
}

/// Mean of the finite values among `a`, `b`; NaN when neither is finite.
fn finite_mean(a: f64, b: f64) -> f64 {
    match (a.is_finite(), b.is_finite()) {
        (true, true) => (a + b) / 2.0,
        (true, false) => a,
        (false, true) => b,
        (false, false) => f64::NAN,
    }
}

fn load_captions(
    path: &Path,
    skip_bad: bool,
    report: &mut ImportReport,
) -> crate::Result<HashMap<(String, String), String>> {
    let mut lines = LineReader::new(open(path)?);
    let mut captions = HashMap::new();
    while let Some((line_no, bytes)) = lines.next_record(path)? {
        match line_str(bytes, path, line_no).and_then(|t| parse_json_record::<CaptionRecord>(t, path, line_no)) {
            Ok(c) => {
                captions.insert((c.subject.0, c.image.0), c.caption);
            }
            Err(err) => report.bad_record(err, skip_bad)?,
        }
    }
    Ok(captions)
}

fn format_of(path: &Path, format: SampleFormat) -> Option<SampleFormat> {
    if format != SampleFormat::Auto {
        return Some(format);
    }
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => Some(SampleFormat::Csv),
        Some("jsonl" | "ndjson" | "json") => Some(SampleFormat::JsonLines),
        _ => None,
    }
}

/// Streams raw gaze samples into `sink`, one triplet per (subject, image) trial,
/// with the captions of `captions_path` (if any). See the [module docs](self) for the formats.
pub fn import_gaze(
    samples_path: &Path,
    captions_path: Option<&Path>,
    opts: &GazeImportOptions,
    sink: &mut Sink,
    progress: &mut Progress,
) -> crate::Result<ImportReport> {
    check_pixel_size(opts.coords)?;
    let mut report = ImportReport::default();
    let captions = match captions_path {
        Some(p) => load_captions(p, opts.skip_bad, &mut report)?,
        None => HashMap::new(),
    };
    let mut trials = Trials { current: None, finished: HashSet::new(), captions, opts };
    let mut parser = SampleParser { path: samples_path, format: format_of(samples_path, opts.format), columns: None };
    let mut lines = LineReader::new(open(samples_path)?);
    let mut ticker = ProgressTicker::default();

    while let Some((line_no, bytes)) = lines.next_record(samples_path)? {
        let mut fields = Vec::new();
        let Some(parsed) = parser.parse_line(bytes, line_no, &mut fields)? else {
            continue; // the CSV header
        };
        report.records += 1;
        match parsed {
            Ok(sample) => trials.add(sample, samples_path, line_no, sink, &mut report)?,
            Err(err) => report.bad_record(err, opts.skip_bad)?,
        }
        ticker.record(lines.bytes, progress);
    }
    trials.finish_current(sink, &mut report)?;
    ticker.report(lines.bytes, progress);
    Ok(report)
}

/// Refuses pixel coordinates without a positive, finite image size to divide by.
fn check_pixel_size(coords: CoordSpace) -> crate::Result<()> {
    if let CoordSpace::Pixels { width, height } = coords {
        if !(width.is_finite() && width > 0.0 && height.is_finite() && height > 0.0) {
            return Err(crate::Error::invalid(format!(
                "pixel coordinates need a positive image size, got {width} × {height}"
            )));
        }
    }
    Ok(())
}

/// The format of a samples file whose format was not given or told by its extension: JSON Lines
/// when its first record opens an object, else CSV.
fn sniff_format(first_record: &str) -> SampleFormat {
    if first_record.trim_start().starts_with("{") {
        SampleFormat::JsonLines
    } else {
        SampleFormat::Csv
    }
}

/// Turns the lines of a samples file into samples: finds the format, reads the CSV header.
#[derive(Debug)]
struct SampleParser<'p> {
    path: &'p Path,
    /// `None` until the first record when the format is sniffed.
    format: Option<SampleFormat>,
    /// The CSV header's columns, once read.
    columns: Option<Columns>,
}

impl SampleParser<'_> {
    /// One line: `None` for the CSV header (read into `columns`), else the sample or why the record
    /// is bad. An unreadable header (or a non-UTF-8 line where one is expected) ends the import.
    /// CSV samples borrow their text from `fields`.
    fn parse_line<'f, 'b: 'f>(
        &mut self,
        bytes: &'b [u8],
        line_no: usize,
        fields: &'f mut Vec<Cow<'b, str>>,
    ) -> crate::Result<Option<Result<Sample<'f>, RecordError>>> {
        let path = self.path;
        let text = match line_str(bytes, path, line_no) {
            Ok(t) => t,
            Err(err) if self.columns.is_none() && self.format != Some(SampleFormat::JsonLines) => {
                return Err(err.into())
            }
            Err(err) => return Ok(Some(Err(err))),
        };
        let format = *self.format.get_or_insert_with(|| sniff_format(text));
        if format == SampleFormat::JsonLines {
            return Ok(Some(json_sample(text, path, line_no)));
        }
        let Some(cols) = &self.columns else {
            let header = text.strip_prefix('\u{feff}').unwrap_or(text);
            let names = split_csv(header).map_err(|m| RecordError::new(path, line_no, None, m))?;
            self.columns = Some(Columns::from_header(&names, path, line_no)?);
            return Ok(None);
        };
        Ok(Some(match split_csv(text) {
            Ok(f) => {
                *fields = f;
                csv_sample(fields, cols, path, line_no)
            }
            Err(m) => Err(RecordError::new(path, line_no, None, m)),
        }))
    }
}

/// Groups consecutive samples into trials and hands each finished trial to the sink.
#[derive(Debug)]
struct Trials<'o> {
    /// The trial being read.
    current: Option<Trial>,
    /// `(subject, image)` of every trial already written, to catch a file that is not sorted.
    finished: HashSet<(String, String)>,
    /// Captions by `(subject, image)`, taken as their trials finish.
    captions: HashMap<(String, String), String>,
    opts: &'o GazeImportOptions,
}

impl Trials<'_> {
    /// Adds a sample: a new (subject, image) finishes the current trial first; invalid samples are
    /// counted, samples of the other eye skipped, the rest converted to normalized coordinates and
    /// seconds.
    fn add(
        &mut self,
        sample: Sample<'_>,
        path: &Path,
        line_no: usize,
        sink: &mut Sink,
        report: &mut ImportReport,
    ) -> crate::Result<()> {
        let opts = self.opts;
        let same_trial = self.current.as_ref().is_some_and(|t| t.subject == sample.subject && t.image == sample.image);
        if !same_trial {
            self.finish_current(sink, report)?;
            let key = (sample.subject.into_owned(), sample.image.into_owned());
            if self.finished.contains(&key) {
                return Err(RecordError::new(
                    path,
                    line_no,
                    None,
                    format!(
                        "samples for subject {} image {} are not contiguous; sort the file by subject, image, timestamp",
                        key.0, key.1
                    ),
                )
                .into());
            }
            self.current = Some(Trial::new(key.0, key.1));
        }
        if !sample.valid {
            report.dropped_invalid_samples += 1;
        } else if !matches!((opts.eye, sample.eye), (Some(want), Some(got)) if want != got) {
            let (x, y) = match opts.coords {
                CoordSpace::Normalized => (sample.x, sample.y),
                CoordSpace::Pixels { width, height } => (sample.x / width, sample.y / height),
            };
            let raw = RawSample { x, y, t: opts.time_unit.to_seconds(sample.t) };
            if let Some(t) = self.current.as_mut() {
                t.push(raw, sample.eye, opts.eye.is_none());
            }
        }
        Ok(())
    }

    /// Writes the current trial, if any.
    fn finish_current(&mut self, sink: &mut Sink, report: &mut ImportReport) -> crate::Result<()> {
        match self.current.take() {
            Some(done) => finish_trial(done, &mut self.finished, &mut self.captions, self.opts, sink, report),
            None => Ok(()),
        }
    }
}

fn finish_trial(
    trial: Trial,
    finished: &mut HashSet<(String, String)>,
    captions: &mut HashMap<(String, String), String>,
    opts: &GazeImportOptions,
    sink: &mut Sink,
    report: &mut ImportReport,
) -> crate::Result<()> {
    let Trial { subject, image, samples, .. } = trial;
    let mut kept = clean_trace(samples, report);
    if let Some(t0) = kept.first().map(|s| s.t) {
        for s in &mut kept {
            s.t -= t0;
        }
    }
    let steps = if kept.is_empty() {
        Vec::new()
    } else {
        let (steps, build) = fixations_to_steps(&kept, &[], &opts.gaze);
        report.dropped_over_step_limit += build.dropped_over_limit;
        steps
    };
    if steps.is_empty() {
        report.empty_trajectories += 1;
    }
    let key = (subject, image);
    let text = captions.remove(&key).unwrap_or_else(|| {
        report.missing_captions += 1;
        String::new()
    });
    let (subject, image) = key.clone();
    finished.insert(key);
    sink(Triplet {
        id: format!("{image}/{subject}"),
        image,
        subject,
        description: Description { text, utterances: Vec::new() },
        trajectory: Trajectory { source: TrajectorySource::Gaze, steps },
        split: opts.split,
    })?;
    report.triplets += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Vec<String> {
        split_csv(line).unwrap_or_else(|e| vec![format!("ERR {e}").into()]).into_iter().map(Cow::into_owned).collect()
    }

    #[test]
    fn csv_fields() {
        assert_eq!(split("a,b , c"), ["a", "b", "c"]);
        assert_eq!(split("\"a,b\",c"), ["a,b", "c"]);
        assert_eq!(split("\"say \"\"hi\"\"\",x"), ["say \"hi\"", "x"]);
        assert_eq!(split("\"\"\"\",\"x\"\"y\"\"z\",w"), ["\"", "x\"y\"z", "w"]);
        assert_eq!(split("a,,"), ["a", "", ""]);
        assert_eq!(split(""), [""]);
        assert_eq!(split("\"open,x"), ["ERR unterminated quoted field"]);
        assert_eq!(split("\"a\"b,c"), ["ERR unexpected text after a quoted field"]);
    }

    #[test]
    fn eyes_and_validity() {
        assert_eq!(Eye::parse("L"), Ok(Some(Eye::Left)));
        assert_eq!(Eye::parse(" right "), Ok(Some(Eye::Right)));
        assert_eq!(Eye::parse(""), Ok(None));
        assert!(Eye::parse("both").is_err());
        assert_eq!(Validity::parse("TRUE"), Ok(Some(true)));
        assert_eq!(Validity::parse("0"), Ok(Some(false)));
        assert!(Validity::parse("2").is_err());
    }
}
