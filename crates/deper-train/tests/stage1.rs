//! Stage 1 end to end on a small synthetic world: run-folder contract, resume,
//! few-shot evaluation, embeddings, and the errors bad inputs must give.

#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::Tensor;
use deper_core::dataset::Dataset;
use deper_core::split::{apply_splits, SplitConfig, Splits, UnseenChoice};
use deper_train::stage1::{self, ModelSettings, Stage1Config, TrainSettings};
use deper_train::{eval, features};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

type Cpu = NdArray;
type Train = Autodiff<NdArray>;

fn world(dir: &Path) -> PathBuf {
    world_seeded(dir, 2)
}

fn world_seeded(dir: &Path, seed: u64) -> PathBuf {
    let data = dir.join("world");
    let config = deper_synth::SynthConfig { subjects: 4, images: 24, coverage: 1.0, seed, ..Default::default() };
    deper_synth::generate(&config, &data, &mut |_, _| {}).unwrap();
    let ds = Dataset::open(&data).unwrap();
    let split =
        SplitConfig { unseen: UnseenChoice::List(vec!["s03".into()]), keep_image_splits: true, ..Default::default() };
    apply_splits(&ds, &split).unwrap();
    features::extract(&ds, features::PIXEL_STATS, &mut |_, _| {}).unwrap();
    data
}

fn tiny(epochs: usize) -> Stage1Config {
    Stage1Config {
        train: TrainSettings { epochs, batch_size: 16, ..TrainSettings::default() },
        model: ModelSettings {
            d_model: 32,
            n_heads: 2,
            encoder_layers: 1,
            decoder_layers: 1,
            token_dim: 16,
            ..ModelSettings::tiny()
        },
        ..Stage1Config::default()
    }
}

fn metrics_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join(stage1::METRICS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn run_folder_contract_resume_eval_and_embed() {
    let dir = tempfile::tempdir().unwrap();
    let data = world(dir.path());
    let run = dir.path().join("run");
    let device = Default::default();

    let m = stage1::train::<Train>(&data, &run, tiny(1), false, &device, &mut |_| {}).unwrap();
    assert_eq!(m.len(), 1);
    let lines = metrics_lines(&run);
    assert_eq!(lines.len(), 1);
    for key in ["epoch", "train_loss", "val_subject_acc", "val_macro_f1", "val_box_iou"] {
        assert!(lines[0].get(key).is_some_and(|v| v.is_number()), "metrics.jsonl lacks `{key}`: {}", lines[0]);
    }
    assert_eq!(lines[0]["epoch"], 1);

    // A second start without --resume must not clobber the run.
    let err = stage1::train::<Train>(&data, &run, tiny(1), false, &device, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");

    // Resume continues at epoch 2 with the settings stored in the run.
    let info = stage1::RunInfo::load(&run).unwrap();
    let mut more = info.config.clone();
    more.train.epochs = 2;
    let mut run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    run_json["config"]["train"]["epochs"] = 2.into();
    std::fs::write(run.join("run.json"), serde_json::to_string(&run_json).unwrap()).unwrap();
    let m = stage1::train::<Train>(&data, &run, more, true, &device, &mut |_| {}).unwrap();
    assert_eq!(m.iter().map(|e| e.epoch).collect::<Vec<_>>(), [2]);
    assert_eq!(metrics_lines(&run).len(), 2);

    let report = eval::eval_fewshot::<Cpu>(&run, &data, 5, &device).unwrap();
    assert_eq!(report.unseen_subjects, 1);
    assert!(report.unseen_queries > 0);
    assert!(report.seen_samples > 0);
    // One unseen subject: nearest centroid among one centroid is always right.
    assert_eq!(report.unseen_acc, 1.0);
    for v in [report.seen_acc, report.box_iou, report.mean_trajectory_iou] {
        assert!((0.0..=1.0).contains(&v), "{report:?}");
    }

    let emb = eval::embed::<Cpu>(&run, &data, None, 5, &device).unwrap();
    assert_eq!(emb.dim, 32);
    assert_eq!(emb.subjects.len(), 4);
    let splits = Splits::load(&data).unwrap();
    let unseen = &emb.subjects["s03"];
    assert!(!unseen.seen);
    let mut support = unseen.support.clone();
    support.sort();
    let mut expected = splits.support["s03"].clone();
    expected.sort();
    assert_eq!(support, expected, "unseen subjects average their split support set");
    assert!(emb.subjects["s01"].seen);
    assert_eq!(emb.subjects["s01"].z_s.len(), 32);
    // Deterministic: the same call gives the same vectors.
    let again = eval::embed::<Cpu>(&run, &data, Some(&["s03".to_string()]), 5, &device).unwrap();
    assert_eq!(again.subjects["s03"].z_s, unseen.z_s);
    assert_eq!(again.subjects.len(), 1);
}

#[test]
fn bad_inputs_give_errors_that_say_which() {
    let dir = tempfile::tempdir().unwrap();
    let data = world(dir.path());
    let device = Default::default();

    // No features for the requested backbone.
    let mut cfg = tiny(1);
    cfg.train.backbone = "dinov3-vits16".into();
    let err = stage1::train::<Train>(&data, &dir.path().join("r0"), cfg, false, &device, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("deper features extract"), "{err}");

    // A config that does not validate.
    let mut cfg = tiny(1);
    cfg.model.d_model = 30;
    let err = stage1::train::<Train>(&data, &dir.path().join("r1"), cfg, false, &device, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("d_model"), "{err}");

    let run = dir.path().join("run");
    stage1::train::<Train>(&data, &run, tiny(1), false, &device, &mut |_| {}).unwrap();

    // run.json describing another network than the weights.
    let original = std::fs::read_to_string(run.join("run.json")).unwrap();
    let mut other: serde_json::Value = serde_json::from_str(&original).unwrap();
    other["config"]["model"]["d_model"] = 64.into();
    std::fs::write(run.join("run.json"), serde_json::to_string(&other).unwrap()).unwrap();
    let err = eval::eval_fewshot::<Cpu>(&run, &data, 5, &device).unwrap_err().to_string();
    assert!(err.contains("model.mpk") && err.contains("do not match"), "{err}");
    std::fs::write(run.join("run.json"), &original).unwrap();

    // Truncated and foreign weight files.
    let weights = run.join("model.mpk");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = eval::eval_fewshot::<Cpu>(&run, &data, 5, &device).unwrap_err().to_string();
    assert!(err.contains("model.mpk"), "{err}");
    std::fs::write(&weights, b"definitely not a burn record").unwrap();
    let err = eval::eval_fewshot::<Cpu>(&run, &data, 5, &device).unwrap_err().to_string();
    assert!(err.contains("model.mpk"), "{err}");

    // A folder that is no run at all.
    let err = eval::eval_fewshot::<Cpu>(&data, &data, 5, &device).unwrap_err().to_string();
    assert!(err.contains("not a run folder"), "{err}");

    // Features of the wrong width name the image and both shapes.
    let (_, meta_path) = features::cache_paths(&data, features::PIXEL_STATS);
    let meta = std::fs::read_to_string(&meta_path).unwrap().replace("\"dim\": 16", "\"dim\": 8");
    std::fs::write(&meta_path, meta).unwrap();
    let err = features::load(&data, features::PIXEL_STATS).unwrap_err().to_string();
    assert!(err.contains("scene_") && err.contains("[14, 14, 8]") && err.contains("[14, 14, 16]"), "{err}");

    // A missing image file stops extraction and names the file.
    std::fs::remove_file(data.join("images/scene_0003.png")).unwrap();
    let ds = Dataset::open(&data).unwrap();
    let err = features::extract(&ds, features::PIXEL_STATS, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("scene_0003.png"), "{err}");
}

/// Weights of a saved run, per parameter tensor in module order.
fn run_weights(run: &Path, data: &Path) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor<Cpu> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Cpu, D>>) {
            self.0.push(param.val().into_data().to_vec().unwrap());
        }
    }
    let (_, model, _) = eval::open_run::<Cpu>(run, data, &Default::default()).unwrap();
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

#[test]
fn data_parallel_training_on_two_devices_equals_one_device() {
    let dir = tempfile::tempdir().unwrap();
    // Seed 4 gives an even number of training triplets (checked below).
    let data = world_seeded(dir.path(), 4);
    let device = burn::backend::ndarray::NdArrayDevice::Cpu;
    let n_train = {
        let info_vocab = deper_train::text::WordVocab::from_words(vec!["a".into()]);
        let subjects: Vec<String> = ["s00", "s01", "s02"].map(String::from).to_vec();
        stage1::prepare(&data, features::PIXEL_STATS, &info_vocab, 16, &subjects).unwrap().partition.train.len()
    };
    assert!(n_train % 2 == 0 && n_train > 0, "the fixture needs an even training set, has {n_train}");

    // One global batch per epoch, split 50/50 between two devices. Without dropout, the memory
    // bank (kept per device) and the box loss (normalised per device by its valid steps), the
    // mean of the two devices' gradients is the one-device gradient, so both runs must agree.
    let mut cfg = tiny(3);
    cfg.train.batch_size = n_train;
    cfg.model.dropout = 0.0;
    cfg.loss.w_con = 0.0;
    cfg.loss.w_traj = 0.0;
    let never = AtomicBool::new(false);
    let single = dir.path().join("single");
    let one = stage1::train_data_parallel::<Train>(&data, &single, cfg.clone(), false, &[device], &mut |_| {}, &never)
        .unwrap();
    let ddp = dir.path().join("ddp");
    let mut batches = 0;
    let two = stage1::train_data_parallel::<Train>(
        &data,
        &ddp,
        cfg.clone(),
        false,
        &[device, device],
        &mut |p| batches += usize::from(matches!(p, stage1::Progress::Batch { .. })),
        &never,
    )
    .unwrap();
    assert_eq!(batches, 3, "progress comes from the leading device only");
    assert_eq!(two.len(), 3);
    assert_eq!(metrics_lines(&ddp).len(), 3);
    for (a, b) in one.iter().zip(&two) {
        assert!((a.train_loss - b.train_loss).abs() < 1e-4, "epoch {}: {} vs {}", a.epoch, a.train_loss, b.train_loss);
    }
    let (wa, wb) = (run_weights(&single, &data), run_weights(&ddp, &data));
    assert_eq!(wa.len(), wb.len());
    let worst = wa.iter().zip(&wb).flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs())).fold(0f32, f32::max);
    assert!(worst < 1e-4, "data-parallel weights differ from one-device weights by {worst}");

    // More devices than samples in a batch cannot share it out.
    cfg.train.batch_size = 1;
    let err = stage1::train_data_parallel::<Train>(
        &data,
        &dir.path().join("bad"),
        cfg,
        false,
        &[device, device],
        &mut |_| {},
        &never,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("2 devices") && err.contains("batch_size"), "{err}");
}
