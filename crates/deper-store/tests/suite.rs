//! One test suite for every store: each case is an async fn over `&dyn Store`, run on SQLite
//! always and on PostgreSQL when `DEPER_TEST_POSTGRES_URL` is set (a fresh database per case).

#![allow(clippy::unwrap_used)] // a failing store call should fail the test loudly

use deper_core::dataset::Dataset;
use deper_core::import::ln::{import_ln, LnOptions};
use deper_core::{Triplet, Utterance};
use deper_store::export::{export_dataset, export_ln, LN_FILE, RAW_SAMPLES_FILE};
use deper_store::stimulus::save_stimulus;
use deper_store::*;
use std::path::Path;

/// A small PNG whose pixels depend on `seed` (so each seed has its own SHA-256).
fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([seed, (x % 256) as u8, (y % 256) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn study_input(title: &str) -> StudyInput {
    StudyInput {
        title: title.into(),
        instructions: "Look, then describe.".into(),
        consent: "I agree.".into(),
        capture_mode: CaptureMode::Mouse,
        description_mode: DescriptionMode::Narrative,
        settings: serde_json::json!({"trial_seconds": 20}),
    }
}

/// Mouse samples that rest at two places for 0.5 s each (two dwells), 50 Hz.
fn two_dwells(offset: f64) -> Vec<Sample> {
    let mut out = Vec::new();
    for i in 0..25 {
        out.push(Sample { x: 0.2 + offset, y: 0.3, t: i as f64 * 0.02, source: SampleSource::Mouse });
    }
    for i in 0..25 {
        out.push(Sample { x: 0.7, y: 0.6 + offset, t: 0.6 + i as f64 * 0.02, source: SampleSource::Mouse });
    }
    out
}

async fn settings_roundtrip(store: &dyn Store, _data: &Path) {
    assert_eq!(store.get_setting("k").await.unwrap(), None);
    store.put_setting("k", "one").await.unwrap();
    store.put_setting("k", "two").await.unwrap();
    assert_eq!(store.get_setting("k").await.unwrap().as_deref(), Some("two"));
    store.ping().await.unwrap();
}

async fn studies_create_update_list(store: &dyn Store, _data: &Path) {
    let a = store.create_study(&study_input("A")).await.unwrap();
    let b = store.create_study(&study_input("B")).await.unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(a.settings["trial_seconds"], 20);
    let mut edit = study_input("A2");
    edit.capture_mode = CaptureMode::Both;
    let a2 = store.update_study(a.id, &edit).await.unwrap();
    assert_eq!((a2.title.as_str(), a2.capture_mode), ("A2", CaptureMode::Both));
    assert_eq!(store.get_study(a.id).await.unwrap().unwrap(), a2);
    let titles: Vec<_> = store.list_studies().await.unwrap().into_iter().map(|s| s.title).collect();
    assert_eq!(titles, ["A2", "B"]);
    assert!(matches!(store.update_study(9999, &edit).await, Err(StoreError::NotFound { .. })));
    assert!(store.get_study(9999).await.unwrap().is_none());
}

async fn stimuli_are_content_addressed_and_ordered(store: &dyn Store, data: &Path) {
    let study = store.create_study(&study_input("S")).await.unwrap();
    let bytes = png(8, 6, 1);
    let s1 = save_stimulus(store, data, &bytes).await.unwrap();
    assert_eq!((s1.width, s1.height, s1.bytes), (8, 6, bytes.len() as u64));
    assert_eq!(s1.sha256, sha256_hex(&bytes));
    assert_eq!(std::fs::read(data.join(&s1.file)).unwrap(), bytes);
    // The same bytes again: the same stimulus.
    assert_eq!(save_stimulus(store, data, &bytes).await.unwrap(), s1);
    let s2 = save_stimulus(store, data, &png(4, 4, 2)).await.unwrap();
    assert_ne!(s1.id, s2.id);

    store.attach_stimulus(study.id, s2.id).await.unwrap();
    let order = store.attach_stimulus(study.id, s1.id).await.unwrap();
    assert_eq!(order.iter().map(|s| s.id).collect::<Vec<_>>(), [s2.id, s1.id]);
    assert!(matches!(store.attach_stimulus(study.id, s1.id).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.attach_stimulus(study.id, 9999).await, Err(StoreError::NotFound { .. })));

    let err = save_stimulus(store, data, b"\xff\xd8\xff\xe0 not really").await.unwrap_err().to_string();
    assert!(err.contains("JPEG image does not decode"), "{err}");
    let err = save_stimulus(store, data, b"GIF89a....").await.unwrap_err().to_string();
    assert!(err.contains("GIF") && err.contains("PNG and JPEG"), "{err}");

    // A JPEG is stored as the PNG of its decoded pixels; the same JPEG again is the same stimulus.
    let jpeg = jpeg(24, 16);
    let j1 = save_stimulus(store, data, &jpeg).await.unwrap();
    assert_eq!((j1.width, j1.height), (24, 16));
    let stored = std::fs::read(data.join(&j1.file)).unwrap();
    assert!(stored.starts_with(b"\x89PNG"), "stored as PNG");
    assert_eq!(j1.sha256, deper_store::sha256_hex(&stored));
    let decoded = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap().to_rgb8();
    let from_png = image::load_from_memory_with_format(&stored, image::ImageFormat::Png).unwrap().to_rgb8();
    assert_eq!(decoded, from_png, "the stored PNG holds exactly the JPEG's pixels");
    assert_eq!(save_stimulus(store, data, &jpeg).await.unwrap(), j1);
    let err = save_stimulus(store, data, b"hello").await.unwrap_err().to_string();
    assert!(err.contains("not an image"), "{err}");
    let mut broken = bytes.clone();
    broken.truncate(40);
    let err = save_stimulus(store, data, &broken).await.unwrap_err().to_string();
    assert!(err.contains("does not decode"), "{err}");
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 10) as u8, (y * 15) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

async fn sessions_descriptions_and_finish(store: &dyn Store, data: &Path) {
    let study = store.create_study(&study_input("S")).await.unwrap();
    let stim = save_stimulus(store, data, &png(4, 4, 3)).await.unwrap();
    store.attach_stimulus(study.id, stim.id).await.unwrap();
    let s = store.create_session(study.id, "p-one", "hash-1").await.unwrap();
    assert_eq!((s.participant.as_str(), s.state, s.current_trial), ("p-one", SessionState::Active, 0));
    assert_eq!(s.token_hash, "hash-1");
    assert!(matches!(store.create_session(9999, "p-two", "hash-2").await, Err(StoreError::NotFound { .. })));

    let d = DescriptionRecord {
        trial: 0,
        stimulus_id: stim.id,
        text: "a red square".into(),
        utterances: vec![Utterance { utterance: "a red square".into(), start_time: 0.1, end_time: 0.9 }],
    };
    let after = store.put_description(s.id, &d).await.unwrap();
    assert_eq!(after.current_trial, 1);
    // Replacing trial 0 keeps the session past it.
    let d2 = DescriptionRecord { text: "a red box".into(), ..d.clone() };
    assert_eq!(store.put_description(s.id, &d2).await.unwrap().current_trial, 1);
    assert_eq!(store.session_descriptions(s.id).await.unwrap(), [d2]);

    let cal = serde_json::json!({"points": 9, "error_deg": 1.5});
    store.insert_calibration(s.id, &cal).await.unwrap();
    assert_eq!(store.session_calibrations(s.id).await.unwrap(), [cal]);

    let done = store.finish_session(s.id, "CODE1").await.unwrap();
    assert_eq!((done.state, done.completion_code.as_deref()), (SessionState::Finished, Some("CODE1")));
    let again = store.finish_session(s.id, "CODE2").await.unwrap();
    assert_eq!(again.completion_code.as_deref(), Some("CODE1"));
    assert_eq!(store.list_sessions(study.id).await.unwrap().len(), 1);
}

async fn sample_batches_are_idempotent(store: &dyn Store, data: &Path) {
    let study = store.create_study(&study_input("S")).await.unwrap();
    let stim = save_stimulus(store, data, &png(4, 4, 4)).await.unwrap();
    store.attach_stimulus(study.id, stim.id).await.unwrap();
    let s = store.create_session(study.id, "p", "h").await.unwrap();
    let batch = |id: &str, samples: Vec<Sample>| SampleBatch {
        client_batch_id: id.into(),
        trial: 0,
        stimulus_id: stim.id,
        samples,
    };

    let first = store.insert_sample_batch(s.id, &batch("b1", two_dwells(0.0))).await.unwrap();
    assert_eq!((first.stored, first.duplicate), (50, false));
    let retry = store.insert_sample_batch(s.id, &batch("b1", two_dwells(0.0))).await.unwrap();
    assert_eq!((retry.batch_id.as_str(), retry.stored, retry.duplicate), ("b1", 50, true));
    let reused = store.insert_sample_batch(s.id, &batch("b1", two_dwells(0.0)[..3].to_vec())).await;
    assert!(matches!(reused, Err(StoreError::Conflict(_))), "{reused:?}");

    // Concurrent retries of one new batch store it once.
    let b2 = batch("b2", two_dwells(0.1));
    let acks = futures_join(store, s.id, &b2, 6).await;
    assert_eq!(acks.iter().filter(|a| !a.duplicate).count(), 1, "{acks:?}");
    assert!(acks.iter().all(|a| a.stored == 50));

    let stored = store.session_samples(s.id).await.unwrap();
    assert_eq!(stored.len(), 100);
    let b1: Vec<_> = stored.iter().filter(|x| x.batch_id == "b1").collect();
    assert_eq!(b1.len(), 50);
    for (i, (got, sent)) in b1.iter().zip(two_dwells(0.0)).enumerate() {
        assert_eq!(got.seq as usize, i);
        assert_eq!((got.x, got.y, got.t, got.source), (sent.x, sent.y, sent.t, sent.source));
    }
}

/// Sends `batch` `n` times at once.
async fn futures_join(store: &dyn Store, session: i64, batch: &SampleBatch, n: usize) -> Vec<BatchAck> {
    let mut set = Vec::new();
    for _ in 0..n {
        set.push(store.insert_sample_batch(session, batch));
    }
    let mut out = Vec::new();
    for r in join_all(set).await {
        out.push(r.unwrap());
    }
    out
}

/// Polls every future to completion concurrently (a minimal `join_all`).
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, r) in futures.iter_mut().zip(results.iter_mut()) {
            if r.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *r = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|r| r.unwrap()).collect()
}

async fn jobs_lifecycle(store: &dyn Store, _data: &Path) {
    let params = serde_json::json!({"dataset": "/x", "epochs": 1});
    let a = store.create_job("train_stage1", &params, "cpu").await.unwrap();
    let b = store.create_job("features", &serde_json::json!({}), "cpu").await.unwrap();
    let g = store.create_job("features", &serde_json::json!({}), "cuda").await.unwrap();
    assert_eq!((a.state, a.params.clone(), a.progress), (JobState::Queued, params, 0.0));

    let claimed = store.claim_next_job("cpu").await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.state), (a.id, JobState::Running));
    assert!(claimed.started_at.is_some());
    store.set_job_progress(a.id, 0.5, &serde_json::json!({"epoch": 1}), Some("epoch 1")).await.unwrap();
    store.set_job_progress(a.id, 0.75, &serde_json::json!({"epoch": 2}), Some("epoch 2")).await.unwrap();
    let got = store.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(
        (got.progress, got.progress_detail["epoch"].as_i64(), got.log.as_str()),
        (0.75, Some(2), "epoch 1\nepoch 2\n")
    );

    // Cancelling a queued job ends it; a running one only gets the request.
    let cb = store.request_cancel(b.id).await.unwrap().unwrap();
    assert_eq!((cb.state, cb.cancel_requested), (JobState::Cancelled, true));
    let ca = store.request_cancel(a.id).await.unwrap().unwrap();
    assert_eq!((ca.state, ca.cancel_requested), (JobState::Running, true));
    assert!(store.request_cancel(9999).await.unwrap().is_none());
    assert!(store.claim_next_job("cpu").await.unwrap().is_none(), "a cancelled job must not be claimed");

    let done = store.finish_job(a.id, JobState::Cancelled, Some("cancelled")).await.unwrap();
    assert_eq!(done.state, JobState::Cancelled);
    assert!(store.finish_job(a.id, JobState::Running, None).await.is_err());

    // A job left running by a dead server is failed on the next start.
    store.claim_next_job("cuda").await.unwrap().unwrap();
    assert_eq!(store.fail_running_jobs("server restarted").await.unwrap(), 1);
    let failed = store.get_job(g.id).await.unwrap().unwrap();
    assert_eq!((failed.state, failed.error.as_deref()), (JobState::Failed, Some("server restarted")));
    assert_eq!(store.list_jobs().await.unwrap().len(), 3);

    let art = store
        .insert_artifact(&NewArtifact {
            kind: "checkpoint".into(),
            path: "jobs/1/run/model.mpk".into(),
            sha256: Some("ab".into()),
            job_id: Some(a.id),
            study_id: None,
        })
        .await
        .unwrap();
    assert_eq!(store.get_artifact(art.id).await.unwrap().unwrap(), art);
    assert_eq!(store.job_artifacts(a.id).await.unwrap(), [art]);
    assert!(store.job_artifacts(b.id).await.unwrap().is_empty());

    // A study's artifacts by kind, oldest first (participants' in-page embeddings).
    let study = store.create_study(&study_input("Artifacts")).await.unwrap();
    let mut embeddings = Vec::new();
    for name in ["e1.json", "e2.json"] {
        let new = NewArtifact {
            kind: "embedding".into(),
            path: format!("embeddings/{name}"),
            sha256: None,
            job_id: None,
            study_id: Some(study.id),
        };
        embeddings.push(store.insert_artifact(&new).await.unwrap());
    }
    let other = NewArtifact {
        kind: "export".into(),
        path: "x.zip".into(),
        sha256: None,
        job_id: None,
        study_id: Some(study.id),
    };
    store.insert_artifact(&other).await.unwrap();
    assert_eq!(store.study_artifacts(study.id, "embedding").await.unwrap(), embeddings);
    assert!(store.study_artifacts(study.id + 1, "embedding").await.unwrap().is_empty());
}

async fn subject_embeddings_put_get_overwrite(store: &dyn Store, _data: &Path) {
    let study = store.create_study(&study_input("Embeddings")).await.unwrap();
    let other = store.create_study(&study_input("Other")).await.unwrap();
    let a = store.create_session(study.id, "p-alpha", "ha").await.unwrap();
    let b = store.create_session(study.id, "p-beta", "hb").await.unwrap();
    let c = store.create_session(other.id, "p-gamma", "hc").await.unwrap();
    assert_eq!(store.subject_embedding("p-alpha").await.unwrap(), None, "nothing stored yet");

    // Values a decimal text could round: they come back bit for bit.
    let z_a = vec![0.1f32, -3.5e-7, f32::MIN_POSITIVE, 1e-45, f32::MAX, -0.0];
    let new = |session_id: i64, z_s: Vec<f32>, encoder: &str| NewSubjectEmbedding {
        session_id,
        z_s,
        encoder: encoder.into(),
        backend: "webgpu".into(),
        triplets: 5,
    };
    let put = store.put_subject_embedding(&new(a.id, z_a.clone(), "enc-1")).await.unwrap();
    assert_eq!(
        (put.session_id, put.study_id, put.subject.as_str(), put.encoder.as_str(), put.triplets),
        (a.id, study.id, "p-alpha", "enc-1", 5)
    );
    let bits = |z: &[f32]| z.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&put.z_s), bits(&z_a));
    let got = store.subject_embedding("p-alpha").await.unwrap().unwrap();
    assert_eq!(bits(&got.z_s), bits(&z_a));
    assert_eq!(got, put);

    // A second upload of the same session replaces the first (vector, encoder, time).
    let z_a2 = vec![1.0f32, 2.0, 3.0];
    let again = store.put_subject_embedding(&new(a.id, z_a2.clone(), "enc-2")).await.unwrap();
    assert!(again.updated_at >= put.updated_at);
    let got = store.subject_embedding("p-alpha").await.unwrap().unwrap();
    assert_eq!((got.z_s.as_slice(), got.encoder.as_str()), (z_a2.as_slice(), "enc-2"));

    store.put_subject_embedding(&new(b.id, vec![4.0, 5.0], "enc-2")).await.unwrap();
    store.put_subject_embedding(&new(c.id, vec![6.0], "enc-2")).await.unwrap();
    assert_eq!(store.subject_embedding("p-gamma").await.unwrap().unwrap().study_id, other.id);
    let in_study: Vec<_> =
        store.study_subject_embeddings(study.id).await.unwrap().into_iter().map(|e| e.subject).collect();
    assert_eq!(in_study, ["p-alpha", "p-beta"]);
    assert!(store.study_subject_embeddings(9999).await.unwrap().is_empty());

    // Unknown subjects and sessions.
    assert_eq!(store.subject_embedding("p-nobody").await.unwrap(), None);
    assert_eq!(store.subject_embedding("").await.unwrap(), None);
    let missing = store.put_subject_embedding(&new(9999, vec![1.0], "enc-1")).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
}

async fn export_dataset_and_ln_roundtrip(store: &dyn Store, data: &Path) {
    let study = store.create_study(&study_input("Export")).await.unwrap();
    let stims = [
        save_stimulus(store, data, &png(10, 8, 10)).await.unwrap(),
        save_stimulus(store, data, &png(6, 6, 11)).await.unwrap(),
    ];
    for s in &stims {
        store.attach_stimulus(study.id, s.id).await.unwrap();
    }
    let mut sent: Vec<(String, Vec<Sample>)> = Vec::new();
    for (p, participant) in ["p-a", "p-b"].iter().enumerate() {
        let session = store.create_session(study.id, participant, &format!("h{p}")).await.unwrap();
        for (trial, stim) in stims.iter().enumerate() {
            let samples = two_dwells(0.05 * (p + trial) as f64);
            // Two batches per trial, the second arriving first: export orders by time.
            for (i, part) in [&samples[25..], &samples[..25]].iter().enumerate() {
                let batch = SampleBatch {
                    client_batch_id: format!("{trial}-{i}"),
                    trial: trial as u32,
                    stimulus_id: stim.id,
                    samples: part.to_vec(),
                };
                store.insert_sample_batch(session.id, &batch).await.unwrap();
            }
            let text = format!("{participant} sees image {trial}");
            let d = DescriptionRecord {
                trial: trial as u32,
                stimulus_id: stim.id,
                text: text.clone(),
                utterances: vec![Utterance { utterance: text, start_time: 0.0, end_time: 1.0 }],
            };
            store.put_description(session.id, &d).await.unwrap();
            sent.push((format!("study-{}/{}/{participant}", study.id, stim.sha256), samples));
        }
        store.finish_session(session.id, "C").await.unwrap();
    }

    let out = data.join("export");
    let report = export_dataset(store, data, study.id, &out).await.unwrap();
    assert_eq!((report.sessions, report.triplets, report.samples, report.images), (2, 4, 200, 2));
    assert_eq!(report.empty_trajectories, 0);
    let ds = Dataset::open(&out).unwrap();
    let triplets = ds.load_triplets().unwrap();
    assert_eq!(triplets.len(), 4);
    for t in &triplets {
        // Two rests of 0.48 s each: two dwell steps.
        assert_eq!(t.trajectory.steps.len(), 2, "{}: {:?}", t.id, t.trajectory);
        assert!(ds.image_path(&t.image).is_some_and(|p| p.is_file()), "image of {} missing", t.id);
    }
    // The raw samples file holds exactly what was sent, per triplet, in time order.
    let raw = std::fs::read_to_string(out.join(RAW_SAMPLES_FILE)).unwrap();
    let mut lines: Vec<serde_json::Value> = raw.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.sort_by_key(|l| l["triplet"].as_str().unwrap().to_string());
    sent.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(lines.len(), sent.len());
    for (line, (id, samples)) in lines.iter().zip(&sent) {
        assert_eq!(line["triplet"], id.as_str());
        let mut got: Vec<Sample> = serde_json::from_value(line["samples"].clone()).unwrap();
        got.sort_by(|a, b| a.t.total_cmp(&b.t));
        assert_eq!(&got, samples);
    }
    // Derived trajectories are kept in the store.
    let sessions = store.list_sessions(study.id).await.unwrap();
    assert_eq!(store.session_trajectories(sessions[0].id).await.unwrap().len(), 2);

    // LN export → the LN importer gives back the same triplets.
    let ln_dir = data.join("ln");
    let ln_report = export_ln(store, data, study.id, &ln_dir).await.unwrap();
    assert_eq!((ln_report.triplets, ln_report.samples), (4, 200));
    let mut imported: Vec<Triplet> = Vec::new();
    import_ln(
        &ln_dir.join(LN_FILE),
        &LnOptions::default(),
        &mut |t| {
            imported.push(t);
            Ok(())
        },
        &mut |_| {},
    )
    .unwrap();
    let mut exported = triplets.clone();
    exported.sort_by(|a, b| a.id.cmp(&b.id));
    imported.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(imported, exported);
}

macro_rules! suite {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = deper_store::open(dir.path().join("deper.db").to_str().unwrap()).await.unwrap();
                    assert_eq!(store.backend(), "sqlite");
                    super::$case(&*store, dir.path()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(base) = deper_store::testing::postgres_url() else {
                        eprintln!("DEPER_TEST_POSTGRES_URL not set: PostgreSQL case skipped");
                        return;
                    };
                    let url = deper_store::testing::fresh_postgres_database(&base).await.unwrap();
                    let store = deper_store::open(&url).await.unwrap();
                    assert_eq!(store.backend(), "postgres");
                    let dir = tempfile::tempdir().unwrap();
                    super::$case(&*store, dir.path()).await;
                }
            )+
        }
    };
}

suite!(
    settings_roundtrip,
    studies_create_update_list,
    stimuli_are_content_addressed_and_ordered,
    sessions_descriptions_and_finish,
    sample_batches_are_idempotent,
    jobs_lifecycle,
    subject_embeddings_put_get_overwrite,
    export_dataset_and_ln_roundtrip,
);

#[tokio::test]
async fn sqlite_file_uses_wal_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/deper.db");
    {
        let store = deper_store::open(path.to_str().unwrap()).await.unwrap();
        store.put_setting("k", "v").await.unwrap();
        // While connections are open, WAL mode keeps its log next to the file.
        assert!(dir.path().join("sub/deper.db-wal").exists(), "WAL journal expected");
    }
    assert!(path.is_file());
    let store = deper_store::open(&format!("sqlite:{}", path.display())).await.unwrap();
    assert_eq!(store.get_setting("k").await.unwrap().as_deref(), Some("v"));
}
