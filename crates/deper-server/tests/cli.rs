//! The `deper` binary end to end: real processes, real files.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

use serde_json::Value;
use std::path::Path;
use std::process::Command;

mod common;

use common::{deper, ok_json, s};

#[test]
fn synth_prints_stats_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w");
    let args = ["synth", "--out", s(&out), "--subjects", "4", "--images", "10", "--seed", "3"];
    let stats = ok_json(&args);
    assert_eq!(stats["subjects"], 4);
    assert_eq!(stats["images"].as_u64().unwrap(), 10);
    let triplets = stats["triplets"].as_u64().unwrap();
    assert!(triplets >= 12, "{stats}");
    let per_split: u64 = ["train", "val", "test"].iter().map(|k| stats["splits"][k].as_u64().unwrap()).sum();
    assert_eq!(per_split, triplets);
    assert!(stats["mean_steps"].as_f64().unwrap() > 1.0, "{stats}");
    assert_eq!(stats["empty_trajectories"], 0);

    // `dataset stats --json` reads back the same numbers.
    assert_eq!(ok_json(&["dataset", "stats", s(&out), "--json"]), stats);
    let splits: Value = serde_json::from_str(&std::fs::read_to_string(out.join("splits.json")).unwrap()).unwrap();
    assert_eq!(splits["unseen_subjects"].as_array().unwrap().len(), 1);
    assert_eq!(splits["seen_subjects"].as_array().unwrap().len(), 3);

    // No silent overwrite; --force regenerates byte-identical data.
    let first = std::fs::read(out.join("triplets.jsonl")).unwrap();
    let again = deper(&args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a dataset"));
    let mut forced = args.to_vec();
    forced.push("--force");
    ok_json(&forced);
    assert_eq!(std::fs::read(out.join("triplets.jsonl")).unwrap(), first);
}

const GOOD: &str = r#"{"dataset_id": "mscoco", "image_id": "1", "annotator_id": 7, "caption": "a cat", "timed_caption": [{"utterance": "a cat", "start_time": 0.0, "end_time": 0.5}], "traces": [[{"x": 0.5, "y": 0.5, "t": 0.0}, {"x": 0.5, "y": 0.5, "t": 0.5}]], "voice_recording": ""}"#;

#[test]
fn import_ln_names_the_bad_line_and_field_and_can_skip_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("coco_val_localized_narratives.jsonl");
    let bad = GOOD
        .replace(r#""image_id": "1""#, r#""image_id": "2""#)
        .replace(r#"{"x": 0.5, "y": 0.5, "t": 0.0}"#, r#"{"x": "0.5", "y": 0.5, "t": 0.0}"#);
    let third = GOOD.replace(r#""image_id": "1""#, r#""image_id": "3""#);
    std::fs::write(&input, format!("{GOOD}\n{bad}\n{third}\n")).unwrap();
    let out = dir.path().join("ds");

    let failed = deper(&["import", "ln", "--jsonl", s(&input), "--out", s(&out)]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("coco_val_localized_narratives.jsonl:2"), "{err}");
    assert!(err.contains("traces[0][0].x"), "{err}");
    assert!(!out.join("dataset.json").exists(), "a failed import must not leave a dataset");

    let report = ok_json(&["import", "ln", "--jsonl", s(&input), "--out", s(&out), "--skip-bad"]);
    assert_eq!(report["records"], 3);
    assert_eq!(report["triplets"], 2);
    assert_eq!(report["skipped"], 1);
    let stats = ok_json(&["dataset", "stats", s(&out), "--json"]);
    assert_eq!(stats["triplets"], 2);
    assert_eq!(stats["subjects"], 1);
    // The split is guessed from the LN file name.
    assert_eq!(stats["splits"]["val"], 2);
}

#[test]
fn an_import_that_keeps_no_triplet_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.jsonl");
    let bad = GOOD.replace(r#"{"x": 0.5, "y": 0.5, "t": 0.0}"#, r#"{"x": "0.5", "y": 0.5, "t": 0.0}"#);
    std::fs::write(&input, format!("{bad}\n{bad}\n")).unwrap();
    let out = dir.path().join("ds");
    let failed = deper(&["import", "ln", "--jsonl", s(&input), "--out", s(&out), "--skip-bad"]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("no triplet was imported") && err.contains("2 records skipped"), "{err}");
    assert!(!out.exists(), "a failed import must not leave a dataset");
}

#[test]
fn dataset_stats_lists_each_subjects_triplets_and_a_closed_pipe_ends_it_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w");
    let stats = ok_json(&["synth", "--out", s(&out), "--subjects", "4", "--images", "10", "--seed", "3"]);
    let table = deper(&["dataset", "stats", s(&out)]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    for (subject, n) in stats["per_subject"].as_object().unwrap() {
        let row = text.lines().find(|l| l.split_whitespace().next() == Some(subject.as_str()));
        assert_eq!(row.and_then(|l| l.split_whitespace().nth(1)), Some(n.to_string().as_str()), "{text}");
    }
    // `deper dataset stats D --json | head -1`: the reader is gone before deper writes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_deper"))
        .args(["dataset", "stats", s(&out), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let ended = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert!(ended.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked") && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn a_dataset_without_splits_names_the_command_that_makes_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.jsonl");
    std::fs::write(&input, format!("{GOOD}\n")).unwrap();
    let data = dir.path().join("ds");
    ok_json(&["import", "ln", "--jsonl", s(&input), "--out", s(&data)]);
    let failed = deper(&["train", "stage1", "--data", s(&data), "--out", s(&dir.path().join("run"))]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(err.matches("splits.json").count(), 1, "{err}");
    assert!(err.contains(&format!("run `deper dataset split {}`", data.display())), "{err}");
}

#[test]
fn import_ln_finds_images_by_coco_names() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("imgs");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(images.join("000000000001.jpg"), b"jpeg").unwrap();
    let input = dir.path().join("n.jsonl");
    let other = GOOD.replace(r#""image_id": "1""#, r#""image_id": "99""#);
    std::fs::write(&input, format!("{GOOD}\n{other}\n")).unwrap();
    let out = dir.path().join("ds");
    ok_json(&["import", "ln", "--jsonl", s(&input), "--out", s(&out), "--images", s(&images)]);
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(manifest["missing_images"], Value::Null, "extras live under `extra`");
    assert_eq!(manifest["extra"]["missing_images"], 1);
    let files: Vec<&Value> = manifest["images"].as_array().unwrap().iter().map(|i| &i["file"]).collect();
    assert_eq!(files, [&Value::from("000000000001.jpg"), &Value::Null]);
}

#[test]
fn dataset_split_holds_out_named_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w");
    ok_json(&["synth", "--out", s(&out), "--subjects", "5", "--images", "30", "--seed", "1"]);
    let splits = ok_json(&["dataset", "split", s(&out), "--unseen", "s02,s04", "--shots", "3", "--seed", "9"]);
    assert_eq!(splits["unseen_subjects"], serde_json::json!(["s02", "s04"]));
    assert_eq!(splits["support"]["s02"].as_array().unwrap().len(), 3);
    let unknown = deper(&["dataset", "split", s(&out), "--unseen", "nobody"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("`nobody`"));
}

#[test]
fn bench_import_reports_throughput_and_memory() {
    let r = ok_json(&["bench", "import", "--records", "1000", "--json"]);
    assert_eq!(r["large"]["records"], 1000);
    assert_eq!(r["small"]["records"], 200);
    assert!(r["large"]["records_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["large"]["peak_rss_mb"].as_f64().unwrap() > 0.0);
    assert!(r["rss_ratio_large_over_small"].as_f64().is_some());
}

fn fixture(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(rel)
}

#[test]
fn caption_reproduces_the_reference_greedy_ids() {
    // Qwen2-VL and Qwen2.5-VL folders go through the same command; `model_type` picks the vision tower.
    for name in ["qwen2_vl_tiny", "qwen2_5_vl_tiny"] {
        let model = fixture(&format!("{name}/model"));
        let image = fixture(&format!("{name}/image.png"));
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{name}/reference.json"))).unwrap())
                .unwrap();
        let out = ok_json(&["caption", "--model", s(&model), "--image", s(&image), "--max-new-tokens", "12", "--json"]);
        assert_eq!(out["generated_ids"], reference["a"]["generated_ids_plain"], "{name}");
        assert_eq!(out["text"], reference["a"]["generated_text_plain"], "{name}");
        let prompt_len = out["prompt_ids"].as_array().unwrap().len();
        assert_eq!(prompt_len, reference["a"]["seq_len"].as_u64().unwrap() as usize, "{name}");
    }
}

#[test]
fn caption_runs_an_idefics3_smolvlm_folder_and_names_unknown_families() {
    let model = fixture("idefics3_tiny/model");
    let image = fixture("idefics3_tiny/image.png");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("idefics3_tiny/reference.json")).unwrap()).unwrap();
    let out = ok_json(&["caption", "--model", s(&model), "--image", s(&image), "--max-new-tokens", "12", "--json"]);
    assert_eq!(out["generated_ids"], reference["a"]["generated_ids_plain"]);
    assert_eq!(out["prompt_ids"], reference["a"]["input_ids"]);
    assert_eq!(out["text"], reference["a"]["generated_text_plain"]);

    // A folder of another architecture: the error names its model_type.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llava"}"#).unwrap();
    let out = deper(&["caption", "--model", s(dir.path()), "--image", s(&image)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`llava`") && err.contains("idefics3"), "{err}");
}

#[test]
fn caption_rejects_an_image_that_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let model = fixture("qwen2_vl_tiny/model");
    let out = deper(&["caption", "--model", s(&model), "--image", s(&bad)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.png"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_backend_not_compiled_in_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for device in ["wgpu", "cuda"] {
        let out = deper(&["eval-fewshot", "--run", s(dir.path()), "--data", s(dir.path()), "--device", device]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        if cfg!(feature = "wgpu") && device == "wgpu" || cfg!(feature = "cuda") && device == "cuda" {
            // Compiled in: the error is about the empty run folder instead.
            assert!(err.contains("run folder"), "{err}");
        } else {
            assert!(err.contains(&format!("--features {device}")), "{err}");
        }
    }
}

#[test]
fn serve_refuses_a_training_device_it_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    for device in ["wgpu", "cuda"] {
        if cfg!(feature = "wgpu") && device == "wgpu" || cfg!(feature = "cuda") && device == "cuda" {
            continue; // compiled in: it would start serving
        }
        let out = deper(&["serve", "--no-demo", "--data", s(dir.path()), "--addr", "127.0.0.1:0", "--device", device]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("--features {device}")), "{err}");
        assert!(!dir.path().join("deper.db").exists(), "nothing is created before the check");
    }
}

#[test]
fn train_stage1_on_two_devices_writes_a_run_that_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("w");
    ok_json(&["synth", "--out", s(&world), "--subjects", "4", "--images", "20", "--seed", "3"]);
    ok_json(&["dataset", "split", s(&world), "--unseen", "s03", "--shots", "3"]);
    ok_json(&["features", "extract", "--data", s(&world)]);
    let config = dir.path().join("c.json");
    std::fs::write(
        &config,
        r#"{"model": {"d_model": 32, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "token_dim": 16}}"#,
    )
    .unwrap();
    let run = dir.path().join("run");
    let args = ["train", "stage1", "--data", s(&world), "--out", s(&run), "--config", s(&config), "--epochs", "1"];
    let last = ok_json(&[&args[..], &["--devices", "0,1"]].concat());
    assert_eq!(last["epoch"], 1);
    let report = ok_json(&["eval-fewshot", "--run", s(&run), "--data", s(&world), "--shots", "3", "--json"]);
    assert!(report["seen_acc"].as_f64().is_some(), "{report}");
    // Per step IoU, first step first, for the decoder and for the mean-trajectory baseline.
    for key in ["box_iou_by_step", "mean_trajectory_iou_by_step"] {
        let steps = report[key].as_array().unwrap_or_else(|| panic!("{key}: {report}"));
        assert!(!steps.is_empty() && steps.iter().all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())), "{report}");
    }

    // The model fields of `--config` go over `--preset`, the rest comes from the preset.
    std::fs::write(&config, r#"{"model": {"dropout": 0.0, "encoder_layers": 1, "decoder_layers": 1}}"#).unwrap();
    let tiny_run = dir.path().join("tiny");
    let tiny_args =
        ["train", "stage1", "--data", s(&world), "--out", s(&tiny_run), "--config", s(&config), "--preset", "tiny"];
    ok_json(&[&tiny_args[..], &["--epochs", "1"]].concat());
    let run_json: Value = serde_json::from_str(&std::fs::read_to_string(tiny_run.join("run.json")).unwrap()).unwrap();
    let model = &run_json["config"]["model"];
    assert_eq!((model["d_model"].as_u64(), model["token_dim"].as_u64()), (Some(64), Some(32)), "{model}");
    assert_eq!((model["dropout"].as_f64(), model["encoder_layers"].as_u64()), (Some(0.0), Some(1)), "{model}");

    let twice = deper(&[&args[..], &["--device", "cuda", "--devices", "0,0"]].concat());
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("name each device once"));
}
