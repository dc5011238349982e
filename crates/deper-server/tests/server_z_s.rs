//! An encoder trained with a VLM's text side (`deper train stage1 --text-embeddings`): the page
//! cannot run it (`in_page: false` in the manifest), so a participant's z_s comes from
//! `POST /api/sessions/{id}/z_s`, computed by the server with the run's VLM tokenizer and table:
//! the same vector the encoder gives natively for the stimulus's features, stored like a page's.

#![allow(clippy::unwrap_used)] // a failing call should fail the test loudly

mod common;

use common::png;
use deper_core::{AttentionStep, BBox, Trajectory, TrajectorySource};
use deper_server::server::embedder::EmbedderAssets;
use deper_server::server::ServerSettings;
use deper_train::eval::{Encoder, HostTriplet};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn deper(args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deper")).args(args).output().unwrap();
    assert!(out.status.success(), "deper {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn fixture_vlm() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2_vl_tiny/model")
}

/// A tiny stage-1 run whose captions go through the tiny Qwen2-VL fixture's tokenizer and table.
fn vlm_text_run(dir: &Path) -> PathBuf {
    let world = dir.join("world");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    deper(&["synth", "--out", &s(&world), "--subjects", "4", "--images", "10", "--seed", "3"]);
    deper(&["dataset", "split", &s(&world), "--unseen", "s03", "--shots", "3"]);
    deper(&["features", "extract", "--data", &s(&world)]);
    let config = dir.join("config.json");
    std::fs::write(&config, r#"{"model": {"d_model": 32, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1}}"#)
        .unwrap();
    let run = dir.join("run");
    let (data, out, cfg, vlm) = (s(&world), s(&run), s(&config), s(&fixture_vlm()));
    let args = ["train", "stage1", "--data", &data, "--out", &out, "--config", &cfg, "--epochs", "1"];
    deper(&[&args[..], &["--text-embeddings", &vlm]].concat());
    run
}

fn trajectory(x: f64) -> Trajectory {
    let step = |k: usize| AttentionStep {
        bbox: BBox::from_corners(x + 0.1 * k as f64, 0.2, x + 0.1 * k as f64 + 0.3, 0.6),
        duration: 0.4,
        start: None,
        words: vec![],
    };
    Trajectory { source: TrajectorySource::Mouse, steps: (0..3).map(step).collect() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_computes_z_s_for_a_vlm_text_encoder() {
    let work = tempfile::tempdir().unwrap();
    let run = vlm_text_run(work.path());
    let assets = EmbedderAssets::load(&run).unwrap();
    assert!(!assets.in_page, "the page cannot load a VLM's table");
    let (dim, version) = (assets.dim, assets.version.clone());
    let data = work.path().join("data");
    let mut settings = ServerSettings::new(&data);
    settings.embedder = Some(Arc::new(assets));
    let server = common::InProcess::start(settings).await;
    let (api, token, r) = (&server.api, server.token.clone(), server.r());

    let (status, manifest) = api.get("/api/embedder", None).await;
    assert_eq!((status, &manifest["in_page"]), (200, &json!(false)), "{manifest}");

    let (_, study) = api.post("/api/studies", r, &json!({"title": "VLM text"})).await;
    let study = study["id"].as_i64().unwrap();
    let image_png = png(24, 24, 5);
    let (status, stim) = api.upload(&token, image_png.clone()).await;
    assert_eq!(status, 201, "{stim}");
    let image = stim["sha256"].as_str().unwrap().to_string();
    assert_eq!(api.post(&format!("/api/studies/{study}/stimuli"), r, &json!({"stimulus_id": stim["id"]})).await.0, 200);
    let (_, joined) = api.post(&format!("/api/studies/{study}/join"), None, &json!({})).await;
    let session = joined["session_id"].as_i64().unwrap();
    let session_token = joined["token"].as_str().unwrap();

    let captions = ["A red circle on the left, then a blue square.", ""];
    let triplets: Vec<serde_json::Value> = captions
        .iter()
        .enumerate()
        .map(|(k, c)| json!({"image": image, "caption": c, "trajectory": trajectory(0.1 * k as f64)}))
        .collect();
    let path = format!("/api/sessions/{session}/z_s");
    let (status, body) = api.post(&path, None, &json!({"triplets": triplets})).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = api.post(&path, Some(session_token), &json!({"triplets": []})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = api.post(&path, Some(session_token), &json!({"triplets": triplets})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["backend"].as_str(), body["encoder_version"].as_str()), (Some("server"), Some(version.as_str())));
    let z_s: Vec<f32> = serde_json::from_value(body["z_s"].clone()).unwrap();
    assert_eq!(z_s.len(), dim);

    // The same z_s natively: the stimulus's pixel-stats features through the run's encoder.
    let file = work.path().join("stimulus.png");
    std::fs::write(&file, &image_png).unwrap();
    let features = deper_train::features::pixel_stats(&file).unwrap();
    let encoder = Encoder::<burn::backend::NdArray>::open(&run, &Default::default()).unwrap();
    let host: Vec<HostTriplet> = captions
        .iter()
        .enumerate()
        .map(|(k, c)| HostTriplet {
            features: features.clone(),
            caption: c.to_string(),
            trajectory: trajectory(0.1 * k as f64),
        })
        .collect();
    let native = encoder.mean_z_s(&host).unwrap();
    let diff = native.iter().zip(&z_s).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-6, "server and native z_s differ by {diff}");

    // The page stores it as its own.
    let upload = json!({"z_s": z_s, "backend": "server", "encoder_version": version, "triplets": 2});
    let (status, body) = api.post(&format!("/api/sessions/{session}/embedding"), Some(session_token), &upload).await;
    assert_eq!(status, 201, "{body}");

    server.stop().await;
}
