//! Helpers shared by the server tests: the `deper` binary, PNG fixtures and small HTTP calls.

#![allow(dead_code)] // each test file uses its own subset

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the `deper` binary of this build.
pub fn deper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deper")).args(args).output().expect("run deper")
}

/// Runs `deper`, which must succeed and print one JSON value.
pub fn ok_json(args: &[&str]) -> Value {
    let out = deper(args);
    assert!(out.status.success(), "deper {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout of {args:?} is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs `deper`, which must fail; its stderr.
pub fn failure(args: &[&str]) -> String {
    let out = deper(args);
    assert!(!out.status.success(), "deper {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A small PNG whose pixels depend on `seed` (so each seed has its own SHA-256).
pub fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([seed, (x % 256) as u8, (y % 256) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("encoding a PNG in memory");
    out.into_inner()
}

/// A client for `base` with an optional bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("building an HTTP client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and returns the status and the body parsed as JSON (or as a string).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body)).await
    }

    /// Uploads raw bytes as an image; returns status and JSON.
    pub async fn upload(&self, token: &str, bytes: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url("/api/stimuli"))
            .bearer_auth(token)
            .header("content-type", "image/png")
            .body(bytes)
            .send()
            .await
            .expect("upload");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// The error message of a JSON error body.
pub fn message(body: &Value) -> String {
    body["error"].as_str().map_or_else(|| body.to_string(), str::to_string)
}

/// Starts the real `deper serve` with `args` (which should bind `127.0.0.1:0`); returns the child
/// and the base URL it printed. Its stdout is drained so it never blocks on a full pipe.
pub fn spawn_serve(args: &[&std::ffi::OsStr], stderr: Stdio) -> (Child, String) {
    let mut command = serve_command(args);
    command.stderr(stderr);
    start_serve(command)
}

/// `deper serve ARGS` with stdout piped, for [`start_serve`] (set stderr and the environment first).
pub fn serve_command(args: &[&std::ffi::OsStr]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deper"));
    command.arg("serve").args(args).stdout(Stdio::piped());
    command
}

/// Spawns a [`serve_command`] and waits for the base URL it prints.
pub fn start_serve(mut command: Command) -> (Child, String) {
    let mut child = command.spawn().expect("starting deper serve");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let base = loop {
        let line = lines.next().expect("deper serve exited before listening").expect("reading its stdout");
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

/// Waits until `GET /healthz` answers 200, failing after `limit`.
pub async fn wait_healthy(api: &Api, limit: Duration) {
    let started = Instant::now();
    loop {
        if let Ok(r) = api.http.get(api.url("/healthz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(started.elapsed() < limit, "server did not come up within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `deper_server::server::launch` in this process on a loopback port, with the researcher token
/// it wrote.
pub struct InProcess {
    pub api: Api,
    pub token: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    pub async fn start(settings: deper_server::server::ServerSettings) -> Self {
        let token_file = settings.data_dir.join(deper_server::server::TOKEN_FILE);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let api = Api::new(&format!("http://{}", listener.local_addr().expect("bound address")));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(deper_server::server::launch(settings, listener, async move {
            let _ = stopped.await;
        }));
        wait_healthy(&api, Duration::from_secs(30)).await;
        let token = std::fs::read_to_string(token_file).expect("researcher token").trim().to_string();
        Self { api, token, stop, task }
    }

    /// The researcher's token, as `Api` calls take it.
    pub fn r(&self) -> Option<&str> {
        Some(&self.token)
    }

    /// Stops the server and waits until it has shut down cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let done = tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("server stops in time");
        done.expect("server task").expect("server shuts down cleanly");
    }
}
