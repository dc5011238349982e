//! Stage 1 end to end on a small synthetic world: run-folder contract, resume,
//! few-shot evaluation, embeddings, and the errors bad inputs must give.

#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

use burn::backend::{Autodiff, NdArray};
use deper_core::dataset::Dataset;
use deper_core::split::Splits;
use deper_train::stage1;
use deper_train::{eval, features};

mod common;

type Cpu = NdArray;
type Train = Autodiff<NdArray>;

use common::{metrics_lines, tiny, world};

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
    let meta_path = features::cache_dir(&data, features::PIXEL_STATS).join(features::cache::INDEX_FILE);
    let meta = std::fs::read_to_string(&meta_path).unwrap().replace("\"dim\": 16", "\"dim\": 8");
    std::fs::write(&meta_path, meta).unwrap();
    let err = features::load(&data, features::PIXEL_STATS).unwrap_err().to_string();
    assert!(err.contains("scene_") && err.contains("[14, 14, 8]") && err.contains("[14, 14, 16]"), "{err}");

    // A cache of another width is never resumed: the refusal names its index and both shapes.
    let err = features::extract(&Dataset::open(&data).unwrap(), features::PIXEL_STATS, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("index.json") && err.contains("14×14×8") && err.contains("14×14×16"), "{err}");

    // A missing image file stops extraction and names the file; the cache is not complete.
    std::fs::remove_dir_all(features::cache_dir(&data, features::PIXEL_STATS)).unwrap();
    std::fs::remove_file(data.join("images/scene_0003.png")).unwrap();
    let ds = Dataset::open(&data).unwrap();
    let err = features::extract(&ds, features::PIXEL_STATS, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("scene_0003.png"), "{err}");
    assert!(!features::is_complete(&data, features::PIXEL_STATS));
}

/// The loss schedule of `loss.trajectory_only_steps` and `loss.subject_ramp_steps` reaches the
/// training loop: metrics.jsonl's `train_loss` is the weighted sum of its logged parts.
#[test]
fn subject_loss_schedule_weights_the_logged_losses() {
    let dir = tempfile::tempdir().unwrap();
    let data = world(dir.path());
    let device = Default::default();
    let epoch_losses = |name: &str, trajectory_only_steps: usize, subject_ramp_steps: usize| {
        let mut config = tiny(2);
        config.loss.trajectory_only_steps = trajectory_only_steps;
        config.loss.subject_ramp_steps = subject_ramp_steps;
        let run = dir.path().join(name);
        stage1::train::<Train>(&data, &run, config, false, &device, &mut |_| {}).unwrap();
        metrics_lines(&run)
            .iter()
            .map(|m| {
                let f = |key: &str| m[key].as_f64().unwrap();
                (f("train_loss"), f("train_traj_loss"), f("train_cls_loss"), f("train_con_loss"))
            })
            .collect::<Vec<_>>()
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(1.0);

    for (total, traj, cls, con) in epoch_losses("default", 0, 0) {
        assert!(cls > 0.1 && con > 0.1, "{cls} {con}");
        assert!(close(total, traj + cls + 0.1 * con), "{total} vs {traj} + {cls} + 0.1·{con}");
    }
    // Trajectory only for longer than the run: the subject losses are logged but weigh nothing.
    for (total, traj, cls, con) in epoch_losses("trajectory_only", 1_000_000, 0) {
        assert!(cls > 0.1 && con > 0.1, "{cls} {con}");
        assert!(close(total, traj), "{total} vs {traj}");
    }
    // A ramp far longer than the run: after the first step the subject losses weigh at most
    // steps / ramp, a few millionths here, but not nothing.
    for (total, traj, cls, con) in epoch_losses("ramp", 0, 1_000_000) {
        let extra = total - traj;
        assert!(extra > 0.0 && extra <= 100e-6 * (cls + 0.1 * con), "{extra} with cls {cls}, con {con}");
    }
}
