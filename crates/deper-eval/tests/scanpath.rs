//! MultiMatch against the `multimatch-gaze` package (`fixtures/multimatch.json`, made by
//! `fixtures/make_goldens.py`), plus the other scanpath metrics on hand-checked cases.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use deper_eval::scanpath::{multimatch, Fixation, Grouping};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    a: Vec<[f64; 3]>,
    b: Vec<[f64; 3]>,
    screen: [f64; 2],
    grouping: Option<Grouping>,
    vector: f64,
    direction: f64,
    length: f64,
    position: f64,
    duration: f64,
}

fn fixations(v: &[[f64; 3]]) -> Vec<Fixation> {
    v.iter().map(|f| Fixation::new(f[0], f[1], f[2])).collect()
}

#[test]
fn multimatch_matches_multimatch_gaze() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/multimatch.json");
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() >= 10);
    for (k, c) in cases.iter().enumerate() {
        let got = multimatch(&fixations(&c.a), &fixations(&c.b), (c.screen[0], c.screen[1]), c.grouping.as_ref())
            .unwrap()
            .unwrap();
        let pairs = [
            ("vector", got.vector, c.vector),
            ("direction", got.direction, c.direction),
            ("length", got.length, c.length),
            ("position", got.position, c.position),
            ("duration", got.duration, c.duration),
        ];
        for (name, g, w) in pairs {
            // Measured agreement is 1e-16; the package's own numbers are float64 too.
            assert!((g - w).abs() < 1e-12, "case {k} {name}: {g} vs {w}");
        }
    }
}

#[test]
fn multimatch_needs_three_fixations_and_a_screen() {
    let a = fixations(&[[0.1, 0.1, 0.2], [0.5, 0.5, 0.3]]);
    let b = fixations(&[[0.1, 0.1, 0.2], [0.5, 0.5, 0.3], [0.9, 0.2, 0.1]]);
    assert_eq!(multimatch(&a, &b, (1.0, 1.0), None).unwrap(), None);
    assert!(multimatch(&b, &b, (0.0, 1.0), None).is_err());
    let bad = fixations(&[[f64::NAN, 0.1, 0.2], [0.5, 0.5, 0.3], [0.9, 0.2, 0.1]]);
    let e = multimatch(&bad, &b, (1.0, 1.0), None).unwrap_err().to_string();
    assert!(e.contains("fixation 0"), "{e}");
    // A path compared with itself is identical in all five dimensions.
    let m = multimatch(&b, &b, (1.0, 1.0), None).unwrap().unwrap();
    assert_eq!([m.vector, m.direction, m.length, m.position, m.duration], [1.0; 5]);
}
