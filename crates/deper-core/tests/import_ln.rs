//! Localized Narratives importer on hand-written fixtures.
//!
//! Expected steps follow the documented dwell rule with the default
//! parameters (max speed 0.5/s, max dispersion 0.15, min duration 0.2 s,
//! min box side 0.05).

use deper_core::import::ln::{import_ln, LnOptions};
use deper_core::import::ImportReport;
use deper_core::{Error, Split, TrajectorySource, Triplet};
use std::io::Write;
use std::path::Path;

mod common;
use common::*;

fn run(path: &Path, opts: &LnOptions) -> (deper_core::Result<ImportReport>, Vec<Triplet>, Vec<u64>) {
    collect(|sink, progress| import_ln(path, opts, sink, progress))
}

fn skip_bad() -> LnOptions {
    LnOptions { skip_bad: true, ..LnOptions::default() }
}

#[test]
fn basic_file_values_and_counters() -> TestResult {
    let path = fixture("ln_basic.jsonl");
    let opts = LnOptions { split: Split::Val, ..LnOptions::default() };
    let (report, triplets, ticks) = run(&path, &opts);
    let report = report?;

    let ids: Vec<&str> = triplets.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "mscoco_val2017/391895/3",
            "mscoco_val2017/42/a7",
            "mscoco_val2017/100/5",
            "mscoco_val2017/101/5",
            "mscoco_val2017/102/5",
            "flickr30k_test/1000092795/9",
        ]
    );
    // Blank and whitespace-only lines are not records.
    assert_eq!(report.records, 6);
    assert_eq!(report.triplets, 6);
    assert_eq!(report.skipped, 0);
    assert_eq!(report.empty_trajectories, 3);
    assert_eq!(report.clamped_points, 4);
    assert_eq!(report.dropped_backwards_time, 1);
    assert_eq!(report.dropped_nonfinite_points, 0);
    assert_eq!(report.dropped_over_step_limit, 0);
    assert!(report.subject_names.is_empty());
    for t in &triplets {
        assert_eq!(t.split, Split::Val);
        assert_eq!(t.trajectory.source, TrajectorySource::Mouse);
    }
    let file_len = std::fs::metadata(&path)?.len();
    assert_eq!(ticks.last().copied(), Some(file_len), "last progress call reports the whole file");
    Ok(())
}

#[test]
fn unicode_caption_and_words_per_dwell() -> TestResult {
    let (report, triplets, _) = run(&fixture("ln_basic.jsonl"), &LnOptions::default());
    report?;
    let t = triplets.first().ok_or("no triplet")?;
    assert_eq!(t.image, "391895");
    assert_eq!(t.subject, "3");
    assert_eq!(t.description.text, "Ein Café – 猫が二匹 🐈");
    assert_eq!(t.description.utterances.len(), 2);
    assert_eq!(t.description.utterances.get(1).map(|u| u.utterance.as_str()), Some("猫が二匹 🐈"));
    let steps = &t.trajectory.steps;
    assert_eq!(steps.len(), 2);
    // Still at (0.3, 0.4) for 0.5 s: a zero-size box grown to 0.05 per side.
    assert_box(&steps[0].bbox, [0.275, 0.375, 0.325, 0.425]);
    assert_close(steps[0].duration, 0.5);
    assert_eq!(steps[0].start, Some(0.0));
    assert_eq!(steps[0].words, ["Ein", "Café"]);
    // Jump to (0.8, 0.8) (speed 6.4/s), still for 0.3 s.
    assert_box(&steps[1].bbox, [0.775, 0.775, 0.825, 0.825]);
    assert_close(steps[1].duration, 0.3);
    assert_close(steps[1].start.ok_or("no start")?, 0.6);
    assert_eq!(steps[1].words, ["猫が二匹", "🐈"]);
    Ok(())
}

#[test]
fn several_segments_clamped_and_backwards_time() -> TestResult {
    let (report, triplets, _) = run(&fixture("ln_basic.jsonl"), &LnOptions::default());
    report?;
    let t = triplets.get(1).ok_or("no second triplet")?;
    // Numeric image id, string annotator id.
    assert_eq!(t.image, "42");
    assert_eq!(t.subject, "a7");
    let steps = &t.trajectory.steps;
    assert_eq!(steps.len(), 2, "one dwell per segment");
    // Segment 1 at (1.2, -0.1) clamped to (1, 0); the 0.05 box is shifted back inside.
    assert_box(&steps[0].bbox, [0.95, 0.0, 1.0, 0.05]);
    assert_close(steps[0].duration, 0.3);
    assert_close(steps[0].start.ok_or("no start")?, 1.0);
    // Segment 2: the sample at t = 1.9 (after 2.2) is dropped; dwell 2.0–2.4.
    assert_box(&steps[1].bbox, [0.475, 0.475, 0.525, 0.525]);
    assert_close(steps[1].duration, 0.4);
    assert_close(steps[1].start.ok_or("no start")?, 2.0);
    assert!(steps.iter().all(|s| s.words.is_empty()));
    Ok(())
}

#[test]
fn missing_and_empty_traces_are_kept() -> TestResult {
    let (report, triplets, _) = run(&fixture("ln_basic.jsonl"), &LnOptions::default());
    report?;
    for (i, caption) in [(2, "No trace at all."), (3, "Empty trace list."), (4, "One empty segment.")] {
        let t = triplets.get(i).ok_or("missing triplet")?;
        assert_eq!(t.description.text, caption);
        assert!(t.trajectory.is_empty(), "{}", t.id);
        assert!(t.description.utterances.is_empty());
    }
    Ok(())
}

#[test]
fn final_line_without_newline() -> TestResult {
    let path = fixture("ln_basic.jsonl");
    assert!(!std::fs::read(&path)?.ends_with(b"\n"), "fixture must end without a newline");
    let (report, triplets, _) = run(&path, &LnOptions::default());
    report?;
    let t = triplets.last().ok_or("no triplet")?;
    assert_eq!(t.description.text, "Last line, no newline.");
    assert_eq!(t.split, Split::Train);
    let [step] = t.trajectory.steps.as_slice() else { return Err("expected one step".into()) };
    // Samples x 0.10–0.12, y 0.90–0.91: grown to 0.05 around (0.11, 0.905).
    assert_box(&step.bbox, [0.085, 0.88, 0.135, 0.93]);
    assert_close(step.duration, 0.3);
    assert_eq!(step.words, ["Last"]);
    Ok(())
}

#[test]
fn truncated_last_line_is_an_error_naming_it() -> TestResult {
    let path = fixture("ln_truncated.jsonl");
    let (result, triplets, _) = run(&path, &LnOptions::default());
    let Err(Error::Record(err)) = result else { return Err(format!("expected a record error, got {result:?}").into()) };
    assert_eq!(err.file, path);
    assert_eq!(err.line, 4);
    assert!(err.message.contains("EOF while parsing"), "{}", err.message);
    let shown = err.to_string();
    assert!(shown.contains("ln_truncated.jsonl:4"), "{shown}");
    // Records before the bad line went to the sink.
    assert_eq!(triplets.len(), 2);
    Ok(())
}

#[test]
fn truncated_last_line_is_skipped_with_skip_bad() -> TestResult {
    let (report, triplets, _) = run(&fixture("ln_truncated.jsonl"), &skip_bad());
    let report = report?;
    assert_eq!(report.records, 3);
    assert_eq!(report.triplets, 2);
    assert_eq!(report.skipped, 1);
    assert_eq!(report.skip_reasons.get("EOF while parsing"), Some(&1));
    assert_eq!(report.skip_examples.len(), 1);
    assert!(report.skip_examples[0].contains("ln_truncated.jsonl:4"), "{}", report.skip_examples[0]);
    let ids: Vec<&str> = triplets.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["d/1/1", "d/2/1"]);
    assert_eq!(report.empty_trajectories, 1);
    Ok(())
}

#[test]
fn wrong_type_names_line_and_field() -> TestResult {
    let path = fixture("ln_wrong_type.jsonl");
    let (result, triplets, _) = run(&path, &LnOptions::default());
    let Err(Error::Record(err)) = result else { return Err(format!("expected a record error, got {result:?}").into()) };
    assert_eq!(err.file, path);
    assert_eq!(err.line, 2);
    assert_eq!(err.field.as_deref(), Some("traces[0][1].x"));
    assert!(err.message.starts_with("invalid type: string \"0.5\", expected f64"), "{}", err.message);
    assert!(err.to_string().contains("ln_wrong_type.jsonl:2: field `traces[0][1].x`"), "{err}");
    assert_eq!(triplets.len(), 1);
    Ok(())
}

#[test]
fn wrong_types_and_missing_fields_skipped() -> TestResult {
    let (report, triplets, _) = run(&fixture("ln_wrong_type.jsonl"), &skip_bad());
    let report = report?;
    assert_eq!(report.records, 5);
    assert_eq!(report.triplets, 2);
    assert_eq!(report.skipped, 3);
    // Line 2: x is a string; line 4: float annotator id; line 5: no caption.
    assert_eq!(report.skip_reasons.get("invalid type"), Some(&2));
    assert_eq!(report.skip_reasons.get("missing field"), Some(&1));
    assert!(report.skip_examples[1].contains(":4: field `annotator_id`"), "{}", report.skip_examples[1]);
    assert!(report.skip_examples[2].contains(":5: missing field `caption`"), "{}", report.skip_examples[2]);
    let ids: Vec<&str> = triplets.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["d/1/1", "d/3/1"]);
    // A 0.5 s still pointer: one step each.
    assert!(triplets.iter().all(|t| t.trajectory.steps.len() == 1));
    Ok(())
}

#[test]
fn invalid_utf8_and_crlf() -> TestResult {
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(b"{\"dataset_id\": \"d\", \"image_id\": \"1\", \"annotator_id\": 1, \"caption\": \"ok\"}\r\n")?;
    file.write_all(
        b"{\"dataset_id\": \"d\", \"image_id\": \"2\", \"annotator_id\": 1, \"caption\": \"bad \xff\xfe\"}\r\n",
    )?;
    file.write_all(b"\r\n")?;
    file.write_all(
        b"{\"dataset_id\": \"d\", \"image_id\": \"3\", \"annotator_id\": 1, \"caption\": \"caf\xc3\xa9\"}\r\n",
    )?;
    file.flush()?;

    let (result, _, _) = run(file.path(), &LnOptions::default());
    let Err(Error::Record(err)) = result else { return Err(format!("expected a record error, got {result:?}").into()) };
    assert_eq!(err.line, 2);
    assert!(err.message.contains("invalid UTF-8"), "{}", err.message);

    let (report, triplets, _) = run(file.path(), &skip_bad());
    let report = report?;
    assert_eq!((report.records, report.triplets, report.skipped), (3, 2, 1));
    let captions: Vec<&str> = triplets.iter().map(|t| t.description.text.as_str()).collect();
    assert_eq!(captions, ["ok", "café"]);
    Ok(())
}

#[test]
fn missing_file_is_an_io_error() {
    let path = fixture("does_not_exist.jsonl");
    let (result, _, _) = run(&path, &LnOptions::default());
    assert!(matches!(&result, Err(Error::Io { path: p, .. }) if *p == path), "{result:?}");
}

#[test]
fn sink_errors_stop_the_import() {
    let result =
        import_ln(&fixture("ln_basic.jsonl"), &skip_bad(), &mut |_| Err(Error::invalid("disk full")), &mut |_| {});
    assert!(matches!(&result, Err(Error::Invalid(m)) if m == "disk full"), "{result:?}");
}

/// Files of thousands of lines are parsed in parallel chunks; results, errors and
/// counts must be exactly those of a sequential pass.
#[test]
fn large_files_keep_order_errors_and_counts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("many.jsonl");
    let mut f = std::fs::File::create(&path)?;
    for i in 1..=3000 {
        if i == 2000 {
            writeln!(f, r#"{{"dataset_id": "d", "image_id": "{i}", "annotator_id": "oops": 1}}"#)?;
        } else if i % 500 == 0 {
            writeln!(f)?; // blank lines are not records
        } else {
            // x = 1.5 is clamped: two clamped points per record.
            writeln!(
                f,
                r#"{{"dataset_id": "d", "image_id": "{i}", "annotator_id": {}, "caption": "c{i}", "traces": [[{{"x": 1.5, "y": 0.5, "t": 0.0}}, {{"x": 1.5, "y": 0.5, "t": 0.5}}]]}}"#,
                i % 7
            )?;
        }
    }
    drop(f);
    let records = 3000 - 5; // five blank lines (500, 1000, 1500, 2500, 3000)

    let (result, triplets, _) = run(&path, &LnOptions::default());
    let err = result.expect_err("line 2000 is malformed").to_string();
    assert!(err.contains("many.jsonl:2000"), "{err}");
    // Everything before the bad line reached the sink, in order, and nothing after it.
    assert_eq!(triplets.len(), 1999 - 3);
    assert_eq!(triplets.first().map(|t| t.image.as_str()), Some("1"));
    assert_eq!(triplets.last().map(|t| t.image.as_str()), Some("1999"));

    let (result, triplets, _) = run(&path, &skip_bad());
    let report = result?;
    assert_eq!(report.records, records);
    assert_eq!(report.skipped, 1);
    assert_eq!(report.triplets, records - 1);
    assert_eq!(report.clamped_points, 2 * (records - 1));
    let images: Vec<u32> = triplets.iter().map(|t| t.image.parse().unwrap_or(0)).collect();
    assert!(images.windows(2).all(|w| w[0] < w[1]), "triplets arrive in file order");
    assert_eq!(triplets.len(), records - 1);
    Ok(())
}
