//! Subject embeddings the browser computed: a participant's page posts its z_s (the mean over their
//! described trials, computed in the page with the server's encoder), the server keeps it as a row of
//! the store (one per session, with the encoder's version) and as a JSON file named by an artifact
//! of the study, and the study's map places every participant (and the demo world's reference
//! subjects) in 2-D by PCA. The caption API resolves `"subject": NAME` with one indexed lookup.
//!
//! - `POST /api/sessions/{id}/embedding` (session token) `{"z_s", "backend", "encoder_version", "triplets"}`
//! - `GET /api/studies/{id}/embeddings` (researcher token, or a session token of that study when it shows
//!   the preview, with `X-Deper-Session`): `{"dim", "points": [{"subject", "kind", "x", "y", "session_id"?}]}`

use super::auth::{researcher_or_previewing_session, session_for};
use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use deper_store::{NewArtifact, NewSubjectEmbedding, Store};
use serde::{Deserialize, Serialize};

/// Artifact kind of a stored participant embedding.
pub const EMBEDDING_KIND: &str = "embedding";

/// Subjects with a known z_s beside the participants (the demo world's, from the same encoder).
#[derive(Debug, Clone, Default)]
pub struct ReferenceSubjects {
    pub subjects: Vec<(String, Vec<f32>)>,
}

pub fn routes(_state: AppState) -> Router<AppState> {
    Router::new()
        .route("/sessions/{id}/embedding", post(store_embedding))
        .route("/studies/{id}/embeddings", get(study_embeddings))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingIn {
    z_s: Vec<f32>,
    #[serde(default)]
    backend: String,
    #[serde(default)]
    encoder_version: String,
    #[serde(default)]
    triplets: usize,
}

/// What `DATA/embeddings/session-N.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEmbedding {
    pub session_id: i64,
    pub study_id: i64,
    pub participant: String,
    pub z_s: Vec<f32>,
    pub backend: String,
    pub encoder_version: String,
    pub triplets: usize,
}

async fn store_embedding(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<EmbeddingIn>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let session = session_for(&app, &headers, id).await?;
    let assets = app.embedder.clone().ok_or_else(|| ApiError::conflict("this server has no subject encoder"))?;
    if input.z_s.len() != assets.dim {
        return Err(ApiError::unprocessable(format!(
            "`z_s` has {} values; the encoder's z_s has {}",
            input.z_s.len(),
            assets.dim
        )));
    }
    if let Some(i) = input.z_s.iter().position(|v| !v.is_finite()) {
        return Err(ApiError::unprocessable(format!("z_s[{i}] is not a finite number")));
    }
    if !input.encoder_version.is_empty() && input.encoder_version != assets.version {
        return Err(ApiError::conflict(format!(
            "z_s was computed with encoder {}, the server's is {}: reload the page",
            input.encoder_version, assets.version
        )));
    }
    let record = StoredEmbedding {
        session_id: session.id,
        study_id: session.study_id,
        participant: session.participant.clone(),
        z_s: input.z_s,
        backend: input.backend,
        encoder_version: assets.version.clone(),
        triplets: input.triplets,
    };
    // The row is what the caption API and the map read; the file (and its artifact) keeps the
    // upload in the data folder, as before.
    app.store.put_subject_embedding(&new_row(&record)).await?;
    let relative = embedding_file(session.id);
    let path = app.data_dir.join(&relative);
    let text = serde_json::to_vec_pretty(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    let dir = app.data_dir.join("embeddings");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| ApiError::internal(format!("{}: {e}", dir.display())))?;
    // Written whole then renamed: a reader never sees half a file.
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, &text).await.map_err(|e| ApiError::internal(format!("{}: {e}", tmp.display())))?;
    tokio::fs::rename(&tmp, &path).await.map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let artifact = app
        .store
        .insert_artifact(&NewArtifact {
            kind: EMBEDDING_KIND.into(),
            path: relative,
            sha256: Some(deper_store::sha256_hex(&text)),
            job_id: None,
            study_id: Some(session.study_id),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "artifact_id": artifact.id }))))
}

/// Where a session's z_s is kept, relative to the data folder: one file per session, replaced by
/// each upload (every upload also adds an artifact row naming it).
fn embedding_file(session_id: i64) -> String {
    format!("embeddings/session-{session_id}.json")
}

/// The store row of a stored file's record.
fn new_row(record: &StoredEmbedding) -> NewSubjectEmbedding {
    NewSubjectEmbedding {
        session_id: record.session_id,
        z_s: record.z_s.clone(),
        encoder: record.encoder_version.clone(),
        backend: record.backend.clone(),
        triplets: record.triplets as u64,
    }
}

async fn read_embedding(data_dir: &std::path::Path, relative: &str) -> Option<StoredEmbedding> {
    let text = tokio::fs::read(data_dir.join(relative)).await.ok()?;
    serde_json::from_slice::<StoredEmbedding>(&text).ok()
}

/// Setting marking that the embedding files of an older data folder have been copied into the store.
const BACKFILL_SETTING: &str = "subject_embeddings_from_files";

/// Copies into the store the z_s files that servers before the `subject_embeddings` table wrote
/// (once per database; a row already stored is kept). Returns how many rows it added.
pub async fn backfill_from_files(store: &dyn Store, data_dir: &std::path::Path) -> anyhow::Result<usize> {
    if store.get_setting(BACKFILL_SETTING).await?.is_some() {
        return Ok(0);
    }
    let mut added = 0;
    for study in store.list_studies().await? {
        // Each file is read once however many uploads named it.
        let files: std::collections::BTreeSet<String> =
            store.study_artifacts(study.id, EMBEDDING_KIND).await?.into_iter().map(|a| a.path).collect();
        for relative in files {
            let Some(record) = read_embedding(data_dir, &relative).await else { continue };
            if store.subject_embedding(&record.participant).await?.is_none() {
                store.put_subject_embedding(&new_row(&record)).await?;
                added += 1;
            }
        }
    }
    store.put_setting(BACKFILL_SETTING, &deper_store::now_ms().to_string()).await?;
    Ok(added)
}

/// A participant's latest z_s, found by pseudonym in any study (one indexed query), or a reference
/// subject's.
pub async fn subject_vector(app: &AppState, subject: &str) -> ApiResult<Option<Vec<f32>>> {
    if let Some((_, z)) = app.references.subjects.iter().find(|(name, _)| name == subject) {
        return Ok(Some(z.clone()));
    }
    Ok(app.store.subject_embedding(subject).await?.map(|row| row.z_s))
}

#[derive(Debug, Serialize)]
struct MapPoint {
    subject: String,
    /// `participant` (this study's) or `reference` (the demo world's subjects).
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<i64>,
    x: f64,
    y: f64,
}

#[derive(Debug, Serialize)]
struct Map {
    dim: usize,
    points: Vec<MapPoint>,
}

async fn study_embeddings(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> ApiResult<Json<Map>> {
    // A participant sees the map of their own study only.
    if let Some(session) = researcher_or_previewing_session(&app, &headers).await? {
        if session.study_id != id {
            return Err(ApiError::forbidden("this session may not see another study's embedding map"));
        }
    }
    let participants = app.store.study_subject_embeddings(id).await?;
    let mut names = Vec::new();
    let mut vectors = Vec::new();
    for (name, z) in &app.references.subjects {
        names.push((name.clone(), "reference", None));
        vectors.push(z.clone());
    }
    for e in &participants {
        names.push((e.subject.clone(), "participant", Some(e.session_id)));
        vectors.push(e.z_s.clone());
    }
    let dim = vectors.first().map_or(0, Vec::len);
    let coords = tokio::task::spawn_blocking(move || deper_report::project::pca(&vectors))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let points = names
        .into_iter()
        .zip(coords)
        .map(|((subject, kind, session_id), [x, y])| MapPoint { subject, kind, session_id, x, y })
        .collect();
    Ok(Json(Map { dim, points }))
}
