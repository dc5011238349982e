//! Localized Narratives importer (COCO-LN, Flickr30k-LN, Open Images-LN, ADE20k-LN).
//!
//! Input: JSON Lines, one narrative per line:
//!
//! ```json
//! {"dataset_id": "mscoco_val2017", "image_id": "391895", "annotator_id": 3,
//!  "caption": "In this image …",
//!  "timed_caption": [{"utterance": "In", "start_time": 0.0, "end_time": 0.4}, …],
//!  "traces": [[{"x": 0.51, "y": 0.32, "t": 0.02}, …], …],
//!  "voice_recording": "coco_val/coco_val_391895_3.ogg"}
//! ```
//!
//! * `image_id` and `annotator_id` may be strings or integers; both are kept as
//!   their decimal string. The subject id is the annotator id.
//! * `timed_caption` and `traces` may be missing, `null` or empty: the narrative
//!   is kept with an empty trajectory (counted in `empty_trajectories`).
//! * `voice_recording` and any other unknown field are ignored.
//! * Blank lines are skipped (not counted as records); a last line without a
//!   newline is read; a line that is not valid UTF-8 or not valid JSON (e.g. a
//!   truncated last line) is a record error naming that line.
//!
//! Each trace segment is cleaned with [`super::clean_trace`] (segment by
//! segment: the backwards-time rule compares points of the same segment), then
//! all segments go to [`mouse_trace_to_steps`] with the timed caption.
//!
//! Triplet id: `"{dataset_id}/{image_id}/{annotator_id}"`; image id: `image_id`.
//! Ids are not de-duplicated here (that would need memory growing with the file):
//! in Localized Narratives one annotator describes an image once, so ids are unique.
//!
//! Records are read in chunks of [`CHUNK`] lines; each chunk is parsed on all
//! cores and handed to the sink in file order, so results, errors and counts are
//! exactly those of a sequential pass (JSON parsing is most of an import's time).

use super::{
    clean_trace, line_str, open, parse_json_record, Id, ImportReport, LineReader, Progress, ProgressTicker, Sink,
};
use crate::trajectory::{mouse_trace_to_steps, DwellParams};
use crate::{Description, RawSample, Split, Trajectory, TrajectorySource, Triplet, Utterance};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Options of [`import_ln`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LnOptions {
    /// Skip (and count) bad records instead of stopping at the first one.
    pub skip_bad: bool,
    /// Split given to every triplet (LN files are per split).
    pub split: Split,
    /// Dwell rule turning mouse traces into steps.
    pub dwell: DwellParams,
}

impl Default for LnOptions {
    fn default() -> Self {
        Self { skip_bad: false, split: Split::Train, dwell: DwellParams::default() }
    }
}

#[derive(Debug, Deserialize)]
struct LnPoint {
    x: f64,
    y: f64,
    t: f64,
}

#[derive(Debug, Deserialize)]
struct LnRecord {
    dataset_id: String,
    image_id: Id,
    annotator_id: Id,
    caption: String,
    #[serde(default)]
    timed_caption: Option<Vec<Utterance>>,
    #[serde(default)]
    traces: Option<Vec<Vec<LnPoint>>>,
}

/// Lines parsed together; bounds memory (a few MB of text) while giving each core enough work.
const CHUNK: usize = 1024;

/// Streams a Localized Narratives JSONL file into `sink`, one triplet per narrative.
pub fn import_ln(
    path: &Path,
    opts: &LnOptions,
    sink: &mut Sink,
    progress: &mut Progress,
) -> crate::Result<ImportReport> {
    let mut lines = LineReader::new(open(path)?);
    let mut report = ImportReport::default();
    let mut ticker = ProgressTicker::default();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    // (line number, bytes read so far after it, the line)
    let mut chunk: Vec<(usize, u64, Vec<u8>)> = Vec::with_capacity(CHUNK);
    loop {
        chunk.clear();
        let mut at_end = false;
        while chunk.len() < CHUNK {
            match lines.next_record(path)? {
                Some((line_no, bytes)) => {
                    let owned = bytes.to_vec();
                    chunk.push((line_no, lines.bytes, owned));
                }
                None => {
                    at_end = true;
                    break;
                }
            }
        }
        for (result, &(_, bytes, _)) in parse_chunk(&chunk, path, opts, workers).into_iter().zip(&chunk) {
            report.records += 1;
            match result {
                Ok((triplet, repairs)) => {
                    report.absorb_repairs(&repairs);
                    sink(triplet)?;
                    report.triplets += 1;
                }
                Err(err) => report.bad_record(err, opts.skip_bad)?,
            }
            ticker.record(bytes, progress);
        }
        if at_end {
            break;
        }
    }
    ticker.report(lines.bytes, progress);
    Ok(report)
}

type Parsed = Result<(Triplet, ImportReport), crate::RecordError>;

fn parse_line(line_no: usize, bytes: &[u8], path: &Path, opts: &LnOptions) -> Parsed {
    let text = line_str(bytes, path, line_no)?;
    let rec = parse_json_record::<LnRecord>(text, path, line_no)?;
    let mut repairs = ImportReport::default();
    let triplet = build(rec, opts, &mut repairs);
    Ok((triplet, repairs))
}

/// Parses the lines of a chunk on up to `workers` threads, results in line order.
fn parse_chunk(chunk: &[(usize, u64, Vec<u8>)], path: &Path, opts: &LnOptions, workers: usize) -> Vec<Parsed> {
    let parse_all = |part: &[(usize, u64, Vec<u8>)]| -> Vec<Parsed> {
        part.iter().map(|(line_no, _, bytes)| parse_line(*line_no, bytes, path, opts)).collect()
    };
    if workers <= 1 || chunk.len() < 64 {
        return parse_all(chunk);
    }
    let per_worker = chunk.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let parts: Vec<_> = chunk
            .chunks(per_worker)
            .map(|part| {
                // Where threads cannot be started (wasm32), the part is parsed here instead.
                let handle = std::thread::Builder::new().spawn_scoped(scope, move || parse_all(part)).ok();
                (part, handle)
            })
            .collect();
        let mut out = Vec::with_capacity(chunk.len());
        for (part, handle) in parts {
            match handle.map(|h| h.join()) {
                Some(Ok(results)) => out.extend(results),
                // A worker panic is a bug; parsing the part again here surfaces it on this thread.
                Some(Err(_)) | None => out.extend(parse_all(part)),
            }
        }
        out
    })
}

fn build(rec: LnRecord, opts: &LnOptions, report: &mut ImportReport) -> Triplet {
    let utterances = rec.timed_caption.unwrap_or_default();
    let segments: Vec<Vec<RawSample>> = rec
        .traces
        .unwrap_or_default()
        .into_iter()
        .map(|seg| clean_trace(seg.into_iter().map(|p| RawSample { x: p.x, y: p.y, t: p.t }), report))
        .filter(|seg| !seg.is_empty())
        .collect();
    let steps = if segments.is_empty() {
        Vec::new()
    } else {
        let (steps, build) = mouse_trace_to_steps(&segments, &utterances, &opts.dwell);
        report.dropped_over_step_limit += build.dropped_over_limit;
        steps
    };
    if steps.is_empty() {
        report.empty_trajectories += 1;
    }
    let (dataset, image, annotator) = (rec.dataset_id, rec.image_id.0, rec.annotator_id.0);
    Triplet {
        id: format!("{dataset}/{image}/{annotator}"),
        image,
        subject: annotator,
        description: Description { text: rec.caption, utterances },
        trajectory: Trajectory { source: TrajectorySource::Mouse, steps },
        split: opts.split,
    }
}
