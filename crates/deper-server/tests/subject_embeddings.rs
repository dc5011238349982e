//! A participant's z_s through the server: the page's upload becomes the store's row (with the
//! encoder's version), the caption API finds it by the participant's pseudonym, a new upload
//! replaces it, an unknown name is 404, and the z_s files an older server wrote are copied into
//! the store on start. The captioner here echoes the persona vector it receives, so the test sees
//! exactly which z_s the caption path looked up.

#![allow(clippy::unwrap_used)] // a failing call should fail the test loudly

mod common;

use common::{png, Api};
use deper_server::server::caption::{CaptionRequest, CaptionResponse, CaptionService};
use deper_server::server::embedder::EmbedderAssets;
use deper_server::server::embeddings::{StoredEmbedding, EMBEDDING_KIND};
use deper_server::server::{ServerSettings, DB_FILE};
use deper_store::{NewArtifact, SubjectEmbedding};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Answers with the persona vector it was given, as JSON text.
#[derive(Debug)]
struct EchoPersona;

impl CaptionService for EchoPersona {
    fn caption(&self, _image: &Path, request: &CaptionRequest) -> anyhow::Result<CaptionResponse> {
        Ok(CaptionResponse {
            caption: serde_json::to_string(&request.persona)?,
            personalized: request.persona.is_some(),
            generated_ids: Vec::new(),
            batch_size: 1,
        })
    }
}

fn deper(args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deper")).args(args).output().unwrap();
    assert!(out.status.success(), "deper {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A tiny stage-1 run on pixel-stats features: the subject encoder the page would run.
fn encoder_run(dir: &Path) -> PathBuf {
    let world = dir.join("world");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    deper(&["synth", "--out", &s(&world), "--subjects", "4", "--images", "10", "--seed", "3"]);
    deper(&["dataset", "split", &s(&world), "--unseen", "s03", "--shots", "3"]);
    deper(&["features", "extract", "--data", &s(&world)]);
    let config = dir.join("config.json");
    let model =
        r#"{"model": {"d_model": 32, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "token_dim": 16}}"#;
    std::fs::write(&config, model).unwrap();
    let run = dir.join("run");
    deper(&["train", "stage1", "--data", &s(&world), "--out", &s(&run), "--config", &s(&config), "--epochs", "1"]);
    run
}

/// What an older server left: a study, a participant's session, and their z_s only as a file
/// named by an artifact.
async fn older_server_data(data: &Path, z_s: &[f32]) {
    std::fs::create_dir_all(data.join("embeddings")).unwrap();
    let store = deper_store::open(data.join(DB_FILE).to_str().unwrap()).await.unwrap();
    let input = serde_json::from_value(json!({"title": "Before the table"})).unwrap();
    let study = store.create_study(&input).await.unwrap();
    let session = store.create_session(study.id, "p-older", "older-token-hash").await.unwrap();
    let record = StoredEmbedding {
        session_id: session.id,
        study_id: study.id,
        participant: session.participant.clone(),
        z_s: z_s.to_vec(),
        backend: "cpu".into(),
        encoder_version: "older-encoder".into(),
        triplets: 5,
    };
    let relative = format!("embeddings/session-{}.json", session.id);
    std::fs::write(data.join(&relative), serde_json::to_vec(&record).unwrap()).unwrap();
    let artifact = NewArtifact {
        kind: EMBEDDING_KIND.into(),
        path: relative,
        sha256: None,
        job_id: None,
        study_id: Some(study.id),
    };
    store.insert_artifact(&artifact).await.unwrap();
}

/// The persona vector the echoing captioner received for `subject`, or the error status and body.
async fn caption_persona(api: &Api, token: &str, image: &str, subject: &str) -> Result<Vec<f32>, (u16, Value)> {
    let (status, body) = api.post("/api/captions", Some(token), &json!({"image": image, "subject": subject})).await;
    if status != 200 {
        return Err((status, body));
    }
    assert_eq!(body["personalized"], true, "{body}");
    Ok(serde_json::from_str(body["caption"].as_str().unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn z_s_is_stored_as_a_row_and_captions_find_it_by_subject() {
    let work = tempfile::tempdir().unwrap();
    let assets = EmbedderAssets::load(&encoder_run(work.path())).unwrap();
    let (dim, version) = (assets.dim, assets.version.clone());
    let data = work.path().join("data");
    let older: Vec<f32> = (0..dim).map(|i| 0.25 - i as f32 / 7.0).collect();
    older_server_data(&data, &older).await;

    let mut settings = ServerSettings::new(&data);
    settings.caption = Some(Arc::new(EchoPersona));
    settings.embedder = Some(Arc::new(assets));
    let server = common::InProcess::start(settings).await;
    let (api, token, r) = (&server.api, server.token.clone(), server.r());

    let (status, study) = api.post("/api/studies", r, &json!({"title": "Embeddings"})).await;
    assert_eq!(status, 201, "{study}");
    let study = study["id"].as_i64().unwrap();
    let (status, stim) = api.upload(&token, png(16, 16, 9)).await;
    assert_eq!(status, 201, "{stim}");
    let image = stim["sha256"].as_str().unwrap().to_string();
    let attach = json!({"stimulus_id": stim["id"]});
    assert_eq!(api.post(&format!("/api/studies/{study}/stimuli"), r, &attach).await.0, 200);
    let (status, joined) = api.post(&format!("/api/studies/{study}/join"), None, &json!({})).await;
    assert_eq!(status, 201, "{joined}");
    let (session, participant) = (joined["session_id"].as_i64().unwrap(), joined["participant"].as_str().unwrap());
    let session_token = joined["token"].as_str().unwrap();

    // The page's upload: the caption API then captions with exactly this z_s.
    let upload = |z_s: &[f32]| json!({"z_s": z_s, "backend": "cpu", "encoder_version": version, "triplets": 3});
    let first: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
    let path = format!("/api/sessions/{session}/embedding");
    let (status, body) = api.post(&path, Some(session_token), &upload(&first)).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["artifact_id"].as_i64().is_some(), "{body}");
    assert_eq!(caption_persona(api, &token, &image, participant).await.unwrap(), first);

    // A second upload replaces the first.
    let second: Vec<f32> = first.iter().map(|v| v * -2.0 + 0.5).collect();
    assert_eq!(api.post(&path, Some(session_token), &upload(&second)).await.0, 201);
    assert_eq!(caption_persona(api, &token, &image, participant).await.unwrap(), second);

    // The older server's file was copied into the store on start.
    assert_eq!(caption_persona(api, &token, &image, "p-older").await.unwrap(), older);
    let (status, body) = caption_persona(api, &token, &image, "p-nobody").await.unwrap_err();
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no stored z_s for subject `p-nobody`"), "{body}");

    // The study's map places its participant (one point per session, the latest z_s).
    let (status, map) = api.get(&format!("/api/studies/{study}/embeddings"), r).await;
    assert_eq!(status, 200, "{map}");
    assert_eq!(map["dim"], dim, "{map}");
    let points = map["points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{map}");
    assert_eq!((points[0]["subject"].as_str(), points[0]["session_id"].as_i64()), (Some(participant), Some(session)));

    server.stop().await;

    // The rows: the encoder that made each z_s, and where it came from.
    let store = deper_store::open(data.join(DB_FILE).to_str().unwrap()).await.unwrap();
    let row: SubjectEmbedding = store.subject_embedding(participant).await.unwrap().unwrap();
    assert_eq!(
        (row.session_id, row.study_id, row.encoder.as_str(), row.triplets),
        (session, study, version.as_str(), 3)
    );
    assert_eq!(row.z_s, second);
    let old = store.subject_embedding("p-older").await.unwrap().unwrap();
    assert_eq!((old.encoder.as_str(), old.backend.as_str(), old.triplets), ("older-encoder", "cpu", 5));
    // The copy is made once: on a later start a setting says it is done.
    assert_eq!(deper_server::server::embeddings::backfill_from_files(&*store, &data).await.unwrap(), 0);
}
