//! The server's log, read from the real `deper serve` (stderr to a file): one `request` line per
//! HTTP request with method, route template, status and milliseconds; events for the study, the
//! participant and a job; never the researcher token, a session token or a query string; and
//! `RUST_LOG` decides what is written.

#![allow(clippy::unwrap_used)] // a failing call should fail the test loudly

mod common;

use common::{png, serve_command, start_serve, Api};
use deper_server::server::{REQUEST_LOG_TARGET, TOKEN_FILE};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// A `deper serve --no-demo` on port 0 whose stderr goes to `log`, with `RUST_LOG` as given
/// (`None`: unset, the binary's default).
fn serve(data: &Path, log: &Path, rust_log: Option<&str>) -> (Child, Api) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let args: Vec<&OsStr> = vec![
        OsStr::new("--no-demo"),
        OsStr::new("--addr"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("--web"),
        root.as_os_str(),
    ];
    let mut command = serve_command(&args);
    command.stderr(std::fs::File::create(log).unwrap());
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let (child, base) = start_serve(command);
    (child, Api::new(&base))
}

/// A request the test made and the line it expects for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Logged {
    method: String,
    route: String,
    status: u16,
}

/// Sends requests and remembers what each should log.
struct Client {
    api: Api,
    sent: Vec<Logged>,
}

impl Client {
    async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        route: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (status, value) = self.api.call(method.clone(), path, token, body).await;
        self.sent.push(Logged { method: method.to_string(), route: route.into(), status });
        (status, value)
    }

    async fn get(&mut self, path: &str, route: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, route, token, None).await
    }

    async fn post(&mut self, path: &str, route: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, route, token, Some(body)).await
    }
}

/// The value of `key=` in a log line (values run to the next space).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..].split(' ').next()
}

/// The request lines of a log, parsed.
fn request_lines(log: &str) -> Vec<Logged> {
    log.lines()
        .filter(|l| l.contains(&format!("{REQUEST_LOG_TARGET}:")))
        .map(|l| {
            assert!(l.contains(" INFO ") && l.contains(" request "), "not an info request line: {l}");
            let ms: f64 = field(l, "ms").unwrap_or_else(|| panic!("no ms in {l}")).parse().unwrap();
            assert!(ms >= 0.0, "{l}");
            Logged {
                method: field(l, "method").unwrap_or_else(|| panic!("no method in {l}")).into(),
                route: field(l, "route").unwrap_or_else(|| panic!("no route in {l}")).into(),
                status: field(l, "status").unwrap_or_else(|| panic!("no status in {l}")).parse().unwrap(),
            }
        })
        .collect()
}

#[tokio::test]
async fn every_request_is_one_line_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log_path) = (dir.path().join("data"), dir.path().join("serve.log"));
    let (mut child, api) = serve(&data, &log_path, None);
    let mut c = Client { api, sent: Vec::new() };

    // The first answer comes once the server has written its token.
    assert_eq!(c.get("/healthz", "/healthz", None).await.0, 200);
    let token = std::fs::read_to_string(data.join(TOKEN_FILE)).unwrap().trim().to_string();
    let t = Some(token.as_str());
    assert_eq!(c.get("/api/studies", "/api/studies", None).await.0, 401);
    let study = json!({"title": "Log study", "capture_mode": "mouse", "description_mode": "typed"});
    let (status, created) = c.post("/api/studies", "/api/studies", t, &study).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    // A secret in the query string stays out of the log.
    let (status, _) = c.get(&format!("/api/studies/{id}?probe=QUERYSECRET"), "/api/studies/{id}", t).await;
    assert_eq!(status, 200);
    let (status, stim) = c.api.upload(&token, png(8, 8, 1)).await;
    c.sent.push(Logged { method: "POST".into(), route: "/api/stimuli".into(), status });
    assert_eq!(status, 201, "{stim}");
    let attach = json!({"stimulus_id": stim["id"]});
    assert_eq!(c.post(&format!("/api/studies/{id}/stimuli"), "/api/studies/{id}/stimuli", t, &attach).await.0, 200);
    let (status, joined) = c.post(&format!("/api/studies/{id}/join"), "/api/studies/{id}/join", None, &json!({})).await;
    assert_eq!(status, 201, "{joined}");
    let session = joined["session_id"].as_i64().unwrap();
    let session_token = joined["token"].as_str().unwrap().to_string();
    let finish = format!("/api/sessions/{session}/finish");
    assert_eq!(c.post(&finish, "/api/sessions/{id}/finish", Some(&session_token), &json!({})).await.0, 200);
    assert_eq!(c.get("/api/no/such/route", "unmatched", t).await.0, 404);
    assert_eq!(c.get("/web/app.js", "/web/{file}", None).await.0, 200);

    // A job that fails at once: started and failed events.
    let job = json!({"kind": "features", "params": {"dataset": "no-such-dataset"}});
    let (status, job) = c.post("/api/jobs", "/api/jobs", t, &job).await;
    assert_eq!(status, 201, "{job}");
    let job_path = format!("/api/jobs/{}", job["id"]);
    let started = Instant::now();
    loop {
        let (status, job) = c.get(&job_path, "/api/jobs/{id}", t).await;
        assert_eq!(status, 200, "{job}");
        if job["state"] == "failed" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the job did not fail: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Browsers' event streams send the token as `?access_token=`: not logged either.
    let events = format!("{job_path}/events?access_token=QUERYTOKEN");
    assert_eq!(c.get(&events, "/api/jobs/{id}/events", None).await.0, 401);

    // Each line is written before its response is sent; the job's end before its state is read.
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(request_lines(&log), c.sent, "request lines differ from the requests made:\n{log}");
    assert!(log.contains(&format!("listening on {}", c.api.base)), "{log}");
    for event in ["study created", "participant joined", "participant finished", "job started", "job failed"] {
        assert_eq!(log.matches(event).count(), 1, "`{event}` once expected:\n{log}");
    }
    for secret in [token.as_str(), session_token.as_str(), "QUERYSECRET", "QUERYTOKEN"] {
        assert!(!log.contains(secret), "`{secret}` leaked into the log:\n{log}");
    }
    assert!(!log.contains('\u{1b}'), "no colour codes when stderr is a file");
}

#[tokio::test]
async fn rust_log_decides_what_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log_path) = (dir.path().join("data"), dir.path().join("serve.log"));
    let (mut child, api) = serve(&data, &log_path, Some("warn"));
    assert_eq!(api.get("/healthz", None).await.0, 200);
    assert_eq!(api.get("/api/nothing", None).await.0, 404);
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(request_lines(&log).is_empty(), "RUST_LOG=warn hides the request log:\n{log}");
    assert!(!log.contains("listening on"), "{log}");

    let (data, log_path) = (dir.path().join("data2"), dir.path().join("serve2.log"));
    let (mut child, api) = serve(&data, &log_path, Some(&format!("warn,{REQUEST_LOG_TARGET}=info")));
    assert_eq!(api.get("/healthz", None).await.0, 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let expected = Logged { method: "GET".into(), route: "/healthz".into(), status: 200 };
    assert_eq!(request_lines(&log), [expected], "{log}");
    assert!(!log.contains("listening on"), "only the request log was asked for:\n{log}");
}
