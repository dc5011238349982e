//! `stage2::caption_nll`, the teacher-forced score of `deper eval`'s `caption_nll` column: padding in
//! a batch does not change it, a persona equal to the persona token's own embedding is the zero-shot
//! prompt, another persona changes it, and a subject without a persona is an error naming it.

#![allow(clippy::unwrap_used)]

mod common;

use burn::backend::{Autodiff, NdArray};
use deper_pipeline::demo::captioner::{self, CaptionerConfig};
use deper_train::stage2;
use std::collections::BTreeMap;

type B = NdArray<f32>;

#[test]
fn caption_nll_is_batch_invariant_and_reads_the_persona() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::world(dir.path());
    let vlm = dir.path().join("captioner");
    let config = CaptionerConfig {
        hidden_size: 32,
        intermediate_size: 64,
        vision_embed_dim: 16,
        vision_heads: 2,
        image_side: 56,
        epochs: 1,
        batch_size: 8,
        extra_scenes_per_epoch: 8,
        seed: 0,
        ..Default::default()
    };
    let device = Default::default();
    captioner::pretrain::<Autodiff<B>>(&data, &vlm, &config, &device, &mut |_| {}).unwrap();
    let sd = stage2::prepare_stage2::<B>(&data, &vlm, None, &device).unwrap();
    let model = &sd.frozen.vlm.model;

    // More than one batch of 32, captions of different lengths: padded rows.
    let set: Vec<usize> = (0..sd.prep.samples.len().min(40)).collect();
    assert!(set.len() > 32, "the world has only {} triplets", set.len());
    let lengths: std::collections::BTreeSet<usize> = set.iter().map(|&i| sd.targets[i].len()).collect();
    assert!(lengths.len() > 1, "every caption has the same length: {lengths:?}");

    let (sum, tokens) = stage2::caption_nll(model, &sd, &set, None, &device).unwrap();
    assert_eq!(tokens, set.iter().map(|&i| sd.targets[i].len()).sum::<usize>());
    assert!(sum.is_finite() && sum > 0.0, "{sum}");
    let one_by_one: f64 = set.iter().map(|&i| stage2::caption_nll(model, &sd, &[i], None, &device).unwrap().0).sum();
    assert!((sum - one_by_one).abs() < 1e-4 * sum, "batched {sum} vs one by one {one_by_one}");

    // The persona token's own embedding as every subject's persona: the zero-shot prompt.
    let hidden = sd.frozen.vlm.config.text.hidden_size;
    let own: Vec<f32> = model
        .model
        .embed_tokens
        .weight
        .val()
        .slice([sd.frozen.persona_token as usize..sd.frozen.persona_token as usize + 1, 0..hidden])
        .into_data()
        .to_vec()
        .unwrap();
    let subjects: Vec<String> = set.iter().map(|&i| sd.prep.samples[i].subject.clone()).collect();
    let personas: BTreeMap<String, Vec<f32>> = subjects.iter().map(|s| (s.clone(), own.clone())).collect();
    let (same, same_tokens) = stage2::caption_nll(model, &sd, &set, Some(&personas), &device).unwrap();
    assert_eq!(same_tokens, tokens);
    assert!((same - sum).abs() < 1e-5 * sum, "own embedding {same} vs no persona {sum}");

    // Another vector in the slot changes the score, by far more than float noise (the batched vs
    // one-by-one gap; measured 0.33 nats against 9e-5 after this one-epoch pretraining).
    let scale = own.iter().map(|v| v.abs()).fold(0.0f32, f32::max) * 4.0;
    let flipped: Vec<f32> = (0..hidden).map(|k| if k % 2 == 0 { scale } else { -scale }).collect();
    let shifted: BTreeMap<String, Vec<f32>> = subjects.iter().map(|s| (s.clone(), flipped.clone())).collect();
    let (other, _) = stage2::caption_nll(model, &sd, &set, Some(&shifted), &device).unwrap();
    let noise = (sum - one_by_one).abs().max(1e-5);
    assert!((other - sum).abs() > 100.0 * noise, "another persona: {other}, zero-shot {sum}, noise {noise}");

    // Different personas per subject: each row gets its own subject's, batched as one by one.
    let mut distinct: Vec<String> = subjects.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 1, "{distinct:?}");
    let mixed: BTreeMap<String, Vec<f32>> = distinct
        .iter()
        .enumerate()
        .map(|(k, s)| (s.clone(), if k % 2 == 0 { own.clone() } else { flipped.clone() }))
        .collect();
    let (batched, _) = stage2::caption_nll(model, &sd, &set, Some(&mixed), &device).unwrap();
    let single = |map: &BTreeMap<String, Vec<f32>>, i: usize| {
        stage2::caption_nll(model, &sd, &[i], Some(map), &device).unwrap().0
    };
    let one_by_one_mixed: f64 = set.iter().map(|&i| single(&mixed, i)).sum();
    assert!((batched - one_by_one_mixed).abs() < 1e-4 * batched, "batched {batched} vs one by one {one_by_one_mixed}");
    // And it is each row's own persona that counts: per row, the mixed score is that row's score
    // under its subject's vector given to everybody.
    let by_row: f64 = set
        .iter()
        .map(|&i| {
            let k = distinct.iter().position(|s| *s == sd.prep.samples[i].subject).unwrap();
            single(if k % 2 == 0 { &personas } else { &shifted }, i)
        })
        .sum();
    assert!((batched - by_row).abs() < 1e-4 * batched, "batched {batched} vs per-row personas {by_row}");
    assert!((batched - sum).abs() > 10.0 * noise && (batched - other).abs() > 10.0 * noise);

    // A subject without a persona, or a persona of the wrong width: errors that name it.
    let mut missing = personas.clone();
    missing.remove(&subjects[0]);
    let err = stage2::caption_nll(model, &sd, &set, Some(&missing), &device).unwrap_err().to_string();
    assert!(err.contains(&format!("no persona for subject {}", subjects[0])), "{err}");
    let mut narrow = personas;
    narrow.insert(subjects[0].clone(), vec![0.0; hidden - 1]);
    let err = stage2::caption_nll(model, &sd, &set, Some(&narrow), &device).unwrap_err().to_string();
    assert!(err.contains("hidden size"), "{err}");
}
