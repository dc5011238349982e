//! The raw gaze importer on hand-written fixtures.
//!
//! Fixation parameters: I-VT at 30 °/s, min 0.1 s; the image spans 40° × 30°,
//! so the 2° minimum box side is 0.05 wide and 1/15 high.

use deper_core::import::gaze::{import_gaze, CoordSpace, Eye, GazeImportOptions, SampleFormat, TimeUnit};
use deper_core::import::ImportReport;
use deper_core::trajectory::GazeParams;
use deper_core::{Error, Split, TrajectorySource, Triplet};
use std::io::Write;
use std::path::Path;

mod common;
use common::*;

fn run(samples: &Path, opts: &GazeImportOptions) -> (deper_core::Result<ImportReport>, Vec<Triplet>, Vec<u64>) {
    collect(|sink, progress| import_gaze(samples, Some(&fixture("gaze_captions.jsonl")), opts, sink, progress))
}

const HALF_H: f64 = 1.0 / 30.0;

fn opts() -> GazeImportOptions {
    GazeImportOptions::new(GazeParams { image_width_deg: 40.0, image_height_deg: 30.0, ..GazeParams::default() })
}

fn ms_csv() -> GazeImportOptions {
    GazeImportOptions { time_unit: TimeUnit::Milliseconds, split: Split::Test, ..opts() }
}

#[test]
fn csv_trials_ids_captions_and_counters() -> TestResult {
    let path = fixture("gaze_samples.csv");
    let (report, triplets, ticks) = run(&path, &ms_csv());
    let report = report?;
    let ids: Vec<&str> = triplets.iter().map(|t| t.id.as_str()).collect();
    // The quoted image name keeps its comma.
    assert_eq!(ids, ["img, 1.jpg/s1", "img2.jpg/s1", "img1.jpg/s2"]);
    let texts: Vec<&str> = triplets.iter().map(|t| t.description.text.as_str()).collect();
    assert_eq!(texts, ["Ein Café – 猫が二匹 🐈", "Off the edge.", ""]);
    assert!(triplets.iter().all(|t| t.split == Split::Test && t.trajectory.source == TrajectorySource::Gaze));

    assert_eq!(report.records, 23, "sample rows");
    assert_eq!(report.triplets, 3);
    assert_eq!(report.skipped, 0);
    assert_eq!(report.dropped_invalid_samples, 3);
    assert_eq!(report.dropped_nonfinite_points, 2, "an empty x/y and a NaN");
    assert_eq!(report.dropped_backwards_time, 1);
    assert_eq!(report.clamped_points, 5);
    assert_eq!(report.empty_trajectories, 1);
    assert_eq!(report.missing_captions, 1);
    assert_eq!(ticks.last().copied(), Some(std::fs::metadata(&path)?.len()));
    Ok(())
}

#[test]
fn csv_fixations_become_steps() -> TestResult {
    let (report, triplets, _) = run(&fixture("gaze_samples.csv"), &ms_csv());
    report?;
    let steps = &triplets.first().ok_or("no triplet")?.trajectory.steps;
    assert_eq!(steps.len(), 2);
    // Times rebased to the first sample (10 000 ms → 0 s); the blink, the
    // track loss and the NaN row are dropped without breaking the fixation.
    assert_close(steps[0].start.ok_or("no start")?, 0.0);
    assert_close(steps[0].duration, 0.3);
    assert_box(&steps[0].bbox, [0.275, 0.4 - HALF_H, 0.325, 0.4 + HALF_H]);
    assert_close(steps[1].start.ok_or("no start")?, 0.35);
    assert_close(steps[1].duration, 0.25);
    assert_box(&steps[1].bbox, [0.675, 0.6 - HALF_H, 0.725, 0.6 + HALF_H]);

    // (1.1, -0.05) clamped to the corner (1, 0); the box is shifted inside the image.
    let steps = &triplets.get(1).ok_or("no second triplet")?.trajectory.steps;
    let [step] = steps.as_slice() else { return Err("expected one step".into()) };
    assert_close(step.duration, 0.2);
    assert_box(&step.bbox, [0.95, 0.0, 1.0, 2.0 * HALF_H]);

    // All samples invalid: kept with an empty trajectory.
    assert!(triplets.get(2).ok_or("no third triplet")?.trajectory.is_empty());
    Ok(())
}

#[test]
fn jsonl_binocular_pairs_are_averaged() -> TestResult {
    let (report, triplets, _) = run(&fixture("gaze_binocular.jsonl"), &opts());
    let report = report?;
    assert_eq!(report.records, 12);
    assert_eq!(report.dropped_invalid_samples, 1);
    assert_eq!(report.dropped_nonfinite_points, 1, "the right eye's null x at 0.25 s");
    assert_eq!(report.missing_captions, 0);
    let [t] = triplets.as_slice() else { return Err("expected one triplet".into()) };
    assert_eq!(t.id, "img3.jpg/7");
    assert_eq!(t.subject, "7");
    assert_eq!(t.description.text, "Both eyes.");
    let [step] = t.trajectory.steps.as_slice() else { return Err("expected one step".into()) };
    // Left 0.28, right 0.32 → 0.30.
    assert_box(&step.bbox, [0.275, 0.5 - HALF_H, 0.325, 0.5 + HALF_H]);
    assert_close(step.duration, 0.2);
    Ok(())
}

#[test]
fn jsonl_one_eye_selected() -> TestResult {
    let options = GazeImportOptions { eye: Some(Eye::Left), format: SampleFormat::JsonLines, ..opts() };
    let (report, triplets, _) = run(&fixture("gaze_binocular.jsonl"), &options);
    let report = report?;
    assert_eq!(report.dropped_invalid_samples, 1);
    assert_eq!(report.dropped_nonfinite_points, 0, "right-eye samples are not read");
    let step = triplets.first().and_then(|t| t.trajectory.steps.first()).ok_or("no step")?;
    assert_box(&step.bbox, [0.255, 0.5 - HALF_H, 0.305, 0.5 + HALF_H]);
    Ok(())
}

#[test]
fn pixel_coordinates_and_header_case() -> TestResult {
    let options = GazeImportOptions {
        coords: CoordSpace::Pixels { width: 640.0, height: 480.0 },
        time_unit: TimeUnit::Milliseconds,
        ..opts()
    };
    // Header "Subject,Image,Timestamp,X,Y"; the last line has no newline.
    let (report, triplets, _) = run(&fixture("gaze_pixels.csv"), &options);
    let report = report?;
    assert_eq!(report.records, 5);
    assert_eq!(report.missing_captions, 1);
    let [t] = triplets.as_slice() else { return Err("expected one triplet".into()) };
    assert_eq!(t.id, "photo.jpg/p1");
    assert_eq!(t.description.text, "");
    let [step] = t.trajectory.steps.as_slice() else { return Err("expected one step".into()) };
    // (192, 192) px of 640 × 480 → (0.3, 0.4).
    assert_box(&step.bbox, [0.275, 0.4 - HALF_H, 0.325, 0.4 + HALF_H]);
    assert_close(step.duration, 0.2);

    let bad = GazeImportOptions { coords: CoordSpace::Pixels { width: 0.0, height: 480.0 }, ..opts() };
    let (result, _, _) = run(&fixture("gaze_pixels.csv"), &bad);
    assert!(matches!(result, Err(Error::Invalid(_))), "{result:?}");
    Ok(())
}

#[test]
fn unsorted_samples_are_an_error_naming_the_line() -> TestResult {
    let path = fixture("gaze_unsorted.csv");
    let with_skip = GazeImportOptions { skip_bad: true, ..opts() };
    let (result, triplets, _) = run(&path, &with_skip);
    let Err(Error::Record(err)) = result else { return Err(format!("expected a record error, got {result:?}").into()) };
    assert_eq!(err.file, path);
    assert_eq!(err.line, 4);
    assert_eq!(
        err.message,
        "samples for subject s1 image a.jpg are not contiguous; sort the file by subject, image, timestamp"
    );
    assert_eq!(triplets.len(), 2);
    Ok(())
}

#[test]
fn missing_header_is_an_error() -> TestResult {
    let path = fixture("gaze_no_header.csv");
    let (result, _, _) = run(&path, &GazeImportOptions { skip_bad: true, ..opts() });
    let Err(Error::Record(err)) = result else { return Err(format!("expected a record error, got {result:?}").into()) };
    assert_eq!(err.line, 1);
    assert_eq!(err.field.as_deref(), Some("subject"));
    assert!(err.message.contains("header"), "{}", err.message);
    Ok(())
}

#[test]
fn bad_values_name_line_and_column() -> TestResult {
    let path = fixture("gaze_bad_values.csv");
    let (result, _, _) = run(&path, &opts());
    let Err(Error::Record(err)) = result else { return Err(format!("expected a record error, got {result:?}").into()) };
    assert_eq!((err.line, err.field.as_deref()), (3, Some("x")));
    assert!(err.message.contains("not a number: \"abc\""), "{}", err.message);

    let (report, triplets, _) = run(&path, &GazeImportOptions { skip_bad: true, ..opts() });
    let report = report?;
    assert_eq!(report.records, 6);
    assert_eq!(report.skipped, 3);
    let ex = &report.skip_examples;
    assert!(ex[0].contains(":3: field `x`"), "{}", ex[0]);
    assert!(ex[1].contains(":4: field `eye`"), "{}", ex[1]);
    assert!(ex[2].contains(":5: field `y`: the row has 4 fields"), "{}", ex[2]);
    let [t] = triplets.as_slice() else { return Err("expected one triplet".into()) };
    // Good rows at 0, 200 and 250 ms (read as seconds here): 0.25 s still.
    let [step] = t.trajectory.steps.as_slice() else { return Err("expected one step".into()) };
    assert_close(step.duration, 250.0);
    Ok(())
}

#[test]
fn bad_caption_lines() -> TestResult {
    let mut caps = tempfile::NamedTempFile::new()?;
    caps.write_all(b"{\"subject\": \"p1\", \"image\": \"photo.jpg\", \"caption\": \"A photo.\"}\n{\"subject\": \"p1\", \"image\": \"x\"}\n")?;
    let options = GazeImportOptions { time_unit: TimeUnit::Milliseconds, ..opts() };
    let result = import_gaze(&fixture("gaze_pixels.csv"), Some(caps.path()), &options, &mut |_| Ok(()), &mut |_| {});
    let Err(Error::Record(err)) = result else { return Err(format!("expected a record error, got {result:?}").into()) };
    assert_eq!(err.file, caps.path());
    assert_eq!(err.line, 2);
    assert!(err.message.contains("missing field `caption`"), "{}", err.message);

    let options = GazeImportOptions { skip_bad: true, ..options };
    let (report, triplets, _) =
        collect(|sink, progress| import_gaze(&fixture("gaze_pixels.csv"), Some(caps.path()), &options, sink, progress));
    let report = report?;
    let texts: Vec<String> = triplets.into_iter().map(|t| t.description.text).collect();
    assert_eq!(report.skipped, 1);
    assert_eq!(report.missing_captions, 0);
    assert_eq!(texts, ["A photo."]);
    Ok(())
}

#[test]
fn nan_and_inf_from_csv_are_dropped() -> TestResult {
    let mut samples = tempfile::NamedTempFile::with_suffix(".csv")?;
    samples.write_all(b"subject,image,timestamp,x,y\r\nq,i.jpg,0,0.5,0.5\r\nq,i.jpg,0.05,inf,0.5\r\nq,i.jpg,nan,0.5,0.5\r\nq,i.jpg,0.1,0.5,-Infinity\r\nq,i.jpg,0.15,0.5,0.5\r\n")?;
    let (report, triplets, _) = run(samples.path(), &opts());
    let report = report?;
    assert_eq!(report.records, 5);
    assert_eq!(report.dropped_nonfinite_points, 3);
    let step = triplets.first().and_then(|t| t.trajectory.steps.first()).ok_or("no step")?;
    assert_close(step.duration, 0.15);
    Ok(())
}

#[test]
fn no_captions_file() -> TestResult {
    let options = GazeImportOptions { time_unit: TimeUnit::Milliseconds, ..opts() };
    let (report, triplets, _) =
        collect(|sink, progress| import_gaze(&fixture("gaze_samples.csv"), None, &options, sink, progress));
    let report = report?;
    let texts: Vec<String> = triplets.into_iter().map(|t| t.description.text).collect();
    assert_eq!(report.triplets, 3);
    assert_eq!(report.missing_captions, 3);
    assert!(texts.iter().all(String::is_empty));
    Ok(())
}
