//! Ingest load benchmark of the study server (not a test): N simulated participants stream pointer
//! samples at a fixed rate in batches over real HTTP on loopback, against a server launched in this
//! process on SQLite (default) or PostgreSQL (`--db postgres://…`).
//!
//! ```sh
//! cargo run --release -p deper-server --example ingest_bench -- --participants 200 --rate 60 --seconds 60
//! cargo run --release -p deper-server --example ingest_bench -- --db postgres://user:pass@127.0.0.1/db
//! ```
//!
//! Prints one JSON object: samples sent and acknowledged, samples found in the store afterwards,
//! `lost` (acknowledged but not stored), throughput, and p50/p99/max latency of the batch uploads.
//! A failed upload is retried with the same batch id (as the browser does), so retries never
//! duplicate; its retries count in `retries`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark driver: failures should stop it loudly

use deper_server::server::{launch, ServerSettings};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    participants: usize,
    rate: f64,
    batch_ms: u64,
    seconds: f64,
    db: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args { participants: 200, rate: 60.0, batch_ms: 500, seconds: 60.0, db: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--participants" => a.participants = value.parse().expect("--participants N"),
            "--rate" => a.rate = value.parse().expect("--rate HZ"),
            "--batch-ms" => a.batch_ms = value.parse().expect("--batch-ms MS"),
            "--seconds" => a.seconds = value.parse().expect("--seconds S"),
            "--db" => a.db = Some(value),
            other => panic!("unknown flag {other} (--participants, --rate, --batch-ms, --seconds, --db)"),
        }
    }
    a
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let data = tempfile::tempdir().unwrap();
    let mut settings = ServerSettings::new(data.path());
    settings.db_url = args.db.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(launch(settings, listener, async move {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap();
    let started = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(started.elapsed() < Duration::from_secs(60), "server did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = std::fs::read_to_string(data.path().join("researcher-token")).unwrap().trim().to_string();
    let post = |path: String, body: Value, bearer: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http.post(url).bearer_auth(bearer).json(&body).send().await.unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "{status}: {v}");
            v
        }
    };
    let study = post("/api/studies".into(), json!({"title": "load", "capture_mode": "mouse"}), token.clone()).await;
    let study_id = study["id"].as_i64().unwrap();
    let stim: Value = http
        .post(format!("{base}/api/stimuli"))
        .bearer_auth(&token)
        .header("content-type", "image/png")
        .body(png())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    post(format!("/api/studies/{study_id}/stimuli"), json!({"stimulus_id": stim["id"]}), token.clone()).await;

    let per_batch = ((args.rate * args.batch_ms as f64 / 1000.0).round() as usize).max(1);
    let batches = (args.seconds * 1000.0 / args.batch_ms as f64).round() as usize;
    eprintln!(
        "{} participants × {batches} batches of {per_batch} samples ({} Hz) over {} s on {}",
        args.participants,
        args.rate,
        args.seconds,
        if args.db.is_some() { "PostgreSQL" } else { "SQLite" }
    );
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.participants {
        let http = http.clone();
        let base = base.clone();
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let joined: Value = http
                .post(format!("{base}/api/studies/{study_id}/join"))
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let sid = joined["session_id"].as_i64().unwrap();
            let tok = joined["token"].as_str().unwrap().to_string();
            // Start times spread over one batch interval so batches do not arrive in lockstep.
            let offset = Duration::from_millis(args.batch_ms * p as u64 / args.participants.max(1) as u64);
            let mut next = tokio::time::Instant::now() + offset;
            let (mut acked, mut retries) = (0usize, 0usize);
            for b in 0..batches {
                tokio::time::sleep_until(next).await;
                next += Duration::from_millis(args.batch_ms);
                let samples: Vec<Value> = (0..per_batch)
                    .map(|k| {
                        let t = (b * per_batch + k) as f64 / args.rate;
                        json!({"x": (t * 0.37).fract(), "y": (t * 0.23).fract(), "t": t, "source": "mouse"})
                    })
                    .collect();
                let body = json!({"batch_id": format!("p{p}-b{b}"), "trial": 0, "samples": samples});
                loop {
                    let sent = Instant::now();
                    let r = http
                        .post(format!("{base}/api/sessions/{sid}/samples"))
                        .bearer_auth(&tok)
                        .json(&body)
                        .send()
                        .await;
                    let ok = matches!(&r, Ok(resp) if resp.status().is_success());
                    latencies.lock().unwrap().push(sent.elapsed().as_secs_f64() * 1000.0);
                    if ok {
                        acked += per_batch;
                        break;
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (sid, acked, retries)
        }));
    }
    let mut sessions = Vec::new();
    let (mut acked, mut retries) = (0usize, 0usize);
    for t in tasks {
        let (sid, a, r) = t.await.unwrap();
        sessions.push(sid);
        acked += a;
        retries += r;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let mut stored = 0usize;
    for sid in &sessions {
        let v: Value = http
            .get(format!("{base}/api/studies/{study_id}/sessions/{sid}/samples"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stored += v.as_array().map_or(0, Vec::len);
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    let report = json!({
        "database": if args.db.is_some() { "postgresql" } else { "sqlite" },
        "participants": args.participants,
        "rate_hz": args.rate,
        "batch_ms": args.batch_ms,
        "seconds": elapsed,
        "samples_sent": args.participants * batches * per_batch,
        "samples_acked": acked,
        "samples_stored": stored,
        "lost": acked.saturating_sub(stored),
        "duplicated": stored.saturating_sub(acked),
        "retries": retries,
        "samples_per_s": acked as f64 / elapsed,
        "requests": lat.len(),
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": lat.last().copied().unwrap_or(f64::NAN)},
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let _ = stop_tx.send(());
    let _ = server.await;
}
