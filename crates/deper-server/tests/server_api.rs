//! The study server over HTTP: a real server on 127.0.0.1 port 0 per test, on SQLite always
//! and on PostgreSQL when `DEPER_TEST_POSTGRES_URL` is set (a fresh database per test).

#![allow(clippy::unwrap_used)] // a failing call should fail the test loudly

mod common;

use common::{message, png, Api};
use deper_server::server::{launch, ServerSettings, TOKEN_FILE};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A running server; stops when dropped.
struct Server {
    api: Api,
    token: String,
    data: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    async fn start(db_url: Option<String>) -> Self {
        let data = tempfile::tempdir().unwrap();
        Self::start_in(data, db_url).await
    }

    async fn start_in(data: tempfile::TempDir, db_url: Option<String>) -> Self {
        let mut settings = ServerSettings::new(data.path());
        settings.db_url = db_url;
        settings.web_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        settings.limits.max_samples_per_batch = 1000;
        settings.limits.max_body_bytes = 256 << 10;
        settings.limits.max_upload_bytes = 64 << 10;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(launch(settings, listener, async move {
            let _ = rx.await;
        }));
        let api = Api::new(&format!("http://{addr}"));
        let started = Instant::now();
        loop {
            if let Ok(r) = api.http.get(api.url("/healthz")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30), "server did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let token = std::fs::read_to_string(data.path().join(TOKEN_FILE)).unwrap().trim().to_string();
        Self { api, token, data, stop: Some(tx), task: Some(task) }
    }

    fn r(&self) -> Option<&str> {
        Some(&self.token)
    }

    async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data, dir)
    }

    /// A study with `n` images, ready to join.
    async fn study(&self, n: u8) -> (i64, Vec<Value>) {
        let (status, study) = self
            .api
            .post(
                "/api/studies",
                self.r(),
                &json!({"title": "Pointing study", "instructions": "Point while you describe.", "consent": "OK?",
                        "capture_mode": "mouse", "description_mode": "narrative"}),
            )
            .await;
        assert_eq!(status, 201, "{study}");
        let id = study["id"].as_i64().unwrap();
        let mut stimuli = Vec::new();
        for seed in 0..n {
            let (status, stim) = self.api.upload(&self.token, png(12, 10, seed + 100 * (id as u8))).await;
            assert_eq!(status, 201, "{stim}");
            let (status, order) = self
                .api
                .post(&format!("/api/studies/{id}/stimuli"), self.r(), &json!({"stimulus_id": stim["id"]}))
                .await;
            assert_eq!(status, 200, "{order}");
            stimuli.push(stim);
        }
        (id, stimuli)
    }

    async fn join(&self, study: i64) -> (i64, String) {
        let (status, joined) = self.api.post(&format!("/api/studies/{study}/join"), None, &json!({})).await;
        assert_eq!(status, 201, "{joined}");
        (joined["session_id"].as_i64().unwrap(), joined["token"].as_str().unwrap().to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Pointer samples resting at two places for 0.5 s each, 50 Hz.
fn samples(offset: f64) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..25 {
        out.push(json!({"x": 0.2 + offset, "y": 0.3, "t": i as f64 * 0.02, "source": "mouse"}));
    }
    for i in 0..25 {
        out.push(json!({"x": 0.7, "y": 0.6 + offset, "t": 0.6 + i as f64 * 0.02, "source": "mouse"}));
    }
    out
}

fn unzip(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        out.insert(f.name().to_string(), buf);
    }
    out
}

async fn participant_completes_study_and_export_holds_the_samples(s: &Server) {
    let (study, stimuli) = s.study(2).await;
    // Editing the study keeps its images.
    let edit = json!({"title": "Pointing study (v2)", "instructions": "Point, then describe.", "capture_mode": "mouse",
                      "description_mode": "narrative", "settings": {"trial_seconds": 30}});
    let (status, edited) = s.api.call(reqwest::Method::PUT, &format!("/api/studies/{study}"), s.r(), Some(&edit)).await;
    assert_eq!(status, 200, "{edited}");
    let (_, detail) = s.api.get(&format!("/api/studies/{study}"), s.r()).await;
    assert_eq!((&detail["title"], &detail["settings"]["trial_seconds"]), (&json!("Pointing study (v2)"), &json!(30)));
    assert_eq!(detail["stimuli"].as_array().unwrap().len(), 2);

    let (sid, tok) = s.join(study).await;
    let (status, cal) = s
        .api
        .post(&format!("/api/sessions/{sid}/calibration"), Some(&tok), &json!({"points": 9, "error_px": 31.5}))
        .await;
    assert_eq!(status, 201, "{cal}");
    let mut sent: Vec<(String, Vec<Value>)> = Vec::new();
    let mut trials = 0;
    loop {
        let (status, next) = s.api.get(&format!("/api/sessions/{sid}/next"), Some(&tok)).await;
        assert_eq!(status, 200, "{next}");
        if next["done"] == true {
            break;
        }
        let trial = next["trial"].as_u64().unwrap();
        assert_eq!(next["stimulus"]["sha256"], stimuli[trial as usize]["sha256"]);
        // The image is served to the participant.
        let img = s.api.http.get(s.api.url(next["stimulus"]["url"].as_str().unwrap())).send().await.unwrap();
        assert_eq!(img.status(), 200);
        assert!(img.headers()["cache-control"].to_str().unwrap().contains("immutable"));
        let all = samples(0.05 * trial as f64);
        for (b, part) in all.chunks(20).enumerate() {
            let batch = json!({"batch_id": format!("t{trial}-b{b}"), "trial": trial, "samples": part});
            let (status, ack) = s.api.post(&format!("/api/sessions/{sid}/samples"), Some(&tok), &batch).await;
            assert_eq!(status, 200, "{ack}");
            assert_eq!((ack["stored"].as_u64(), &ack["duplicate"]), (Some(part.len() as u64), &json!(false)));
        }
        let text = format!("first a thing on the left, then one at the bottom right ({trial})");
        let d = json!({"trial": trial, "text": text,
                       "utterances": [{"utterance": text, "start_time": 0.0, "end_time": 1.1}]});
        let (status, described) = s.api.post(&format!("/api/sessions/{sid}/descriptions"), Some(&tok), &d).await;
        assert_eq!(status, 200, "{described}");
        assert_eq!(described["next_trial"].as_u64(), Some(trial + 1));
        sent.push((stimuli[trial as usize]["sha256"].as_str().unwrap().to_string(), all));
        trials += 1;
    }
    assert_eq!(trials, 2);
    let (status, fin) = s.api.post(&format!("/api/sessions/{sid}/finish"), Some(&tok), &json!({})).await;
    assert_eq!(status, 200, "{fin}");
    let code = fin["completion_code"].as_str().unwrap().to_string();
    assert!(code.len() >= 8, "{code}");
    let (_, again) = s.api.post(&format!("/api/sessions/{sid}/finish"), Some(&tok), &json!({})).await;
    assert_eq!(again["completion_code"], code.as_str());

    let (status, sessions) = s.api.get(&format!("/api/studies/{study}/sessions"), s.r()).await;
    assert_eq!(status, 200);
    assert_eq!(sessions[0]["state"], "finished");
    let participant = sessions[0]["participant"].as_str().unwrap().to_string();
    assert!(sessions[0].get("token_hash").is_none(), "token hashes must not leave the server");

    // Dataset export as a zip: the raw samples are exactly those sent.
    let resp = s
        .api
        .http
        .get(s.api.url(&format!("/api/studies/{study}/export.zip?format=dataset")))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let files = unzip(&resp.bytes().await.unwrap());
    for name in ["dataset.json", "triplets.jsonl", "samples.jsonl"] {
        assert!(files.contains_key(name), "{name} missing from {:?}", files.keys().collect::<Vec<_>>());
    }
    assert_eq!(files.keys().filter(|k| k.starts_with("images/")).count(), 2);
    let raw = String::from_utf8(files["samples.jsonl"].clone()).unwrap();
    let mut got: Vec<Value> = raw.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    got.sort_by_key(|l| l["triplet"].as_str().unwrap().to_string());
    let mut want: Vec<(String, Vec<Value>)> =
        sent.iter().map(|(sha, v)| (format!("study-{study}/{sha}/{participant}"), v.clone())).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), want.len());
    for (line, (id, samples)) in got.iter().zip(&want) {
        assert_eq!(line["triplet"], id.as_str());
        assert_eq!(&line["samples"].as_array().unwrap()[..], &samples[..]);
    }
    let triplets = String::from_utf8(files["triplets.jsonl"].clone()).unwrap();
    for line in triplets.lines() {
        let t: deper_core::Triplet = serde_json::from_str(line).unwrap();
        assert_eq!(t.subject, participant);
        assert_eq!(t.trajectory.steps.len(), 2, "two rests, two dwell steps: {:?}", t.trajectory);
    }

    // Export into a server folder, registered as an artifact; it opens as a dataset.
    let (status, out) = s.api.post(&format!("/api/studies/{study}/export"), s.r(), &json!({"format": "dataset"})).await;
    assert_eq!(status, 201, "{out}");
    let ds = deper_core::dataset::Dataset::open(Path::new(out["path"].as_str().unwrap())).unwrap();
    assert_eq!(ds.load_triplets().unwrap().len(), 2);
    assert_eq!(out["report"]["samples"], 100);
    let art = out["artifact"]["id"].as_i64().unwrap();
    let zipped = s
        .api
        .http
        .get(s.api.url(&format!("/api/artifacts/{art}/download")))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.status(), 200);
    assert!(unzip(&zipped.bytes().await.unwrap()).contains_key("triplets.jsonl"));

    // LN export: the importer reads it back with the same triplets.
    let (status, ln) = s.api.post(&format!("/api/studies/{study}/export"), s.r(), &json!({"format": "ln"})).await;
    assert_eq!(status, 201, "{ln}");
    let ln_file = Path::new(ln["path"].as_str().unwrap()).join("narratives.jsonl");
    let mut imported = Vec::new();
    deper_core::import::ln::import_ln(
        &ln_file,
        &Default::default(),
        &mut |t| {
            imported.push(t);
            Ok(())
        },
        &mut |_| {},
    )
    .unwrap();
    let mut exported = ds.load_triplets().unwrap();
    exported.sort_by(|a, b| a.id.cmp(&b.id));
    imported.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(imported, exported);
}

async fn auth_is_enforced(s: &Server) {
    let (study, _) = s.study(1).await;
    let (status, body) = s.api.get("/api/studies", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("Bearer"), "{body}");
    let (status, body) = s.api.get("/api/studies", Some("not-the-token")).await;
    assert_eq!((status, message(&body).contains("wrong researcher token")), (401, true), "{body}");
    let (a, tok_a) = s.join(study).await;
    let (b, tok_b) = s.join(study).await;
    // A session token is not a researcher token.
    let (status, _) = s.api.get("/api/studies", Some(&tok_a)).await;
    assert_eq!(status, 401);
    let (status, _) = s.api.get(&format!("/api/studies/{study}/sessions"), Some(&tok_a)).await;
    assert_eq!(status, 401);
    // Nor does it open another session.
    let (status, body) = s.api.get(&format!("/api/sessions/{b}/next"), Some(&tok_a)).await;
    assert_eq!(status, 403, "{body}");
    let batch = json!({"batch_id": "x", "trial": 0, "samples": samples(0.0)});
    let (status, _) = s.api.post(&format!("/api/sessions/{b}/samples"), Some(&tok_a), &batch).await;
    assert_eq!(status, 403);
    let (status, _) = s.api.post(&format!("/api/sessions/{a}/samples"), None, &batch).await;
    assert_eq!(status, 401);
    let (status, _) = s.api.post(&format!("/api/sessions/{a}/finish"), Some(&s.token), &json!({})).await;
    assert_eq!(status, 403, "the researcher token is not a session token");
    let (status, _) = s.api.post(&format!("/api/sessions/{b}/finish"), Some(&tok_b), &json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = s.api.get("/api/jobs", None).await;
    assert_eq!(status, 401);
}

async fn limits_and_bad_input_give_clear_errors(s: &Server) {
    let (study, _) = s.study(1).await;
    let (sid, tok) = s.join(study).await;
    let path = format!("/api/sessions/{sid}/samples");

    // Too many samples in a batch.
    let many: Vec<Value> =
        (0..1001).map(|i| json!({"x": 0.5, "y": 0.5, "t": i as f64 * 0.01, "source": "mouse"})).collect();
    let (status, body) = s.api.post(&path, Some(&tok), &json!({"batch_id": "big", "trial": 0, "samples": many})).await;
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).contains("too many samples"), "{body}");

    // A body over the limit.
    let huge = json!({"batch_id": "huge", "trial": 0, "samples": [], "pad": "x".repeat(300 << 10)});
    let (status, body) = s.api.post(&path, Some(&tok), &huge).await;
    assert_eq!(status, 413, "{body}");
    assert!(message(&body).contains("too large"), "{body}");

    // Malformed JSON, wrong fields, a trial that does not exist.
    let resp = s
        .api
        .http
        .post(s.api.url(&path))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body("{\"batch_id\": \"a\", \"trial\": 0, \"samples\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(message(&body).contains("malformed JSON"), "{body}");
    let (status, body) =
        s.api.post(&path, Some(&tok), &json!({"batch_id": "a", "trial": 0, "samples": [{"x": 1}]})).await;
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).contains("samples"), "{body}");
    let (status, body) = s.api.post(&path, Some(&tok), &json!({"batch_id": "a", "trial": 7, "samples": []})).await;
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).contains("trial"), "{body}");

    // Uploads: not an image, a broken JPEG, a real JPEG, too large.
    let (status, body) = s.api.upload(&s.token, b"just text".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).contains("PNG"), "{body}");
    let (status, body) = s.api.upload(&s.token, b"\xff\xd8\xff\xe0\0\x10JFIF".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).contains("JPEG"), "{body}");
    // A real JPEG is accepted and stored as PNG.
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(30, 20, |x, y| image::Rgb([x as u8 * 8, y as u8 * 12, 99]))
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let (status, body) = s.api.upload(&s.token, jpeg.into_inner()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["width"].as_u64(), body["height"].as_u64()), (Some(30), Some(20)), "{body}");
    let (status, body) = s.api.upload(&s.token, vec![0u8; 100 << 10]).await;
    assert_eq!(status, 413, "{body}");
    // Multipart uploads work too.
    let form =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(png(5, 5, 77)).file_name("a.png"));
    let resp = s.api.http.post(s.api.url("/api/stimuli")).bearer_auth(&s.token).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), 201);

    // Bad study input.
    let (status, body) = s.api.post("/api/studies", s.r(), &json!({"title": "x", "capture_mode": "telepathy"})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = s.api.get("/api/studies/999999", s.r()).await;
    assert_eq!(status, 404, "{body}");

    // The server keeps serving.
    let (status, _) = s.api.get("/healthz", None).await;
    assert_eq!(status, 200);
}

async fn sample_retries_are_idempotent(s: &Server) {
    let (study, _) = s.study(1).await;
    let (sid, tok) = s.join(study).await;
    let path = format!("/api/sessions/{sid}/samples");
    let batch = json!({"batch_id": "b-1", "trial": 0, "samples": samples(0.0)});
    let (status, first) = s.api.post(&path, Some(&tok), &batch).await;
    assert_eq!(status, 200, "{first}");
    for _ in 0..3 {
        let (status, ack) = s.api.post(&path, Some(&tok), &batch).await;
        assert_eq!(status, 200);
        assert_eq!(
            (&ack["batch_id"], &ack["stored"], &ack["duplicate"]),
            (&first["batch_id"], &first["stored"], &json!(true))
        );
    }
    // Concurrent retries of a new batch.
    let batch2 = json!({"batch_id": "b-2", "trial": 0, "samples": samples(0.1)});
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (api, path, tok, batch2) = (s.api.clone(), path.clone(), tok.clone(), batch2.clone());
        tasks.push(tokio::spawn(async move { api.post(&path, Some(&tok), &batch2).await }));
    }
    let mut fresh = 0;
    for t in tasks {
        let (status, ack) = t.await.unwrap();
        assert_eq!(status, 200, "{ack}");
        fresh += usize::from(ack["duplicate"] == false);
    }
    assert_eq!(fresh, 1);
    // The same id with other samples is refused.
    let other = json!({"batch_id": "b-1", "trial": 0, "samples": &samples(0.0)[..3]});
    let (status, body) = s.api.post(&path, Some(&tok), &other).await;
    assert_eq!(status, 409, "{body}");

    let (status, stored) = s.api.get(&format!("/api/studies/{study}/sessions/{sid}/samples"), s.r()).await;
    assert_eq!(status, 200);
    let stored = stored.as_array().unwrap();
    assert_eq!(stored.len(), 100);
    let keys: HashSet<(String, u64)> =
        stored.iter().map(|x| (x["batch_id"].as_str().unwrap().to_string(), x["seq"].as_u64().unwrap())).collect();
    assert_eq!(keys.len(), 100);
}

async fn static_files_health_and_caption(s: &Server) {
    let resp = s.api.http.get(s.api.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert!(resp.text().await.unwrap().contains("<html"));
    let resp = s.api.http.get(s.api.url("/web/style.css")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s.api.http.get(s.api.url("/web/nope.css")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let (status, body) = s.api.post("/api/caption", s.r(), &json!({"image": "ab"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(message(&body).contains("no captioner loaded"), "{body}");
}

/// A small synthetic dataset (no splits or features: the job makes them).
fn synth_dataset(dir: &Path) -> PathBuf {
    let data = dir.join("world");
    let config = deper_synth::SynthConfig { subjects: 4, images: 16, coverage: 1.0, seed: 3, ..Default::default() };
    deper_synth::generate(&config, &data, &mut |_, _| {}).unwrap();
    data
}

fn tiny_params(dataset: &Path, epochs: usize) -> Value {
    json!({
        "dataset": dataset,
        "epochs": epochs,
        "batch_size": 8,
        "config": {"model": {"d_model": 32, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "token_dim": 16}}
    })
}

/// Reads the job's event stream to its end; returns (event name, data) pairs.
async fn events(s: &Server, job: i64) -> Vec<(String, Value)> {
    let mut resp =
        s.api.http.get(s.api.url(&format!("/api/jobs/{job}/events"))).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(300), resp.chunk()).await.unwrap().unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            }
        }
        if !data.is_empty() {
            out.push((name, serde_json::from_str(&data).unwrap()));
        }
    }
    out
}

async fn training_job_runs_reports_progress_and_yields_a_checkpoint(s: &Server) {
    let work = tempfile::tempdir().unwrap();
    let data = synth_dataset(work.path());
    let (status, body) =
        s.api.post("/api/jobs", s.r(), &json!({"kind": "train_stage1", "params": {"epochs": 1}})).await;
    assert_eq!(status, 422, "params without a dataset: {body}");
    let (status, body) = s.api.post("/api/jobs", s.r(), &json!({"kind": "sing", "params": {}})).await;
    assert_eq!(status, 422, "{body}");
    // A misspelt model field over a preset is refused before queueing, and named.
    let params = json!({"dataset": "x", "preset": "tiny", "config": {"model": {"dropot": 0.0}}});
    let (status, body) = s.api.post("/api/jobs", s.r(), &json!({"kind": "train_stage1", "params": params})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("dropot"), "{body}");
    let params = json!({"dataset": "x", "preset": "huge"});
    let (status, body) = s.api.post("/api/jobs", s.r(), &json!({"kind": "train_stage1", "params": params})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("`preset` must be `paper` or `tiny`, not `huge`"), "{body}");

    // Features first, as their own job; training then finds them.
    let (status, job) =
        s.api.post("/api/jobs", s.r(), &json!({"kind": "features", "params": {"dataset": &data}})).await;
    assert_eq!(status, 201, "{job}");
    let evs = events(s, job["id"].as_i64().unwrap()).await;
    assert_eq!(evs.last().unwrap().1["state"], "succeeded", "{evs:?}");
    assert!(deper_train::features::load(&data, deper_train::features::PIXEL_STATS).is_ok());

    let (status, job) =
        s.api.post("/api/jobs", s.r(), &json!({"kind": "train_stage1", "params": tiny_params(&data, 2)})).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    let evs = events(s, id).await;
    // Browsers' EventSource cannot set headers: the stream also takes `?access_token=`.
    let resp =
        s.api.http.get(s.api.url(&format!("/api/jobs/{id}/events?access_token={}", s.token))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("event: end"));
    let resp = s.api.http.get(s.api.url(&format!("/api/jobs/{id}?access_token={}", s.token))).send().await.unwrap();
    assert_eq!(resp.status(), 401, "query tokens are for event streams only");
    let (last_name, last) = evs.last().unwrap();
    assert_eq!(last_name, "end");
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["progress"], 1.0);
    assert!(last["log"].as_str().unwrap().contains("epoch 2"), "{last}");
    let progress: Vec<f64> =
        evs.iter().filter(|(n, _)| n == "progress").map(|(_, j)| j["progress"].as_f64().unwrap()).collect();
    assert!(progress.len() >= 2, "expected several progress events: {evs:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");

    let (status, full) = s.api.get(&format!("/api/jobs/{id}"), s.r()).await;
    assert_eq!(status, 200);
    let arts = full["artifacts"].as_array().unwrap();
    let ckpt = arts.iter().find(|a| a["kind"] == "checkpoint").unwrap();
    let resp = s
        .api
        .http
        .get(s.api.url(&format!("/api/artifacts/{}/download", ckpt["id"])))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    assert!(!bytes.is_empty());
    assert!(!ckpt["path"].as_str().unwrap().starts_with('/'), "paths inside the data folder are stored relative");
    assert_eq!(ckpt["sha256"].as_str().unwrap(), deper_store::sha256_hex(&bytes));
    let (_, jobs) = s.api.get("/api/jobs", s.r()).await;
    assert_eq!(jobs.as_array().unwrap().len(), 2);
}

async fn cancel_stops_a_running_job(s: &Server) {
    let work = tempfile::tempdir().unwrap();
    let data = synth_dataset(work.path());
    let (status, job) =
        s.api.post("/api/jobs", s.r(), &json!({"kind": "train_stage1", "params": tiny_params(&data, 500)})).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    // A second job waits in the queue (one job at a time per device) and is cancelled at once.
    let (_, queued) =
        s.api.post("/api/jobs", s.r(), &json!({"kind": "train_stage1", "params": tiny_params(&data, 1)})).await;
    let started = Instant::now();
    loop {
        let (_, j) = s.api.get(&format!("/api/jobs/{id}"), s.r()).await;
        if j["progress_detail"]["event"] == "batch" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "job never started training: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = s.api.post(&format!("/api/jobs/{}/cancel", queued["id"]), s.r(), &json!({})).await;
    assert_eq!((status, &body["state"]), (200, &json!("cancelled")), "{body}");
    let asked = Instant::now();
    let (status, body) = s.api.post(&format!("/api/jobs/{id}/cancel"), s.r(), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    loop {
        let (_, j) = s.api.get(&format!("/api/jobs/{id}"), s.r()).await;
        if j["state"] == "cancelled" {
            break;
        }
        assert!(asked.elapsed() < Duration::from_secs(5), "job not cancelled within 5 s: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, q) = s.api.get(&format!("/api/jobs/{}", queued["id"]), s.r()).await;
    assert_eq!(q["state"], "cancelled", "a cancelled queued job never runs: {q}");
}

/// Training straight from a study: the job exports it, splits it, extracts features and trains.
async fn training_job_on_a_study(s: &Server) {
    let (study, _) = s.study(8).await;
    for p in 0..4 {
        let (sid, tok) = s.join(study).await;
        for trial in 0..8u32 {
            let batch = json!({"batch_id": format!("b{trial}"), "trial": trial,
                               "samples": samples(0.02 * f64::from(trial) + 0.01 * p as f64)});
            let (status, ack) = s.api.post(&format!("/api/sessions/{sid}/samples"), Some(&tok), &batch).await;
            assert_eq!(status, 200, "{ack}");
            let d = json!({"trial": trial, "text": format!("participant {p} sees a red thing then a blue thing")});
            let (status, body) = s.api.post(&format!("/api/sessions/{sid}/descriptions"), Some(&tok), &d).await;
            assert_eq!(status, 200, "{body}");
        }
        s.api.post(&format!("/api/sessions/{sid}/finish"), Some(&tok), &json!({})).await;
    }
    let params = json!({"study_id": study, "epochs": 1, "batch_size": 8,
        "config": {"model": {"d_model": 32, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "token_dim": 16}}});
    let (status, job) = s.api.post("/api/jobs", s.r(), &json!({"kind": "train_stage1", "params": params})).await;
    assert_eq!(status, 201, "{job}");
    let evs = events(s, job["id"].as_i64().unwrap()).await;
    let (_, last) = evs.last().unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
}

macro_rules! suite {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let s = super::Server::start(None).await;
                    super::$case(&s).await;
                    s.shutdown().await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(base) = deper_store::testing::postgres_url() else {
                        eprintln!("DEPER_TEST_POSTGRES_URL not set: PostgreSQL case skipped");
                        return;
                    };
                    let url = deper_store::testing::fresh_postgres_database(&base).await.unwrap();
                    let s = super::Server::start(Some(url)).await;
                    super::$case(&s).await;
                    s.shutdown().await;
                }
            )+
        }
    };
}

suite!(
    participant_completes_study_and_export_holds_the_samples,
    auth_is_enforced,
    limits_and_bad_input_give_clear_errors,
    sample_retries_are_idempotent,
    static_files_health_and_caption,
    training_job_runs_reports_progress_and_yields_a_checkpoint,
    cancel_stops_a_running_job,
    training_job_on_a_study,
);

/// A job cut off by a stopped server is failed on the next start, never left `running`;
/// the researcher token survives restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_fails_jobs_left_running_and_keeps_the_token() {
    let data = tempfile::tempdir().unwrap();
    {
        let store = deper_store::open(data.path().join("deper.db").to_str().unwrap()).await.unwrap();
        store.create_job("features", &json!({"dataset": "x"}), "other-device").await.unwrap();
        store.claim_next_job("other-device").await.unwrap().unwrap();
    }
    let s = Server::start_in(data, None).await;
    let token = s.token.clone();
    let (status, job) = s.api.get("/api/jobs/1", s.r()).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!((&job["state"], &job["error"]), (&json!("failed"), &json!("server restarted")));
    let data = s.shutdown().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join(TOKEN_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token file must be private");
    }
    let s = Server::start_in(data, None).await;
    assert_eq!(s.token, token);
    let (status, _) = s.api.get("/api/studies", s.r()).await;
    assert_eq!(status, 200);
    s.shutdown().await;
}

/// `/healthz` follows the database: 503 while PostgreSQL refuses connections, 200 again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_the_database_is_unreachable() {
    use sqlx::Connection;
    let Some(base) = deper_store::testing::postgres_url() else {
        eprintln!("DEPER_TEST_POSTGRES_URL not set: PostgreSQL case skipped");
        return;
    };
    let url = deper_store::testing::fresh_postgres_database(&base).await.unwrap();
    let name = url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    let s = Server::start(Some(url)).await;
    let (status, _) = s.api.get("/healthz", None).await;
    assert_eq!(status, 200);

    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).execute(&mut admin).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();
    let (status, body) = s.api.get("/healthz", None).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = s.api.get("/api/studies", s.r()).await;
    assert_eq!(status, 500, "{body}");

    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).execute(&mut admin).await.unwrap();
    let (status, _) = s.api.get("/healthz", None).await;
    assert_eq!(status, 200);
    s.shutdown().await;
}
