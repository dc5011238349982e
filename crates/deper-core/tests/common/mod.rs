//! Helpers shared by the importer tests.
#![allow(dead_code)] // each test file uses a different subset

use deper_core::import::{ImportReport, Progress, Sink};
use deper_core::{BBox, Triplet};
use std::path::{Path, PathBuf};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Runs an importer, collecting the triplets it emits and its progress calls.
pub fn collect(
    import: impl FnOnce(&mut Sink, &mut Progress) -> deper_core::Result<ImportReport>,
) -> (deper_core::Result<ImportReport>, Vec<Triplet>, Vec<u64>) {
    let mut triplets = Vec::new();
    let mut ticks = Vec::new();
    let result = import(
        &mut |t| {
            triplets.push(t);
            Ok(())
        },
        &mut |b| ticks.push(b),
    );
    (result, triplets, ticks)
}

#[track_caller]
pub fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
}

#[track_caller]
pub fn assert_box(b: &BBox, want: [f64; 4]) {
    for (g, w) in b.to_array().into_iter().zip(want) {
        assert!((g - w).abs() < 1e-9, "got {b:?}, want {want:?}");
    }
}
