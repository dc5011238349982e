//! Durability: the real `deper serve` is killed with SIGKILL while a client streams sample
//! batches, then restarted on the same data folder; the client retries every batch it has no
//! acknowledgement for. Every acknowledged sample must be stored exactly once.

#![allow(clippy::unwrap_used)] // a failing call should fail the test loudly

mod common;

use common::{png, spawn_serve, Api};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATCHES: usize = 150;
const PER_BATCH: usize = 20;

/// Starts `deper serve` on a free port; returns the child and its base URL.
fn serve(data: &Path) -> (Child, String) {
    let args: Vec<&OsStr> =
        ["--no-demo", "--addr", "127.0.0.1:0", "--data"].iter().map(OsStr::new).chain([data.as_os_str()]).collect();
    spawn_serve(&args, Stdio::null())
}

async fn wait_healthy(api: &Api) {
    common::wait_healthy(api, Duration::from_secs(30)).await;
}

fn batch(i: usize) -> Value {
    let samples: Vec<Value> = (0..PER_BATCH)
        .map(|k| {
            let n = (i * PER_BATCH + k) as f64;
            json!({"x": (n * 0.001) % 1.0, "y": (n * 0.0007) % 1.0, "t": n * 0.01, "source": "mouse"})
        })
        .collect();
    json!({"batch_id": format!("batch-{i:04}"), "trial": 0, "samples": samples})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_samples_survive_sigkill_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, base) = serve(data.path());
    let api = Api::new(&base);
    wait_healthy(&api).await;
    let token = std::fs::read_to_string(data.path().join("researcher-token")).unwrap().trim().to_string();

    let (status, study) = api.post("/api/studies", Some(&token), &json!({"title": "durability"})).await;
    assert_eq!(status, 201, "{study}");
    let study = study["id"].as_i64().unwrap();
    let (status, stim) = api.upload(&token, png(8, 8, 1)).await;
    assert_eq!(status, 201, "{stim}");
    api.post(&format!("/api/studies/{study}/stimuli"), Some(&token), &json!({"stimulus_id": stim["id"]})).await;
    let (status, joined) = api.post(&format!("/api/studies/{study}/join"), None, &json!({})).await;
    assert_eq!(status, 201, "{joined}");
    let sid = joined["session_id"].as_i64().unwrap();
    let session_token = joined["token"].as_str().unwrap().to_string();

    // The client: sends batches in order, retrying each until it is acknowledged, always at
    // the current server address (it changes on restart).
    let current = Arc::new(Mutex::new(base.clone()));
    let acked: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let client = {
        let (current, acked, session_token) = (current.clone(), acked.clone(), session_token.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
            let mut retries = 0usize;
            for i in 0..BATCHES {
                let body = batch(i);
                loop {
                    let base = current.lock().unwrap().clone();
                    let sent = http
                        .post(format!("{base}/api/sessions/{sid}/samples"))
                        .bearer_auth(&session_token)
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(resp) = sent {
                        if resp.status() == 200 {
                            let ack: Value = resp.json().await.unwrap();
                            assert_eq!(ack["stored"], PER_BATCH, "{ack}");
                            acked.lock().unwrap().insert(body["batch_id"].as_str().unwrap().to_string(), ack);
                            break;
                        }
                        panic!("batch {i}: HTTP {}", resp.status());
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            retries
        })
    };

    // Kill the server mid-stream.
    let started = Instant::now();
    while acked.lock().unwrap().len() < 30 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let acked_before_kill = acked.lock().unwrap().len();
    assert!(acked_before_kill < BATCHES, "the stream ended before the kill");

    let (mut child, base2) = serve(data.path());
    let api2 = Api::new(&base2);
    wait_healthy(&api2).await;
    *current.lock().unwrap() = base2.clone();
    let retries = tokio::time::timeout(Duration::from_secs(120), client).await.unwrap().unwrap();
    assert!(retries > 0, "the kill should have cut off at least one request");

    // Re-sending acknowledged batches stores nothing new.
    for i in [0, acked_before_kill - 1, acked_before_kill] {
        let (status, ack) = api2.post(&format!("/api/sessions/{sid}/samples"), Some(&session_token), &batch(i)).await;
        assert_eq!(status, 200, "{ack}");
        assert_eq!(ack["duplicate"], true, "{ack}");
    }

    let (status, stored) = api2.get(&format!("/api/studies/{study}/sessions/{sid}/samples"), Some(&token)).await;
    assert_eq!(status, 200, "{stored}");
    let stored = stored.as_array().unwrap();
    assert_eq!(acked.lock().unwrap().len(), BATCHES);
    assert_eq!(stored.len(), BATCHES * PER_BATCH, "every acknowledged sample exactly once");
    let mut by_batch: HashMap<String, Vec<&Value>> = HashMap::new();
    for s in stored {
        by_batch.entry(s["batch_id"].as_str().unwrap().to_string()).or_default().push(s);
    }
    for i in 0..BATCHES {
        let sent = batch(i);
        let got = &by_batch[sent["batch_id"].as_str().unwrap()];
        assert_eq!(got.len(), PER_BATCH);
        for (k, (g, s)) in got.iter().zip(sent["samples"].as_array().unwrap()).enumerate() {
            assert_eq!(g["seq"], k);
            assert_eq!((&g["x"], &g["y"], &g["t"]), (&s["x"], &s["y"], &s["t"]));
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
