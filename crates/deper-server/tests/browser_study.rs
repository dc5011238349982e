//! The browser study end to end: a tiny demo is built, `deper serve` opens it (demo study, in-page
//! subject encoder, caption API), and a scripted participant in real headless Chromium
//! (tests/browser/study.mjs, playwright-core) takes the study with the mouse, reloading the page in
//! the middle of a trial. The database must then hold exactly the pointer positions the script
//! produced (count, order and coordinates within half a CSS pixel), the page must have computed a
//! z_s on WebGPU or the CPU fallback, and personalized captions must have streamed in. Screenshots of
//! the study page, the preview and the dashboard go to docs/screenshots/.
//!
//! The server side of the same setup runs without a browser: the demo study (created once, kept
//! across restarts), the encoder files and per-image features the page downloads (equal to the
//! native feature cache and the stage-2 run's fine-tuned encoder), and the caption API opened to a
//! participant of a study that shows the preview, and only to them.
//!
//! The browser test needs /usr/bin/chromium, node with tests/browser/node_modules (`npm ci --prefix tests/browser`) and
//! the wasm build in web/pkg (`bash web/build.sh`). Without them the test says so and passes, unless
//! DEPER_REQUIRE_BROWSER=1 (CI sets it), where it fails.

#![allow(clippy::unwrap_used)] // a failing call should fail the test loudly

mod common;

use common::{png, spawn_serve, Api};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The paper's K = 5: the preview (and the in-page z_s) comes after the fifth description.
const STUDY_IMAGES: usize = 5;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// What is missing for the browser tests, if anything.
fn missing_prerequisites(root: &Path) -> Vec<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut missing = Vec::new();
    if !Path::new(&chromium).is_file() {
        missing.push(format!("{chromium} (apt install chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node".into());
    }
    if !root.join("tests/browser/node_modules/playwright-core").is_dir() {
        missing.push("tests/browser/node_modules (npm ci --prefix tests/browser)".into());
    }
    if !root.join("web/pkg/deper_web.js").is_file() {
        missing.push("web/pkg (bash web/build.sh)".into());
    }
    missing
}

/// One tiny demo (as tests/personal.rs makes it) for every test here, built by the first that asks.
fn tiny_demo() -> &'static Path {
    static DEMO: OnceLock<PathBuf> = OnceLock::new();
    DEMO.get_or_init(|| {
        // Kept for the whole test process (both tests read it); the OS temp folder cleans it.
        let dir = tempfile::tempdir().unwrap().keep();
        let out = dir.join("demo");
        let demo = Command::new(env!("CARGO_BIN_EXE_deper"))
            .args(["demo", "--images", "24", "--stage1-epochs", "1", "--captioner-epochs", "1", "--stage2-epochs", "1"])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(demo.status.success(), "deper demo: {}", String::from_utf8_lossy(&demo.stderr));
        out
    })
}

/// A fresh data folder whose `demo/` is a copy of the shared tiny demo (`deper serve` writes into it).
fn data_with_demo(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    copy_dir(tiny_demo(), &data.join("demo"));
    data
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The repository root when the browser tests can run; `None` (after a loud skip line) when a
/// prerequisite is missing, and a failure instead where DEPER_REQUIRE_BROWSER=1.
fn browser_ready(test: &str) -> Option<PathBuf> {
    let root = repo_root();
    let missing = missing_prerequisites(&root);
    if missing.is_empty() {
        return Some(root);
    }
    let message = format!("{test} needs: {}", missing.join(", "));
    assert!(std::env::var("DEPER_REQUIRE_BROWSER").as_deref() != Ok("1"), "{message}");
    eprintln!("SKIPPED: {message}");
    None
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path, web: &Path) -> Server {
    serve_with(data, web, &[])
}

fn serve_with(data: &Path, web: &Path, extra: &[&str]) -> Server {
    let images = STUDY_IMAGES.to_string();
    let mut args: Vec<&OsStr> =
        ["--addr", "127.0.0.1:0", "--demo-study-images", images.as_str()].into_iter().map(OsStr::new).collect();
    args.extend(extra.iter().map(OsStr::new));
    args.extend([OsStr::new("--data"), data.as_os_str(), OsStr::new("--web"), web.as_os_str()]);
    let (child, base) = spawn_serve(&args, Stdio::inherit());
    Server { child, base }
}

fn get(base: &str, path: &str, token: &str) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json::<Value>().await.unwrap()
    })
}

fn wait_healthy(base: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(common::wait_healthy(&Api::new(base), Duration::from_secs(60)));
}

#[test]
fn a_scripted_participant_completes_the_demo_study_in_chromium() {
    let Some(root) = browser_ready("browser study test") else { return };
    let dir = tempfile::tempdir().unwrap();
    // `deper serve` finds the finished demo and serves it as it is.
    let data = data_with_demo(dir.path());

    let server = serve(&data, &root);
    wait_healthy(&server.base);
    let token = std::fs::read_to_string(data.join("researcher-token")).unwrap().trim().to_string();
    let demo_info = get(&server.base, "/api/demo", &token);
    let study_id = demo_info["study_id"].as_i64().unwrap();
    let manifest = get(&server.base, "/api/embedder", &token);

    let shots = root.join("docs/screenshots");
    let out = Command::new("node")
        .arg(root.join("tests/browser/study.mjs"))
        .args(["--base", &server.base, "--token", &token, "--moves", "30", "--reload-trial", "1", "--shots"])
        .arg(&shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!("study.mjs printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(result["ok"], true, "scripted participant failed: {}\npage log: {}", result["error"], result["log"]);
    assert_eq!(result["trials"], STUDY_IMAGES as u64);
    assert_eq!(result["reloads"], 1);
    assert_eq!(result["state"]["pending"], 0, "batches left unsent");
    assert_eq!(result["state"]["refused"], 0, "batches refused");
    let code = result["completion_code"].as_str().unwrap();
    assert!(!code.is_empty() && code != "…");

    // The database holds exactly the positions the script produced, in order.
    let session_id = result["state"]["session_id"].as_i64().unwrap();
    let sessions = get(&server.base, &format!("/api/studies/{study_id}/sessions"), &token);
    let session = sessions.as_array().unwrap().iter().find(|s| s["id"] == session_id).unwrap();
    assert_eq!(session["state"], "finished");
    assert_eq!(session["completion_code"], code);
    let mut stored: Vec<Value> =
        get(&server.base, &format!("/api/studies/{study_id}/sessions/{session_id}/samples"), &token)
            .as_array()
            .unwrap()
            .clone();
    stored.sort_by(|a, b| {
        (a["trial"].as_u64(), a["t"].as_f64().unwrap())
            .partial_cmp(&(b["trial"].as_u64(), b["t"].as_f64().unwrap()))
            .unwrap()
    });
    let expected = result["expected"].as_array().unwrap();
    assert_eq!(stored.len(), expected.len(), "stored samples vs produced moves");
    for (i, (s, e)) in stored.iter().zip(expected).enumerate() {
        assert_eq!(s["trial"], e["trial"], "sample {i}: trial");
        assert_eq!(s["source"], "mouse");
        let half_pixel = 0.5 / e["px_per_unit"].as_f64().unwrap();
        for axis in ["x", "y"] {
            let (got, want) = (s[axis].as_f64().unwrap(), e[axis].as_f64().unwrap());
            assert!((got - want).abs() <= half_pixel + 1e-9, "sample {i}: {axis} stored {got}, produced {want}");
        }
    }
    // Times increase within each trial, across the reload too.
    for pair in stored.windows(2) {
        if pair[0]["trial"] == pair[1]["trial"] {
            assert!(pair[1]["t"].as_f64() > pair[0]["t"].as_f64(), "times not increasing: {pair:?}");
        }
    }

    // The page computed z_s itself and the captions streamed in.
    let backend = result["backend"].as_str().unwrap();
    assert!(backend == "webgpu" || backend == "cpu", "{backend}");
    let z = result["embedding"]["z_s"].as_array().unwrap_or_else(|| panic!("no z_s: {}", result["preview_status"]));
    assert_eq!(z.len() as u64, manifest["dim"].as_u64().unwrap());
    assert!(z.iter().all(|v| v.as_f64().is_some_and(f64::is_finite)));
    assert_eq!(result["embedding"]["count"], STUDY_IMAGES as u64);
    for which in ["generic", "personal"] {
        let text = result["captions"][which].as_str().unwrap_or_default();
        assert!(!text.is_empty() && text != "…" && !text.starts_with('('), "{which} caption: {text:?}");
    }
    // The browser benchmark (numbers, not assertions): capture cost per pointer event, time to a
    // ready compute device (wasm download + device), encoder load (download + weights), z_s of K = 5.
    let stats = &result["stats"];
    let per_event_us = stats["capture"]["ms"].as_f64().unwrap() * 1000.0 / stats["capture"]["events"].as_f64().unwrap();
    eprintln!(
        "browser bench ({backend}): capture {per_event_us:.1} µs/event over {} events; ready {:.0} ms after \
         navigation; encoder load {:.0} ms; z_s of {STUDY_IMAGES} triplets {:.0} ms",
        stats["capture"]["events"],
        stats["ready_ms"].as_f64().unwrap_or(f64::NAN),
        stats["load_ms"].as_f64().unwrap_or(f64::NAN),
        stats["embed_ms"].as_f64().unwrap_or(f64::NAN)
    );
    std::fs::write(shots.join("browser-bench.json"), serde_json::to_string_pretty(stats).unwrap() + "\n").unwrap();
    // The dashboard captioned in the participant's style by pseudonym (their stored z_s).
    let from_dashboard = result["dashboard_caption"].as_str().unwrap_or_default();
    assert!(!from_dashboard.is_empty() && !from_dashboard.starts_with("no z_s"), "{from_dashboard:?}");
    for shot in ["study.png", "describe.png", "preview.png", "dashboard.png"] {
        assert!(shots.join(shot).is_file(), "missing screenshot {shot}");
    }
}

#[test]
fn serve_opens_the_demo_study_with_the_encoder_files_features_and_participant_captions() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_with_demo(dir.path());
    let root = repo_root();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = serve(&data, &root);
    wait_healthy(&server.base);
    let api = Api::new(&server.base);
    let token = std::fs::read_to_string(data.join("researcher-token")).unwrap().trim().to_string();
    let demo = data.join("demo");
    let (study_id, stimuli) = runtime.block_on(async {
        let (status, info) = api.get("/api/demo", None).await;
        assert_eq!(status, 200, "{info}");
        let study_id = info["study_id"].as_i64().unwrap();
        assert_eq!(info["study_url"], format!("/?study={study_id}"));
        // What a participant sees before joining needs no token.
        let (status, brief) = api.get(&format!("/api/studies/{study_id}/brief"), None).await;
        assert_eq!(status, 200, "{brief}");
        assert_eq!(brief["settings"]["preview"], true);
        assert!(!brief["consent"].as_str().unwrap().is_empty());
        let (status, detail) = api.get(&format!("/api/studies/{study_id}"), Some(&token)).await;
        assert_eq!(status, 200);
        (study_id, detail["stimuli"].as_array().unwrap().clone())
    });
    assert_eq!(stimuli.len(), STUDY_IMAGES);

    // The encoder the page downloads is the stage-2 run's fine-tuned encoder, exported as a stage-1
    // run folder that native `deper embed` reads too.
    let encoder = demo.join("runs/deper/encoder");
    let manifest = runtime.block_on(async {
        let (status, manifest) = api.get("/api/embedder", None).await;
        assert_eq!(status, 200, "{manifest}");
        let model = api.http.get(api.url("/api/embedder/model.mpk")).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(model.as_ref(), std::fs::read(encoder.join("model.mpk")).unwrap(), "model.mpk");
        let (_, run) = api.get("/api/embedder/run.json", None).await;
        assert_eq!(run["stage"], "stage1");
        assert_eq!(run["config"]["model"]["d_model"], manifest["dim"]);
        manifest
    });
    assert_eq!(manifest["backbone"], "pixel-stats");
    let embed = |run: &Path, out: &Path| {
        let done = Command::new(env!("CARGO_BIN_EXE_deper"))
            .args(["embed", "--shots", "5", "--run"])
            .arg(run)
            .arg("--data")
            .arg(demo.join("world"))
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(done.status.success(), "deper embed: {}", String::from_utf8_lossy(&done.stderr));
        serde_json::from_str::<Value>(&std::fs::read_to_string(out).unwrap()).unwrap()
    };
    let fine_tuned = embed(&encoder, &dir.path().join("z_encoder.json"));
    let stage1 = embed(&demo.join("runs/stage1"), &dir.path().join("z_stage1.json"));
    let subject = fine_tuned["subjects"].as_object().unwrap().keys().next().unwrap().clone();
    assert_eq!(fine_tuned["dim"], manifest["dim"]);
    assert_ne!(
        fine_tuned["subjects"][&subject]["z_s"], stage1["subjects"][&subject]["z_s"],
        "the exported encoder is the stage-1 one: stage 2's fine-tuning is lost"
    );

    // Features of a study image equal the native feature cache of the same world image.
    let world = deper_core::dataset::Dataset::open(&demo.join("world")).unwrap();
    let cache = deper_train::features::load(&demo.join("world"), "pixel-stats").unwrap();
    let by_sha: std::collections::HashMap<String, String> = std::fs::read_dir(world.image_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (sha256_hex(&std::fs::read(&p).unwrap()), p.file_stem().unwrap().to_str().unwrap().to_string()))
        .collect();
    runtime.block_on(async {
        for stimulus in &stimuli[..2] {
            let sha = stimulus["sha256"].as_str().unwrap();
            let response = api.http.get(api.url(&format!("/api/images/{sha}/features"))).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-deper-grid"], "14,14,16");
            let bytes = response.bytes().await.unwrap();
            let values: Vec<f32> =
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let image_id = &by_sha[sha];
            assert_eq!(values, cache.read(image_id).unwrap(), "features of {image_id}");
        }
        let (status, _) = api.get(&format!("/api/images/{}/features", "0".repeat(64)), None).await;
        assert_eq!(status, 404);
        let (status, _) = api.get("/api/images/not-a-hash/features", None).await;
        assert_eq!(status, 404);
    });

    // A participant of the demo study (preview on) may ask for captions with their own z_s …
    let dim = manifest["dim"].as_u64().unwrap() as usize;
    let sha = stimuli[0]["sha256"].as_str().unwrap().to_string();
    runtime.block_on(async {
        let (status, joined) = api.post(&format!("/api/studies/{study_id}/join"), None, &json!({})).await;
        assert_eq!(status, 201, "{joined}");
        let (session, session_token) = (joined["session_id"].as_i64().unwrap(), joined["token"].as_str().unwrap());
        let persona: Vec<f32> = (0..dim).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
        let body = json!({"image": sha, "persona": persona, "max_new_tokens": 4});
        let ask = |token: String, session: Option<i64>| {
            let mut req = api.http.post(api.url("/api/captions")).bearer_auth(token).json(&body);
            if let Some(id) = session {
                req = req.header("x-deper-session", id.to_string());
            }
            req
        };
        let response = ask(session_token.to_string(), Some(session)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["personalized"], true, "{answer}");
        // … but not without naming the session, nor with another session's number.
        assert_eq!(ask(session_token.to_string(), None).send().await.unwrap().status(), 401);
        assert_eq!(ask(session_token.to_string(), Some(session + 1000)).send().await.unwrap().status(), 404);

        // The page stores the participant's z_s; the study's map shows it beside the demo world's
        // subjects, and captions can name the participant instead of sending a vector.
        let post_embedding = |z: Vec<f32>| {
            api.http
                .post(api.url(&format!("/api/sessions/{session}/embedding")))
                .bearer_auth(session_token)
                .json(&json!({"z_s": z, "backend": "cpu", "encoder_version": manifest["version"], "triplets": 5}))
                .send()
        };
        assert_eq!(post_embedding(vec![0.5; dim + 1]).await.unwrap().status(), 422);
        assert_eq!(post_embedding(vec![0.25; dim]).await.unwrap().status(), 201);
        let map: Value = api
            .http
            .get(api.url(&format!("/api/studies/{study_id}/embeddings")))
            .bearer_auth(session_token)
            .header("x-deper-session", session.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let points = map["points"].as_array().unwrap();
        let references = points.iter().filter(|p| p["kind"] == "reference").count();
        assert_eq!(references, fine_tuned["subjects"].as_object().unwrap().len(), "{map}");
        let own: Vec<&Value> = points.iter().filter(|p| p["session_id"] == session).collect();
        assert_eq!(own.len(), 1, "{map}");
        assert!(own[0]["x"].as_f64().unwrap().is_finite());
        let participant = joined["participant"].as_str().unwrap();
        for (subject, status) in [(participant, 200), (subject.as_str(), 200), ("nobody", 404)] {
            let body = json!({"image": sha, "subject": subject, "max_new_tokens": 3});
            let response =
                api.http.post(api.url("/api/captions")).bearer_auth(&token).json(&body).send().await.unwrap();
            assert_eq!(response.status(), status, "caption for subject {subject}");
        }

        // A study without the preview keeps the caption API to the researcher.
        let (status, quiet) =
            api.post("/api/studies", Some(&token), &json!({"title": "no preview", "settings": {}})).await;
        assert_eq!(status, 201, "{quiet}");
        let (_, stim) = api.upload(&token, png(32, 32, 3)).await;
        let attach = json!({"stimulus_id": stim["id"]});
        let (status, _) = api.post(&format!("/api/studies/{}/stimuli", quiet["id"]), Some(&token), &attach).await;
        assert_eq!(status, 200);
        let (_, other) = api.post(&format!("/api/studies/{}/join", quiet["id"]), None, &json!({})).await;
        let response =
            ask(other["token"].as_str().unwrap().to_string(), other["session_id"].as_i64()).send().await.unwrap();
        assert_eq!(response.status(), 403);
    });
    // Stage 2 and the evaluation as jobs through the API (paths relative to the data folder), and a
    // cancelled stage-2 job stops within seconds.
    runtime.block_on(async {
        let wait = |id: i64| {
            let api = api.clone();
            let token = token.clone();
            async move {
                let started = Instant::now();
                loop {
                    let (_, job) = api.get(&format!("/api/jobs/{id}"), Some(&token)).await;
                    if ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or("")) {
                        return job;
                    }
                    assert!(started.elapsed() < Duration::from_secs(600), "job {id} did not finish: {job}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        };
        let params =
            json!({"dataset": "demo/world", "vlm": "demo/captioner", "stage1": "demo/runs/stage1", "epochs": 1});
        let (status, job) =
            api.post("/api/jobs", Some(&token), &json!({"kind": "train_stage2", "params": params})).await;
        assert_eq!(status, 201, "{job}");
        let done = wait(job["id"].as_i64().unwrap()).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let run = done["artifacts"].as_array().unwrap().iter().find(|a| a["kind"] == "stage2_run").unwrap()["path"]
            .as_str()
            .unwrap()
            .to_string();
        let (status, job) = api
            .post(
                "/api/jobs",
                Some(&token),
                &json!({"kind": "evaluate", "params": {"dataset": "demo/world", "runs": [run]}}),
            )
            .await;
        assert_eq!(status, 201, "{job}");
        let done = wait(job["id"].as_i64().unwrap()).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let report = done["artifacts"].as_array().unwrap().iter().find(|a| a["kind"] == "report").unwrap();
        let report: Value = serde_json::from_str(
            // Artifact paths are relative to the data folder.
            &std::fs::read_to_string(data.join(report["path"].as_str().unwrap()).join("report.json")).unwrap(),
        )
        .unwrap();
        assert!(report["seen"]["deper"]["CIDEr"].as_f64().is_some(), "{report}");
        // Bad parameters are refused before queueing.
        let (status, _) = api
            .post("/api/jobs", Some(&token), &json!({"kind": "train_stage2", "params": {"dataset": "x", "vlm": "y"}}))
            .await;
        assert_eq!(status, 422, "method deper without stage1");

        let params = json!({"dataset": "demo/world", "vlm": "demo/captioner", "method": "pt", "epochs": 50});
        let (_, job) = api.post("/api/jobs", Some(&token), &json!({"kind": "train_stage2", "params": params})).await;
        let id = job["id"].as_i64().unwrap();
        let started = Instant::now();
        loop {
            let (_, job) = api.get(&format!("/api/jobs/{id}"), Some(&token)).await;
            if job["progress"].as_f64().unwrap_or(0.0) > 0.0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "stage-2 job never progressed: {job}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let asked = Instant::now();
        let (status, _) = api.post(&format!("/api/jobs/{id}/cancel"), Some(&token), &json!({})).await;
        assert_eq!(status, 200);
        let done = wait(id).await;
        assert_eq!(done["state"], "cancelled", "{done}");
        assert!(asked.elapsed() < Duration::from_secs(15), "cancel took {:?}", asked.elapsed());
    });
    drop(server);

    // A restart reuses the demo study instead of making another.
    let server = serve(&data, &root);
    wait_healthy(&server.base);
    runtime.block_on(async {
        let (_, info) = api_at(&server.base).get("/api/demo", None).await;
        assert_eq!(info["study_id"].as_i64(), Some(study_id));
        let (_, studies) = api_at(&server.base).get("/api/studies", Some(&token)).await;
        let demos =
            studies.as_array().unwrap().iter().filter(|s| s["title"].as_str().unwrap().starts_with("Demo")).count();
        assert_eq!(demos, 1);
    });
}

fn api_at(base: &str) -> Api {
    Api::new(base)
}

fn sha256_hex(bytes: &[u8]) -> String {
    deper_store::sha256_hex(bytes)
}

/// A picture as a one-frame YUV4MPEG2 (4:2:0, BT.601 full range) file: Chromium's fake camera input.
fn write_y4m(png: &Path, out: &Path) {
    let img = image::open(png).unwrap().to_rgb8();
    let (w, h) = (img.width() & !1, img.height() & !1);
    let px = |x: u32, y: u32| {
        let p = img.get_pixel(x, y).0;
        (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]))
    };
    let clamp = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    let mut bytes = format!("YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\nFRAME\n").into_bytes();
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = px(x, y);
            bytes.push(clamp(0.299 * r + 0.587 * g + 0.114 * b));
        }
    }
    for plane in 0..2 {
        for y in (0..h).step_by(2) {
            for x in (0..w).step_by(2) {
                let mut sum = 0.0;
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (r, g, b) = px(x + dx, y + dy);
                    sum += if plane == 0 {
                        -0.168_736 * r - 0.331_264 * g + 0.5 * b + 128.0
                    } else {
                        0.5 * r - 0.418_688 * g - 0.081_312 * b + 128.0
                    };
                }
                bytes.push(clamp(sum / 4.0));
            }
        }
    }
    std::fs::write(out, bytes).unwrap();
}

/// Webcam gaze end to end with Chromium's fake camera showing a face (the landmark fixtures'
/// public-domain astronaut photo): the page finds the face, takes the 9-point calibration, fits the
/// ridge map, validates it, stores the record, and uploads gaze samples during the trial.
#[test]
fn a_webcam_gaze_study_calibrates_and_records_gaze_with_a_fake_camera() {
    let Some(root) = browser_ready("browser gaze test") else { return };
    let dir = tempfile::tempdir().unwrap();
    let camera = dir.path().join("face.y4m");
    write_y4m(&root.join("crates/deper-landmarks/tests/fixtures/astronaut.png"), &camera);
    let data = dir.path().join("data");
    let server = serve_with(&data, &root, &["--no-demo"]);
    wait_healthy(&server.base);
    let token = std::fs::read_to_string(data.join("researcher-token")).unwrap().trim().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let api = Api::new(&server.base);
    let study_id = runtime.block_on(async {
        let study = json!({
            "title": "Gaze pilot", "capture_mode": "gaze", "description_mode": "narrative",
            "settings": {"min_view_ms": 500}
        });
        let (status, study) = api.post("/api/studies", Some(&token), &study).await;
        assert_eq!(status, 201, "{study}");
        let (_, stim) = api.upload(&token, png(64, 64, 9)).await;
        let attach = json!({"stimulus_id": stim["id"]});
        let (status, _) = api.post(&format!("/api/studies/{}/stimuli", study["id"]), Some(&token), &attach).await;
        assert_eq!(status, 200);
        study["id"].as_i64().unwrap()
    });
    let shots = root.join("docs/screenshots");
    let out = Command::new("node")
        .arg(root.join("tests/browser/gaze.mjs"))
        .args(["--base", &server.base, "--study", &study_id.to_string(), "--camera"])
        .arg(&camera)
        .arg("--shots")
        .arg(&shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!("gaze.mjs printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(result["ok"], true, "gaze participant failed: {}\npage log: {}", result["error"], result["log"]);
    assert_eq!(result["clicks"], 9);
    // With WebGPU in the page the eye patches come from the WGSL kernels (checked against the CPU
    // reference every 20th frame in the page: a mismatch would have failed the frame loop's call).
    assert_eq!(result["backend"], "webgpu");
    assert_eq!(result["preprocessing"], "webgpu", "{}", result["log"]);
    assert!(result["gaze_checks"].as_u64().unwrap() >= 1, "no frame was checked against the CPU");
    assert!(result["gaze_error"].is_null(), "gaze frame error: {}", result["gaze_error"]);
    let validation = result["validation"].as_str().unwrap();
    assert!(validation.contains("px") && validation.contains('°'), "{validation}");
    let session_id = result["state"]["session_id"].as_i64().unwrap();
    let calibrations =
        get(&server.base, &format!("/api/studies/{study_id}/sessions/{session_id}/calibrations"), &token);
    let calibrations = calibrations.as_array().unwrap();
    assert_eq!(calibrations.len(), 1, "{calibrations:?}");
    let record = &calibrations[0];
    assert_eq!(record["kind"], "webcam-ridge");
    assert_eq!(record["calibration_points"], 9);
    assert_eq!(record["validation"]["n"], 4, "{record}");
    assert!(record["validation"]["mean_px"].as_f64().unwrap().is_finite(), "{record}");
    assert!(record["frames_without_face"].as_u64() < record["frames"].as_u64(), "{record}");
    let samples = get(&server.base, &format!("/api/studies/{study_id}/sessions/{session_id}/samples"), &token);
    let gaze = samples.as_array().unwrap().iter().filter(|s| s["source"] == "gaze").count();
    assert!(gaze > 0, "no gaze samples stored ({} gaze points predicted)", result["state"]["gaze_points"]);
    assert_eq!(result["state"]["pending"], 0);

    // The page builds gaze trajectories exactly as the study export does (fixations → steps).
    let trace: Vec<deper_store::StoredSample> = result["trace"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, p)| deper_store::StoredSample {
            trial: 0,
            stimulus_id: 1,
            batch_id: "b".into(),
            seq: i as u32,
            x: p["x"].as_f64().unwrap(),
            y: p["y"].as_f64().unwrap(),
            t: p["t"].as_f64().unwrap(),
            source: deper_store::SampleSource::Gaze,
        })
        .collect();
    let native = deper_store::export::build_trajectory(&trace, &[], deper_store::CaptureMode::Gaze);
    assert_eq!(native.steps.len(), 2, "{native:?}");
    let page: deper_core::Trajectory = serde_json::from_value(result["trace_trajectory"].clone()).unwrap();
    assert_eq!(page, native);

    // The narrative-mode description keeps each typed word with its time (LN export's timed_caption).
    let zip_bytes = runtime.block_on(async {
        let url = api.url(&format!("/api/studies/{study_id}/export.zip?format=ln"));
        api.http.get(url).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap()
    });
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.to_vec())).unwrap();
    let name = (0..archive.len())
        .map(|i| archive.by_index(i).unwrap().name().to_string())
        .find(|n| n.ends_with(".jsonl"))
        .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut archive.by_name(&name).unwrap(), &mut text).unwrap();
    let record: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let words: Vec<&str> =
        record["timed_caption"].as_array().unwrap().iter().map(|u| u["utterance"].as_str().unwrap()).collect();
    assert_eq!(words, ["a", "small", "striped", "picture"], "{record}");
    let starts: Vec<f64> =
        record["timed_caption"].as_array().unwrap().iter().map(|u| u["start_time"].as_f64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[1] > w[0]) && starts[0] > 0.0, "word times {starts:?}");
}
