//! `POST /api/captions` on a real server with a real Hugging Face folder (the Qwen2-VL fixture,
//! whose tokenizer has `<|persona|>`): zero-shot and persona-conditioned captions, equal to the CLI's
//! `deper caption`, and bad requests answered 4xx while the server keeps serving.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

mod common;

use common::{png, Api};
use deper_server::server::caption::VlmCaptioner;
use deper_server::server::{launch, ServerSettings};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2_vl_tiny/model")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captions_come_from_the_loaded_vlm_with_and_without_a_persona() {
    let server = Server::start(Arc::new(VlmCaptioner::load(&model_dir(), None).unwrap())).await;
    let (api, token) = (&server.api, server.token.clone());
    let data = tempfile::tempdir().unwrap();
    let image = png(56, 56, 7);
    let (status, stim) = api.upload(&token, image.clone()).await;
    assert!(status == 200 || status == 201, "{stim}");
    let sha = stim["sha256"].as_str().unwrap().to_string();

    // Without a token: 401, like every researcher endpoint.
    let (status, _) = api.post("/api/captions", None, &json!({"image": sha})).await;
    assert_eq!(status, 401);

    let (status, zero) = api.post("/api/captions", Some(&token), &json!({"image": sha, "max_new_tokens": 6})).await;
    assert_eq!(status, 200, "{zero}");
    assert_eq!(zero["personalized"], false);
    let zero_ids = zero["generated_ids"].as_array().unwrap().clone();
    assert!(!zero_ids.is_empty() && zero_ids.len() <= 6, "{zero}");

    // The CLI on the same image and prompt gives the same ids (one model, one code path).
    let file = data.path().join("image.png");
    std::fs::write(&file, &image).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deper"))
        .args(["caption", "--model", model_dir().to_str().unwrap(), "--image", file.to_str().unwrap()])
        .args(["--prompt", deper_vlm::persona::PERSONA_PROMPT, "--max-new-tokens", "6", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["generated_ids"].as_array().unwrap(), &zero_ids);

    // A persona embedding of the VLM's hidden size (64) conditions the caption.
    let persona: Vec<f32> = (0..64).map(|i| ((i * 37 % 11) as f32 - 5.0) * 3.0).collect();
    let (status, personal) =
        api.post("/api/captions", Some(&token), &json!({"image": sha, "persona": persona, "max_new_tokens": 6})).await;
    assert_eq!(status, 200, "{personal}");
    assert_eq!(personal["personalized"], true);
    assert_ne!(personal["generated_ids"], zero["generated_ids"], "the persona changed nothing");

    // Streaming: one `token` event per generated id, then `done` with the same caption.
    let resp = api
        .http
        .post(api.url("/api/captions"))
        .bearer_auth(&token)
        .json(&json!({"image": sha, "max_new_tokens": 6, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = resp.text().await.unwrap();
    let mut events: Vec<(String, serde_json::Value)> = Vec::new();
    for block in body.split("\n\n").filter(|b| b.contains("data:")) {
        let name = block.lines().find_map(|l| l.strip_prefix("event:")).unwrap_or("").trim().to_string();
        let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
        events.push((name, serde_json::from_str(&data).unwrap()));
    }
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done", "{body}");
    assert_eq!(done["generated_ids"], zero["generated_ids"]);
    assert_eq!(done["caption"], zero["caption"]);
    let tokens: Vec<&serde_json::Value> = events.iter().filter(|(n, _)| n == "token").map(|(_, v)| v).collect();
    let streamed_ids: Vec<serde_json::Value> = tokens.iter().map(|t| t["id"].clone()).collect();
    assert_eq!(&streamed_ids, &zero_ids);
    let streamed_text: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(streamed_text, zero["caption"].as_str().unwrap());

    // Bad requests: 4xx with a message, and the server keeps serving.
    let (status, body) = api.post("/api/captions", Some(&token), &json!({"image": sha, "persona": [1.0, 2.0]})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("persona has 2 values"), "{body}");
    let (status, _) = api.post("/api/captions", Some(&token), &json!({"image": "0000"})).await;
    assert_eq!(status, 404);
    let (status, _) = api.post("/api/captions", Some(&token), &json!({"image": sha, "max_new_tokens": 0})).await;
    assert_eq!(status, 422);
    let (status, _) = api.post("/api/captions", Some(&token), &json!({"img": sha})).await;
    assert!((400..500).contains(&status));
    let (status, _) = api.get("/healthz", None).await;
    assert_eq!(status, 200);

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_that_arrive_together_are_generated_as_one_batch() {
    use deper_server::server::caption::Batching;
    use std::sync::atomic::Ordering;
    // A wide window so the test's simultaneous requests surely meet; the default is 15 ms.
    let batching = Batching { max_batch: 4, window: Duration::from_millis(400) };
    let captioner = Arc::new(VlmCaptioner::load_with(&model_dir(), None, batching).unwrap());
    let server = Server::start(captioner.clone()).await;
    let (api, token) = (&server.api, &server.token);
    // Two images of different sizes, so the prompts differ in length (left padding is exercised).
    let mut shas = Vec::new();
    for (w, h) in [(56, 56), (84, 112)] {
        let (status, stim) = api.upload(token, png(w, h, 3)).await;
        assert!(status == 200 || status == 201, "{stim}");
        shas.push(stim["sha256"].as_str().unwrap().to_string());
    }
    let persona = |seed: usize| -> Vec<f32> { (0..64).map(|i| (((i * 37 + seed) % 11) as f32 - 5.0) * 3.0).collect() };
    let requests = vec![
        json!({"image": shas[0], "max_new_tokens": 6}),
        json!({"image": shas[1], "max_new_tokens": 8, "persona": persona(1)}),
        json!({"image": shas[0], "max_new_tokens": 5, "persona": persona(2)}),
        json!({"image": shas[1], "max_new_tokens": 7}),
    ];
    // One at a time: each is a batch of one.
    let mut alone = Vec::new();
    for request in &requests {
        let (status, out) = api.post("/api/captions", Some(token), request).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["batch_size"], 1, "{out}");
        alone.push(out);
    }
    assert_eq!(captioner.stats().largest_batch.load(Ordering::Relaxed), 1);
    // All at once: one batch of four, each caption what it was alone.
    let together =
        futures_util::future::join_all(requests.iter().map(|request| api.post("/api/captions", Some(token), request)))
            .await;
    for (k, ((status, out), single)) in together.iter().zip(&alone).enumerate() {
        assert_eq!(*status, 200, "{out}");
        assert_eq!(out["batch_size"], 4, "request {k}: {out}");
        assert_eq!(out["generated_ids"], single["generated_ids"], "request {k}");
        assert_eq!(out["caption"], single["caption"], "request {k}");
        assert_eq!(out["personalized"], single["personalized"], "request {k}");
    }
    assert_eq!(captioner.stats().largest_batch.load(Ordering::Relaxed), 4);
    assert_eq!(captioner.stats().requests.load(Ordering::Relaxed), 8);
    assert_eq!(captioner.stats().batches.load(Ordering::Relaxed), 5);

    server.stop().await;
}

/// A real server on port 0 with one captioner, its researcher token and a way to stop it.
struct Server {
    api: Api,
    token: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl Server {
    async fn start(captioner: Arc<VlmCaptioner>) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut settings = ServerSettings::new(data.path());
        settings.caption = Some(captioner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(launch(settings, listener, async move {
            let _ = rx.await;
        }));
        let api = Api::new(&format!("http://{addr}"));
        let started = Instant::now();
        while api.http.get(api.url("/healthz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
            assert!(started.elapsed() < Duration::from_secs(30), "server did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let token = std::fs::read_to_string(data.path().join("researcher-token")).unwrap().trim().to_string();
        Self { api, token, stop, task, _data: data }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task).await.unwrap().unwrap().unwrap();
    }
}

/// The caption API serves every supported family: Qwen2.5-VL (batched like Qwen2-VL) and
/// Idefics3/SmolVLM (requests of a batch taken one after the other), each equal to `deper caption`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qwen2_5_vl_and_idefics3_folders_caption_like_the_cli() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    for family in ["qwen2_5_vl_tiny", "idefics3_tiny"] {
        let model = fixtures.join(family).join("model");
        let image_file = fixtures.join(family).join("image.png");
        let server = Server::start(Arc::new(VlmCaptioner::load(&model, None).unwrap())).await;
        let (status, stim) = server.api.upload(&server.token, std::fs::read(&image_file).unwrap()).await;
        assert!(status == 200 || status == 201, "{family}: {stim}");
        let request = json!({"image": stim["sha256"], "prompt": "Describe the image.", "max_new_tokens": 6});
        let both = futures_util::future::join_all(
            (0..2).map(|_| server.api.post("/api/captions", Some(&server.token), &request)),
        )
        .await;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_deper"))
            .args(["caption", "--model", model.to_str().unwrap(), "--image", image_file.to_str().unwrap()])
            .args(["--max-new-tokens", "6", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{family}: {}", String::from_utf8_lossy(&out.stderr));
        let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for (status, body) in &both {
            assert_eq!(*status, 200, "{family}: {body}");
            assert_eq!(body["generated_ids"], cli["generated_ids"], "{family}: {body}");
        }
        server.stop().await;
    }
}
