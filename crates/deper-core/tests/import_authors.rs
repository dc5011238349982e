//! The authors' JSON importer on hand-written fixtures.

use deper_core::import::authors::{import_authors_json, AuthorsOptions};
use deper_core::import::ImportReport;
use deper_core::{Error, Split, TrajectorySource, Triplet};
use std::io::Write;
use std::path::Path;

mod common;
use common::*;

fn run(path: &Path, opts: &AuthorsOptions) -> (deper_core::Result<ImportReport>, Vec<Triplet>, Vec<u64>) {
    collect(|sink, progress| import_authors_json(path, opts, sink, progress))
}

fn skip_bad() -> AuthorsOptions {
    AuthorsOptions { skip_bad: true, ..AuthorsOptions::default() }
}

#[test]
fn basic_records_ids_splits_and_counters() -> TestResult {
    let path = fixture("authors_basic.json");
    let (report, triplets, ticks) = run(&path, &AuthorsOptions::default());
    let report = report?;
    let ids: Vec<&str> = triplets.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["COCO_val2014_000000391895.jpg/3", "img2.png/4", "long.jpg/7"]);
    let images: Vec<&str> = triplets.iter().map(|t| t.image.as_str()).collect();
    assert_eq!(images, ["COCO_val2014_000000391895", "img2", "long"]);
    let subjects: Vec<&str> = triplets.iter().map(|t| t.subject.as_str()).collect();
    assert_eq!(subjects, ["3", "4", "7"]);
    let splits: Vec<Split> = triplets.iter().map(|t| t.split).collect();
    assert_eq!(splits, [Split::Train, Split::Val, Split::Test]);
    assert!(triplets.iter().all(|t| t.trajectory.source == TrajectorySource::Gaze));

    assert_eq!(report.records, 3);
    assert_eq!(report.triplets, 3);
    assert_eq!(report.skipped, 0);
    assert_eq!(report.empty_trajectories, 1);
    assert_eq!(report.clamped_points, 2);
    assert_eq!(report.repaired_negative_durations, 1);
    assert_eq!(report.dropped_over_step_limit, 2);
    let names: Vec<(&str, &str)> = report.subject_names.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(names, [("3", "S3"), ("4", "S4"), ("7", "S7")]);
    assert_eq!(ticks.last().copied(), Some(std::fs::metadata(&path)?.len()));
    Ok(())
}

#[test]
fn boxes_corners_clamping_and_durations() -> TestResult {
    let (report, triplets, _) = run(&fixture("authors_basic.json"), &AuthorsOptions::default());
    report?;
    let t = triplets.first().ok_or("no triplet")?;
    assert_eq!(t.description.text, "Ein Café – 猫が二匹 🐈");
    assert!(t.description.utterances.is_empty());
    let steps = &t.trajectory.steps;
    assert_eq!(steps.len(), 2);
    // Corners given as (x2, y2, x1, y1).
    assert_box(&steps[0].bbox, [0.25, 0.33, 0.37, 0.47]);
    assert_close(steps[0].duration, 0.35);
    assert_eq!(steps[0].start, None);
    assert!(steps[0].words.is_empty());
    // [0.55, 0.48, 1.3, -0.1]: corners reordered, then both corner points clamped.
    assert_box(&steps[1].bbox, [0.55, 0.0, 1.0, 0.48]);
    // T = -0.2 → 0.
    assert_eq!(steps[1].duration, 0.0);
    Ok(())
}

#[test]
fn empty_record_is_kept() -> TestResult {
    let (report, triplets, _) = run(&fixture("authors_basic.json"), &AuthorsOptions::default());
    report?;
    let t = triplets.get(1).ok_or("no second triplet")?;
    assert_eq!(t.description.text, "No fixations.");
    assert!(t.trajectory.is_empty());
    Ok(())
}

#[test]
fn step_limit_keeps_the_longest_in_order() -> TestResult {
    let (report, triplets, _) = run(&fixture("authors_basic.json"), &AuthorsOptions::default());
    report?;
    let steps = &triplets.get(2).ok_or("no third triplet")?.trajectory.steps;
    // 32 boxes with T = 0.10, 0.11, …, 0.41: the two shortest (first two) go.
    assert_eq!(steps.len(), 30);
    assert_close(steps[0].duration, 0.12);
    assert_box(&steps[0].bbox, [0.02, 0.1, 0.22, 0.3]);
    assert_close(steps[29].duration, 0.41);
    assert!(steps.windows(2).all(|w| w[0].duration < w[1].duration));

    let (report, triplets, _) =
        run(&fixture("authors_basic.json"), &AuthorsOptions { max_steps: 5, ..AuthorsOptions::default() });
    let report = report?;
    assert_eq!(report.dropped_over_step_limit, 27);
    let steps = &triplets.get(2).ok_or("no third triplet")?.trajectory.steps;
    let durations: Vec<f64> = steps.iter().map(|s| s.duration).collect();
    assert_eq!(durations, [0.37, 0.38, 0.39, 0.4, 0.41]);
    Ok(())
}

#[test]
fn first_bad_record_stops_the_import() -> TestResult {
    let path = fixture("authors_bad.json");
    let (result, triplets, _) = run(&path, &AuthorsOptions::default());
    let Err(Error::Record(err)) = result else { return Err(format!("expected a record error, got {result:?}").into()) };
    assert_eq!(err.file, path);
    // The record starts on line 3; `T` has 1 entry, `bboxes` 2.
    assert_eq!(err.line, 3);
    assert_eq!(err.field.as_deref(), Some("T"));
    assert!(err.message.contains("`T` has 1 entries but `bboxes` has 2"), "{}", err.message);
    assert_eq!(triplets.len(), 1);
    Ok(())
}

#[test]
fn bad_records_are_skipped_with_lines_and_fields() -> TestResult {
    let (report, triplets, _) = run(&fixture("authors_bad.json"), &skip_bad());
    let report = report?;
    assert_eq!(report.records, 7);
    assert_eq!(report.triplets, 2);
    assert_eq!(report.skipped, 5);
    let ids: Vec<&str> = triplets.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a.jpg/1", "g.jpg/2"]);
    assert_eq!(triplets.get(1).map(|t| t.split), Some(Split::Val), "\"dev\" is the validation split");
    let ex = &report.skip_examples;
    assert_eq!(ex.len(), 5);
    assert!(ex[0].contains("authors_bad.json:3: field `T`"), "{}", ex[0]);
    assert!(ex[1].contains("authors_bad.json:6: field `split`: invalid value: unknown split \"holdout\""), "{}", ex[1]);
    // Wrong type: the line of the value inside a multi-line record.
    assert!(ex[2].contains("authors_bad.json:9: field `bboxes[0][2]`: invalid type: string \"0.2\""), "{}", ex[2]);
    assert!(ex[3].contains("authors_bad.json:11: field `X`"), "{}", ex[3]);
    assert!(ex[4].contains("authors_bad.json:12: field `bboxes[0]`: invalid length 3"), "{}", ex[4]);
    assert_eq!(report.skip_reasons.get("invalid length"), Some(&2));
    assert_eq!(report.skip_reasons.get("invalid value"), Some(&1));
    assert_eq!(report.skip_reasons.get("invalid type"), Some(&1));
    // Names only from kept records.
    assert_eq!(report.subject_names.len(), 2);
    Ok(())
}

#[test]
fn truncated_array_is_fatal_even_with_skip_bad() -> TestResult {
    let path = fixture("authors_truncated.json");
    let (result, triplets, _) = run(&path, &skip_bad());
    let Err(Error::Record(err)) = result else { return Err(format!("expected a record error, got {result:?}").into()) };
    assert_eq!(err.file, path);
    assert_eq!(err.line, 4);
    assert!(err.message.contains("EOF while parsing"), "{}", err.message);
    assert_eq!(triplets.len(), 1, "the complete first record was imported");
    Ok(())
}

#[test]
fn top_level_object_is_rejected() -> TestResult {
    let (result, triplets, _) = run(&fixture("authors_object.json"), &skip_bad());
    let Err(Error::Record(err)) = result else { return Err(format!("expected a record error, got {result:?}").into()) };
    assert_eq!(err.line, 1);
    assert!(err.message.contains("expected a JSON array of records"), "{}", err.message);
    assert!(triplets.is_empty());
    Ok(())
}

#[test]
fn empty_array_trailing_garbage_and_crlf() -> TestResult {
    let mut empty = tempfile::NamedTempFile::new()?;
    empty.write_all(b"  [ ]\n")?;
    let (report, triplets, _) = run(empty.path(), &AuthorsOptions::default());
    assert_eq!(report?.records, 0);
    assert!(triplets.is_empty());

    let mut garbage = tempfile::NamedTempFile::new()?;
    garbage.write_all(b"[]\n]\n")?;
    let (result, _, _) = run(garbage.path(), &AuthorsOptions::default());
    assert!(matches!(&result, Err(Error::Record(e)) if e.line == 2 && e.message.contains("trailing")), "{result:?}");

    let mut crlf = tempfile::NamedTempFile::new()?;
    crlf.write_all(b"[\r\n{\"name\": \"a.jpg\", \"caption\": \"c\", \"subject\": 1, \"T\": [0.2],\r\n \"bboxes\": [[0.1, 0.1, 0.2, \"x\"]], \"split\": \"train\"}\r\n]\r\n")?;
    let (result, _, _) = run(crlf.path(), &AuthorsOptions::default());
    assert!(
        matches!(&result, Err(Error::Record(e)) if e.line == 3 && e.field.as_deref() == Some("bboxes[0][3]")),
        "{result:?}"
    );
    Ok(())
}
