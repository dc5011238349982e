//! The personalized-caption loop through the real binary: `deper demo` on a tiny world (captioner
//! pretraining, stage 1 with and without trajectories, stage 2 DEPER/PT, evaluation report), the
//! captioner's Hugging Face folder, `deper metrics`, and the bad inputs of stage 2 and evaluation.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn deper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deper")).args(args).output().expect("run deper")
}

fn ok_json(args: &[&str]) -> Value {
    ok_json_output(args, deper(args))
}

/// `deper ARGS` run in `dir` (relative paths in ARGS are relative to it).
fn ok_json_in(dir: &Path, args: &[&str]) -> Value {
    ok_json_output(
        args,
        Command::new(env!("CARGO_BIN_EXE_deper")).args(args).current_dir(dir).output().expect("run deper"),
    )
}

fn ok_json_output(args: &[&str], out: Output) -> Value {
    assert!(out.status.success(), "deper {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout of {args:?} is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn fails_with(args: &[&str], needle: &str) {
    let out = deper(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "deper {args:?} should fail");
    assert!(stderr.contains(needle), "deper {args:?}: expected `{needle}` in: {stderr}");
    assert!(!stderr.contains("panicked"), "deper {args:?} panicked: {stderr}");
}

fn read_json(path: impl AsRef<Path>) -> Value {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Copies the files (not subfolders) of `from` into a new folder `to`.
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn demo_runs_the_whole_loop_and_writes_the_report_contract() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let args = [
        "demo",
        "--out",
        s(&out),
        "--images",
        "24",
        "--stage1-epochs",
        "1",
        "--captioner-epochs",
        "1",
        "--stage2-epochs",
        "1",
    ];
    let printed = ok_json(&args);
    let report: Value = read_json(out.join("report/report.json"));
    assert_eq!(printed, report, "stdout is report.json");
    for method in ["zero_shot", "pt", "deper", "deper_no_traj"] {
        let m = &report["seen"][method];
        for key in ["Bleu_4", "CIDEr", "METEOR", "ROUGE_L"] {
            let v = m[key].as_f64().unwrap_or_else(|| panic!("seen.{method}.{key} missing: {report}"));
            assert!((0.0..=10.0).contains(&v), "seen.{method}.{key} = {v}");
        }
        // Teacher-forced NLL per token of the subjects' own descriptions: positive, finite.
        let nll = m["caption_nll"].as_f64().unwrap_or_else(|| panic!("seen.{method}.caption_nll missing: {report}"));
        assert!(nll > 0.0 && nll < 20.0, "seen.{method}.caption_nll = {nll}");
    }
    assert!(report["unseen"]["deper"]["caption_nll"].as_f64().is_some_and(|v| v > 0.0), "{report}");
    // The personas reach the score: a trained persona is not the zero-shot prompt.
    for method in ["pt", "deper"] {
        assert_ne!(report["seen"][method]["caption_nll"], report["seen"]["zero_shot"]["caption_nll"], "{report}");
    }
    // Subject accuracy only where an encoder exists; PT cannot serve unseen subjects.
    assert!(report["seen"]["deper"]["subject_acc"].as_f64().is_some());
    assert!(report["seen"]["zero_shot"]["subject_acc"].is_null());
    assert!(report["unseen"]["deper"]["CIDEr"].as_f64().is_some());
    assert!(report["unseen"].get("pt").is_none(), "{report}");
    for file in ["report.html", "report.md", "report_full.json", "captions.json"] {
        assert!(out.join("report").join(file).is_file(), "{file}");
    }
    // Trajectory reconstruction beside the per-subject mean-trajectory baseline.
    let full: Value = read_json(out.join("report/report_full.json"));
    let tables = full["tables"].as_array().unwrap();
    let traj = tables.iter().find(|t| t["split"].as_str().unwrap().starts_with("trajectory")).unwrap();
    let methods: Vec<&str> = traj["rows"].as_array().unwrap().iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["deper", "mean_trajectory", "deper_no_traj"], "{traj}");
    for row in traj["rows"].as_array().unwrap() {
        let iou = row["metrics"]["box_iou"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&iou), "{row}");
        assert!(row["metrics"]["dtw"].as_f64().unwrap() >= 0.0, "{row}");
    }
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(md.contains("deper\\_no\\_traj") && md.contains("n/a"), "{md}");

    adapter_is_one_forward(&out);

    // The captioner is a Hugging Face folder the ordinary loading code captions with.
    let captioner = out.join("captioner");
    for file in
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"]
    {
        assert!(captioner.join(file).is_file(), "{file}");
    }
    let log = std::fs::read_to_string(captioner.join("metrics.jsonl")).unwrap();
    assert!(log.contains("\"val_image_gain\":"), "{log}");
    let image = out.join("world/images/scene_0000.png");
    let caption =
        ok_json(&["caption", "--model", s(&captioner), "--image", s(&image), "--json", "--max-new-tokens", "8"]);
    assert!(!caption["generated_ids"].as_array().unwrap().is_empty(), "{caption}");

    // A rerun keeps every finished step and reproduces the report.
    let again = ok_json(&args);
    assert_eq!(again, report);
    // The marker records the world's size; other settings are refused, and a marker from before
    // `--subjects` existed (no such key) counts as the default.
    let marker_path = out.join("demo.json");
    let mut marker: Value = read_json(&marker_path);
    assert_eq!(marker["subjects"], 12, "{marker}");
    fails_with(&[&args[..], &["--subjects", "10"]].concat(), "other settings");
    marker.as_object_mut().unwrap().remove("subjects");
    std::fs::write(&marker_path, marker.to_string()).unwrap();
    assert_eq!(ok_json(&args), report);

    let runs = out.join("runs");
    let world = out.join("world");
    // A second stage-2 seed of every method on the finished demo: only the new runs are trained, and
    // the report gives each method's mean and sample deviation over its two runs.
    let seeds = ok_json(&[&args[..], &["--stage2-seeds", "2"]].concat());
    let marker: Value = read_json(&marker_path);
    assert_eq!(marker["stage2_seeds"], 2, "{marker}");
    let run: Value = read_json(out.join("runs/pt_seed1/run.json"));
    assert_eq!(run["config"]["seed"], 1, "{run}");
    assert_eq!(seeds["seen"]["pt"], report["seen"]["pt"], "seed 0 is the run already there");
    for method in ["pt", "deper", "deper_no_traj"] {
        let (a, b) = (&seeds["seen"][method], &seeds["seen"][format!("{method}:{method}_seed1").as_str()]);
        let spread = &seeds["over_runs"]["seen"][method];
        assert_eq!(spread["runs"], 2, "{method}: {seeds}");
        for key in ["Bleu_4", "CIDEr", "METEOR", "ROUGE_L"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            let mean = spread["mean"][key].as_f64().unwrap();
            let sd = spread["sd"][key].as_f64().unwrap();
            assert!((mean - (x + y) / 2.0).abs() < 1e-12, "{method} {key}: {seeds}");
            assert!((sd - (x - y).abs() / 2f64.sqrt()).abs() < 1e-12, "{method} {key}: {seeds}");
        }
    }
    assert!(seeds["over_runs"]["seen"]["pt"]["mean"]["subject_acc"].is_null(), "PT has no encoder: {seeds}");
    assert!(seeds["over_runs"]["unseen"].get("pt").is_none(), "PT has no unseen rows: {seeds}");
    assert_eq!(seeds["over_runs"]["unseen"]["deper"]["runs"], 2, "{seeds}");
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(md.contains("standard deviation over the runs") && md.contains("pt (2 runs)"), "{md}");

    // The ablation without the trajectory decoder loss: stage 1 with `--no-trajectory-loss` (w_traj 0
    // in run.json), stage 2 on it, and a report row of its own beside full DEPER.
    let s1 = dir.path().join("stage1_no_decoder_loss");
    let s1_args = ["train", "stage1", "--data", s(&world), "--out", s(&s1), "--preset", "tiny", "--epochs", "1"];
    ok_json(&[&s1_args[..], &["--no-trajectory-loss"]].concat());
    let info: Value = read_json(s1.join("run.json"));
    assert_eq!(info["config"]["loss"]["w_traj"], 0.0, "{info}");
    // Trained from the demo folder with relative paths: run.json records them absolute, so the
    // evaluation below, from another working directory, finds the VLM and sees it is the demo's.
    let s2 = dir.path().join("deper_no_decoder_loss");
    let s2_args = ["train", "stage2", "--data", "world", "--stage1", s(&s1), "--vlm", "captioner", "--out", s(&s2)];
    ok_json_in(&out, &[&s2_args[..], &["--method", "deper", "--epochs", "1"]].concat());
    let info: Value = read_json(s2.join("run.json"));
    assert_eq!(info["vlm"], s(&captioner.canonicalize().unwrap()), "{info}");
    assert_eq!(info["stage1"], s(&s1.canonicalize().unwrap()), "{info}");
    let ablation = ok_json(&[
        "eval",
        "--data",
        s(&world),
        "--runs",
        s(&runs.join("deper")),
        s(&s2),
        "--out",
        s(&dir.path().join("report_ablation")),
    ]);
    for split in ["seen", "unseen"] {
        for method in ["zero_shot", "deper", "deper_no_decoder_loss"] {
            assert!(ablation[split][method]["CIDEr"].is_number(), "{split}.{method}: {ablation}");
        }
        assert_eq!(ablation[split]["deper"], report[split]["deper"], "the same run scores the same");
    }

    // Stage 2 resumes a finished run for more epochs, and never overwrites one silently.
    let pt = runs.join("pt");
    let pt_args = ["train", "stage2", "--method", "pt", "--data", s(&world), "--vlm", s(&captioner), "--out", s(&pt)];
    fails_with(&[&pt_args[..], &["--epochs", "2"]].concat(), "--resume");
    let resumed = ok_json(&[&pt_args[..], &["--epochs", "2", "--resume"]].concat());
    assert_eq!(resumed["epoch"], 2, "{resumed}");
    let lines = std::fs::read_to_string(pt.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> =
        lines.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2]);
    // Resuming with another VLM folder (here a copy of the captioner, so it loads) is refused.
    let copy = dir.path().join("captioner_copy");
    copy_files(&captioner, &copy);
    let with_copy = ["train", "stage2", "--method", "pt", "--data", s(&world), "--vlm", s(&copy), "--out", s(&pt)];
    fails_with(&[&with_copy[..], &["--epochs", "3", "--resume"]].concat(), "was started with");
    // A stage-2 run where a stage-1 run belongs, and the other way round.
    fails_with(
        &[
            "train",
            "stage2",
            "--data",
            s(&world),
            "--stage1",
            s(&runs.join("pt")),
            "--vlm",
            s(&captioner),
            "--out",
            s(&dir.path().join("x")),
        ],
        "not stage1",
    );
    fails_with(
        &["eval", "--data", s(&world), "--runs", s(&runs.join("stage1")), "--out", s(&dir.path().join("r"))],
        "not stage2",
    );
    // Runs trained on different subject lists cannot share a table.
    let other = dir.path().join("pt_other");
    copy_files(&runs.join("pt"), &other);
    let mut info: Value = read_json(other.join("run.json"));
    info["subjects"].as_array_mut().unwrap().pop();
    std::fs::write(other.join("run.json"), info.to_string()).unwrap();
    fails_with(
        &["eval", "--data", s(&world), "--runs", s(&runs.join("deper")), s(&other), "--out", s(&dir.path().join("r"))],
        "different subject lists",
    );
    // The same VLM recorded as another spelling of its path is the same VLM; another folder is not.
    let mut info: Value = read_json(runs.join("pt/run.json"));
    info["vlm"] = Value::from(captioner.join("..").join("captioner").to_str().unwrap());
    std::fs::write(other.join("run.json"), info.to_string()).unwrap();
    let (deper_run, r1, r2) = (runs.join("deper"), dir.path().join("r"), dir.path().join("r2"));
    let both = ["eval", "--data", s(&world), "--runs", s(&deper_run), s(&other), "--out"];
    let respelt = ok_json(&[&both[..], &[s(&r1)]].concat());
    assert!(respelt["seen"]["pt"]["caption_nll"].is_number(), "{respelt}");
    info["vlm"] = Value::from(s(&world));
    std::fs::write(other.join("run.json"), info.to_string()).unwrap();
    fails_with(&[&both[..], &[s(&r2)]].concat(), "different VLMs");
    // A recorded VLM that is gone (the runs were moved): a clear error, and `--vlm` names it.
    info["vlm"] = Value::from(s(&dir.path().join("moved/captioner")));
    std::fs::write(other.join("run.json"), info.to_string()).unwrap();
    fails_with(&[&both[..], &[s(&r2)]].concat(), "does not exist (moved?)");
    let named = ok_json(&[&both[..], &[s(&r2), "--vlm", s(&captioner)]].concat());
    assert!(named["seen"]["pt"]["caption_nll"].is_number(), "{named}");
    // A VLM folder without the persona token.
    fails_with(
        &[
            "train",
            "stage2",
            "--method",
            "pt",
            "--data",
            s(&world),
            "--vlm",
            s(&world),
            "--out",
            s(&dir.path().join("y")),
        ],
        "config.json",
    );
}

#[test]
fn metrics_prints_coco_scores_and_rejects_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let refs = dir.path().join("refs.json");
    let cands = dir.path().join("cands.json");
    std::fs::write(
        &refs,
        r#"{"a": ["A red circle, left of a blue square.", "a red circle and a blue square"], "b": ["Two green stars!"], "c": ["a cat on a mat"]}"#,
    )
    .unwrap();
    std::fs::write(&cands, r#"{"a": "a red circle and a blue square", "b": "two green stars", "c": "zebras grazing"}"#)
        .unwrap();
    let out_file = dir.path().join("scores.json");
    let scores = ok_json(&["metrics", "--refs", s(&refs), "--cands", s(&cands), "--out", s(&out_file)]);
    let written: Value = read_json(&out_file);
    assert_eq!(scores, written);
    for key in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"] {
        assert!(scores["corpus"][key].is_number(), "{key}: {scores}");
    }
    // Tokenised exactly, `a` matches a reference word for word; `c` shares nothing.
    assert!((scores["per_image"]["a"]["Bleu_1"].as_f64().unwrap() - 1.0).abs() < 1e-6, "{scores}");
    assert!((scores["per_image"]["a"]["ROUGE_L"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{scores}");
    assert!(scores["per_image"]["c"]["ROUGE_L"].as_f64().unwrap() < 1e-9, "{scores}");

    std::fs::write(&refs, r#"{"a": [], "b": ["x"], "c": ["y"]}"#).unwrap();
    fails_with(&["metrics", "--refs", s(&refs), "--cands", s(&cands)], "a");
    std::fs::write(&refs, r#"{"a": ["x"], "b": ["x"]"#).unwrap();
    fails_with(&["metrics", "--refs", s(&refs), "--cands", s(&cands)], "refs.json");
}

/// The caption API's persona for a z_s is stage 2's adapter output, bit for bit: both run the one
/// `PersonaAdapter` of the run (no host copy of its weights).
fn adapter_is_one_forward(demo: &Path) {
    use burn::tensor::{Tensor, TensorData};
    type B = burn::backend::NdArray;
    let run = demo.join("runs/deper");
    let api = deper_server::server::caption::VlmCaptioner::load(&demo.join("captioner"), Some(&run)).unwrap();
    let info = deper_train::stage2::Stage2Info::load(&run).unwrap();
    let device = Default::default();
    let personalizer = deper_train::stage2::load_personalizer::<B>(&run, &info, &device).unwrap();
    let adapter = personalizer.adapter().expect("a DEPER run has an adapter");
    let d_in = adapter.d_in();
    assert_ne!(d_in, adapter.hidden(), "z_s and persona widths must differ for the API to tell them apart");
    let z: Vec<f32> = (0..d_in).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
    let from_api = api.persona_row(&z).unwrap();
    let from_stage2: Vec<f32> = adapter
        .forward(Tensor::<B, 2>::from_data(TensorData::new(z.clone(), [1, d_in]), &device))
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(from_api.len(), info.hidden_size);
    assert_eq!(from_api, from_stage2, "the caption API and stage 2 disagree on a persona");
    assert!(from_api.iter().any(|v| *v != 0.0));
    // A vector of neither width is refused with both widths named.
    let err = api.persona_row(&z[..d_in - 1]).unwrap_err();
    assert!(err.contains(&d_in.to_string()) && err.contains(&info.hidden_size.to_string()), "{err}");
}
