//! The synthetic world's raw traces, written in the Localized Narratives
//! schema, import back into exactly the triplets the generator built: the
//! generator and the LN importer share one trajectory builder.

use deper_core::dataset::Dataset;
use deper_core::import::ln::{import_ln, LnOptions};
use deper_core::Triplet;
use deper_synth::SynthConfig;
use std::collections::BTreeMap;

#[test]
fn synthetic_narratives_import_back_into_the_same_triplets() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let config = SynthConfig { subjects: 4, images: 12, coverage: 0.75, seed: 5, ..SynthConfig::default() };
    deper_synth::generate(&config, &out, &mut |_, _| {}).unwrap();
    let ds = Dataset::open(&out).unwrap();
    let generated: BTreeMap<String, Triplet> =
        ds.load_triplets().unwrap().into_iter().map(|t| (format!("{}/{}", t.image, t.subject), t)).collect();
    assert!(generated.len() >= 20, "expected most of 48 trials, got {}", generated.len());

    let mut imported = Vec::new();
    let report = import_ln(
        &out.join("narratives.jsonl"),
        &LnOptions::default(),
        &mut |t| {
            imported.push(t);
            Ok(())
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(report.records, generated.len());
    assert_eq!(report.triplets, generated.len());
    assert_eq!(report.skipped, 0);

    for t in &imported {
        let key = format!("{}/{}", t.image, t.subject);
        let g = generated.get(&key).unwrap_or_else(|| panic!("imported {key} was not generated"));
        assert_eq!(t.description.text, g.description.text, "{key}");
        assert_eq!(t.description.utterances, g.description.utterances, "{key}");
        assert_eq!(t.trajectory.steps.len(), g.trajectory.steps.len(), "{key}");
        for (a, b) in t.trajectory.steps.iter().zip(&g.trajectory.steps) {
            for (x, y) in a.bbox.to_array().iter().zip(b.bbox.to_array()) {
                assert!((x - y).abs() < 1e-9, "{key}: {:?} vs {:?}", a.bbox, b.bbox);
            }
            assert!((a.duration - b.duration).abs() < 1e-9, "{key}");
            assert_eq!(a.words, b.words, "{key}");
        }
    }
}
