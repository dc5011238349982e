//! No importer panics on damaged input: every fixture is mutated at random
//! (seeded, so reproducible) and imported with and without `skip_bad`. The
//! result may be an error; it must not be a panic, and every triplet handed
//! to the sink must keep its steps inside the image with non-negative durations.

use deper_core::import::authors::{import_authors_json, AuthorsOptions};
use deper_core::import::gaze::{import_gaze, GazeImportOptions};
use deper_core::import::ln::{import_ln, LnOptions};
use deper_core::import::Sink;
use deper_core::{rng, Triplet};
use rand::Rng;
use std::io::Write;
use std::path::Path;

mod common;
use common::*;

const ROUNDS: usize = 150;

/// Bytes that matter to the parsers, plus random ones.
fn mutate(bytes: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    const SPECIAL: &[u8] = b"\n\r\",:[]{}-.0123456789eE \\\xff\xc3tnfl";
    let mut out = bytes.to_vec();
    for _ in 0..rng.gen_range(1..6) {
        if out.is_empty() {
            break;
        }
        let i = rng.gen_range(0..out.len());
        match rng.gen_range(0..5) {
            0 => out.truncate(i),
            1 => out[i] = SPECIAL[rng.gen_range(0..SPECIAL.len())],
            2 => out[i] = rng.gen(),
            3 => {
                let j = rng.gen_range(i..out.len().min(i + 40) + 1).min(out.len());
                out.drain(i..j);
            }
            _ => {
                let j = rng.gen_range(i..out.len().min(i + 40) + 1).min(out.len());
                let chunk: Vec<u8> = out[i..j].to_vec();
                out.splice(i..i, chunk);
            }
        }
    }
    out
}

#[track_caller]
fn check(t: &Triplet) {
    for s in &t.trajectory.steps {
        let b = s.bbox.to_array();
        assert!(b.iter().all(|v| (0.0..=1.0).contains(v)), "{} box {b:?}", t.id);
        assert!(s.duration >= 0.0, "{} duration {}", t.id, s.duration);
    }
    assert!(t.trajectory.steps.len() <= deper_core::MAX_STEPS);
}

fn fuzz(names: &[&str], suffix: &str, import: impl Fn(&Path, bool, &mut Sink)) -> TestResult {
    let mut rng = rng::seeded(7, suffix);
    let mut kept = 0usize;
    for name in names {
        let original = std::fs::read(fixture(name))?;
        for _ in 0..ROUNDS {
            let mut file = tempfile::NamedTempFile::with_suffix(suffix)?;
            file.write_all(&mutate(&original, &mut rng))?;
            file.flush()?;
            for skip_bad in [false, true] {
                import(file.path(), skip_bad, &mut |t| {
                    check(&t);
                    kept += 1;
                    Ok(())
                });
            }
        }
    }
    assert!(kept >= ROUNDS / 2, "the damaged files still give triplets ({kept})");
    Ok(())
}

#[test]
fn ln_never_panics() -> TestResult {
    fuzz(&["ln_basic.jsonl", "ln_wrong_type.jsonl", "ln_truncated.jsonl"], ".jsonl", |path, skip_bad, f| {
        let opts = LnOptions { skip_bad, ..LnOptions::default() };
        let _ = import_ln(path, &opts, f, &mut |_| {});
    })
}

#[test]
fn authors_never_panics() -> TestResult {
    fuzz(&["authors_basic.json", "authors_bad.json"], ".json", |path, skip_bad, f| {
        let opts = AuthorsOptions { skip_bad, ..AuthorsOptions::default() };
        let _ = import_authors_json(path, &opts, f, &mut |_| {});
    })
}

#[test]
fn gaze_never_panics() -> TestResult {
    let captions = fixture("gaze_captions.jsonl");
    fuzz(&["gaze_samples.csv", "gaze_bad_values.csv"], ".csv", |path, skip_bad, f| {
        let opts = GazeImportOptions { skip_bad, ..GazeImportOptions::default() };
        let _ = import_gaze(path, Some(&captions), &opts, f, &mut |_| {});
        // The same bytes read as a captions file.
        let _ = import_gaze(&fixture("gaze_pixels.csv"), Some(path), &opts, f, &mut |_| {});
    })?;
    fuzz(&["gaze_binocular.jsonl"], ".jsonl", |path, skip_bad, f| {
        let opts = GazeImportOptions { skip_bad, ..GazeImportOptions::default() };
        let _ = import_gaze(path, Some(&captions), &opts, f, &mut |_| {});
    })
}
