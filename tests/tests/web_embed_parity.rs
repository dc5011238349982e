//! The subject embedding computed in the browser equals native `deper embed` (issue 7, "Done
//! when"): a tiny synthetic world, pixel-stats features and a one-epoch stage-1 run are made
//! here; native z_s for an unseen subject comes from `deper_train::eval::embed` (what the
//! `deper embed` command runs, on the CPU backend); the same run files and the subject's 5 support
//! triplets (features from the feature cache) then go to `web/test/embed.html` in headless
//! Chromium (`tests/browser/embed_parity.mjs`), which computes z_s through `web/deper-worker.js`
//! on WebGPU (SwiftShader) and again on the CPU fallback.
//!
//! Needs `bash web/build.sh` (web/pkg), `npm ci --prefix tests/browser` and /usr/bin/chromium.
//! Without chromium or web/pkg the test is skipped with a message, unless DEPER_REQUIRE_BROWSER
//! is set (CI), in which case it fails.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

use burn::backend::{Autodiff, NdArray};
use deper_core::dataset::Dataset;
use deper_core::split::{apply_splits, SplitConfig, UnseenChoice};
use deper_synth::SynthConfig;
use deper_train::features::{self, PIXEL_STATS};
use deper_train::stage1::{self, ModelSettings, Stage1Config, TrainSettings};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SUBJECT: &str = "s02";
const SHOTS: usize = 5;
const TOLERANCE: f64 = 1e-4;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Whether the browser parts are present; a loud skip (or, with DEPER_REQUIRE_BROWSER, a failure) if not.
fn browser_ready(root: &Path) -> bool {
    let chromium = Path::new("/usr/bin/chromium");
    let pkg = root.join("web/pkg/deper_web.js");
    let mut missing = Vec::new();
    if !chromium.is_file() {
        missing.push("/usr/bin/chromium (apt-get install chromium)".to_string());
    }
    if !pkg.is_file() {
        missing.push(format!("{} (bash web/build.sh)", pkg.display()));
    }
    if missing.is_empty() {
        return true;
    }
    let required = std::env::var("DEPER_REQUIRE_BROWSER").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(!required, "DEPER_REQUIRE_BROWSER is set but the browser test cannot run; missing: {}", missing.join(", "));
    eprintln!("\n!!! SKIPPED browser z_s parity test: missing {}\n", missing.join(", "));
    false
}

/// Runs `cmd`, killing it after `limit`; returns (success, stdout, stderr).
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> (bool, String, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    match status {
        Some(s) => (s.success(), stdout, stderr),
        None => (false, stdout, format!("killed after {limit:?}\n{stderr}")),
    }
}

fn max_abs_diff(a: &[f64], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - f64::from(*y)).abs()).fold(0.0, f64::max)
}

#[test]
fn browser_z_s_equals_native_embed_on_webgpu_and_cpu() {
    let root = repo_root();
    if !browser_ready(&root) {
        return;
    }
    assert!(
        root.join("tests/browser/node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci --prefix tests/browser`"
    );

    // A tiny world, features, one unseen subject with 5 support triplets, a one-epoch run.
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("world");
    let synth = SynthConfig { subjects: 4, images: 30, coverage: 0.7, seed: 3, ..SynthConfig::default() };
    deper_synth::generate(&synth, &world, &mut |_, _| {}).unwrap();
    let ds = Dataset::open(&world).unwrap();
    let split = SplitConfig {
        seed: 1,
        unseen: UnseenChoice::List(vec![SUBJECT.into()]),
        shots: SHOTS,
        ..SplitConfig::default()
    };
    apply_splits(&ds, &split).unwrap();
    features::extract(&ds, PIXEL_STATS, &mut |_, _| {}).unwrap();
    // Small enough for SwiftShader; batch 4 < 5 shots, so native and the page both split the
    // support set into two batches.
    let config = Stage1Config {
        train: TrainSettings { epochs: 1, batch_size: 4, ..TrainSettings::default() },
        model: ModelSettings {
            d_model: 32,
            n_heads: 2,
            encoder_layers: 1,
            decoder_layers: 1,
            token_dim: 16,
            ..ModelSettings::default()
        },
        ..Stage1Config::default()
    };
    let run = dir.path().join("run");
    let device = Default::default();
    stage1::train::<Autodiff<NdArray>>(&world, &run, config, false, &device, &mut |_| {}).unwrap();

    let native =
        deper_train::eval::embed::<NdArray>(&run, &world, Some(&[SUBJECT.to_string()]), SHOTS, &device).unwrap();
    let native = &native.subjects[SUBJECT];
    assert_eq!(native.support.len(), SHOTS);
    assert!(!native.seen);

    // The page's inputs: the run files and the support triplets, in native's order.
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    for file in ["run.json", "model.mpk"] {
        std::fs::copy(run.join(file), served.join(file)).unwrap();
    }
    let cache = features::load(&world, PIXEL_STATS).unwrap();
    let grid = [cache.meta.grid_h, cache.meta.grid_w, cache.meta.dim];
    let all = Dataset::open(&world).unwrap().load_triplets().unwrap();
    let triplets: Vec<Value> = native
        .support
        .iter()
        .map(|id| {
            let t = all.iter().find(|t| &t.id == id).unwrap();
            json!({
                "features": cache.read(&t.image).unwrap(),
                "grid": grid,
                "caption": t.description.text,
                "trajectory": t.trajectory,
            })
        })
        .collect();
    std::fs::write(served.join("triplets.json"), serde_json::to_string(&triplets).unwrap()).unwrap();

    let (ok, stdout, stderr) = run_with_timeout(
        Command::new("node")
            .arg(root.join("tests/browser/embed_parity.mjs"))
            .arg("--web")
            .arg(root.join("web"))
            .arg("--data")
            .arg(&served)
            .current_dir(root.join("tests/browser")),
        Duration::from_secs(420),
    );
    assert!(ok, "the browser run failed:\n{stderr}\n{stdout}");
    let result: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("browser output is not JSON ({e}): {stdout}\n{stderr}"));

    let runs = result["runs"].as_array().unwrap();
    let backends: Vec<&str> = runs.iter().map(|r| r["backend"].as_str().unwrap()).collect();
    assert_eq!(backends, ["webgpu", "cpu"], "the first run must really use WebGPU: {stderr}");
    for r in runs {
        let backend = r["backend"].as_str().unwrap();
        assert_eq!(r["loaded_backend"], r["backend"]);
        assert_eq!(r["dim"].as_u64().unwrap() as usize, native.z_s.len());
        let z: Vec<f64> = r["z_s"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let diff = max_abs_diff(&z, &native.z_s);
        eprintln!(
            "{backend}: max |z_s(browser) - z_s(native)| = {diff:.3e} (load {:.0} ms, embed {:.0} ms)",
            r["load_ms"].as_f64().unwrap(),
            r["embed_ms"].as_f64().unwrap()
        );
        assert!(diff <= TOLERANCE, "{backend}: max |Δ| {diff} > {TOLERANCE}");
        // embed is the mean of embed_each.
        let each = r["each"].as_array().unwrap();
        assert_eq!(each.len(), SHOTS);
        for k in 0..z.len() {
            let mean = each.iter().map(|e| e[k].as_f64().unwrap()).sum::<f64>() / SHOTS as f64;
            assert!((mean - z[k]).abs() < 1e-5, "{backend}: component {k}");
        }
    }
    let bad = result["bad_error"].as_str().unwrap_or_else(|| panic!("bad input was accepted: {result}"));
    assert!(bad.contains("triplet 1: features"), "{bad}");
    let steps = result["trajectory"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{result}");
    assert_eq!(result["trajectory"]["source"], "mouse");
}
