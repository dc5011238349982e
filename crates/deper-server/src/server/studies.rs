//! Researcher endpoints (all behind the researcher token): studies, image uploads, trial
//! order, sessions and their samples, exports, artifact downloads.

use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use deper_store::export::{export_dataset, export_ln, ExportReport};
use deper_store::{Artifact, NewArtifact, Session, Stimulus, StoredSample, Study, StudyInput};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

pub fn routes(state: AppState) -> Router<AppState> {
    let upload_limit = state.limits.max_upload_bytes;
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/studies", get(list_studies).post(create_study))
        .route("/studies/{id}", get(get_study).put(update_study))
        .route("/studies/{id}/stimuli", post(attach_stimulus))
        .route("/studies/{id}/sessions", get(list_sessions))
        .route("/studies/{id}/sessions/{session}/samples", get(session_samples))
        .route("/studies/{id}/sessions/{session}/calibrations", get(session_calibrations))
        .route("/studies/{id}/export", post(export_to_folder))
        .route("/studies/{id}/export.zip", get(export_zip))
        .route("/artifacts/{id}", get(get_artifact))
        .route("/artifacts/{id}/download", get(download_artifact))
        .layer(DefaultBodyLimit::max(body_limit))
        .merge(Router::new().route("/stimuli", post(upload_stimulus)).layer(DefaultBodyLimit::max(upload_limit)))
        .route_layer(middleware::from_fn_with_state(state, super::auth::require_researcher))
}

fn check_study(input: &StudyInput) -> ApiResult<()> {
    if input.title.trim().is_empty() {
        return Err(ApiError::unprocessable("`title` must not be empty"));
    }
    if !input.settings.is_object() {
        return Err(ApiError::unprocessable("`settings` must be a JSON object"));
    }
    Ok(())
}

async fn list_studies(State(app): State<AppState>) -> ApiResult<Json<Vec<Study>>> {
    Ok(Json(app.store.list_studies().await?))
}

async fn create_study(
    State(app): State<AppState>,
    ApiJson(input): ApiJson<StudyInput>,
) -> ApiResult<(StatusCode, Json<Study>)> {
    check_study(&input)?;
    let study = app.store.create_study(&input).await?;
    tracing::info!(study = study.id, title = %study.title, "study created");
    Ok((StatusCode::CREATED, Json(study)))
}

#[derive(Debug, Serialize)]
struct StudyDetail {
    #[serde(flatten)]
    study: Study,
    stimuli: Vec<Stimulus>,
}

async fn study_or_404(app: &AppState, id: i64) -> ApiResult<Study> {
    app.store.get_study(id).await?.ok_or_else(|| ApiError::not_found(format!("study {id} not found")))
}

async fn get_study(State(app): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<StudyDetail>> {
    let study = study_or_404(&app, id).await?;
    let stimuli = app.store.study_stimuli(id).await?;
    Ok(Json(StudyDetail { study, stimuli }))
}

async fn update_study(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    ApiJson(input): ApiJson<StudyInput>,
) -> ApiResult<Json<Study>> {
    check_study(&input)?;
    Ok(Json(app.store.update_study(id, &input).await?))
}

/// `POST /api/stimuli`: the image as the raw body, or as the first file of a multipart form.
async fn upload_stimulus(State(app): State<AppState>, req: Request) -> ApiResult<(StatusCode, Json<Stimulus>)> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let too_large = |detail: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("image upload too large (limit {} bytes): {detail}", app.limits.max_upload_bytes),
        )
    };
    let bytes: Bytes = if is_multipart {
        let mut form = Multipart::from_request(req, &app).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let field = form
            .next_field()
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => too_large(e.body_text()),
                status => ApiError::new(status, e.body_text()),
            })?
            .ok_or_else(|| ApiError::unprocessable("the multipart form has no file field"))?;
        field.bytes().await.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => too_large(e.body_text()),
            status => ApiError::new(status, e.body_text()),
        })?
    } else {
        Bytes::from_request(req, &app).await.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => too_large(e.body_text()),
            status => ApiError::new(status, e.body_text()),
        })?
    };
    if bytes.is_empty() {
        return Err(ApiError::unprocessable("empty upload: send the PNG or JPEG image as the request body"));
    }
    let stimulus = deper_store::stimulus::save_stimulus(&*app.store, &app.data_dir, &bytes).await?;
    Ok((StatusCode::CREATED, Json(stimulus)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachIn {
    stimulus_id: i64,
}

async fn attach_stimulus(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    ApiJson(input): ApiJson<AttachIn>,
) -> ApiResult<Json<Vec<Stimulus>>> {
    Ok(Json(app.store.attach_stimulus(id, input.stimulus_id).await?))
}

async fn list_sessions(State(app): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Vec<Session>>> {
    study_or_404(&app, id).await?;
    Ok(Json(app.store.list_sessions(id).await?))
}

async fn session_samples(
    State(app): State<AppState>,
    Path((id, session)): Path<(i64, i64)>,
) -> ApiResult<Json<Vec<StoredSample>>> {
    match app.store.get_session(session).await? {
        Some(s) if s.study_id == id => Ok(Json(app.store.session_samples(session).await?)),
        _ => Err(ApiError::not_found(format!("session {session} of study {id} not found"))),
    }
}

/// The calibration records a session's page stored (webcam calibration and its validation).
async fn session_calibrations(
    State(app): State<AppState>,
    Path((id, session)): Path<(i64, i64)>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    match app.store.get_session(session).await? {
        Some(s) if s.study_id == id => Ok(Json(app.store.session_calibrations(session).await?)),
        _ => Err(ApiError::not_found(format!("session {session} of study {id} not found"))),
    }
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// A deper dataset folder (`dataset.json`, `triplets.jsonl`, `images/`, `samples.jsonl`).
    Dataset,
    /// Localized-Narratives JSONL (`narratives.jsonl`, `images/`).
    Ln,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportIn {
    #[serde(default = "default_format")]
    format: ExportFormat,
}

fn default_format() -> ExportFormat {
    ExportFormat::Dataset
}

/// Exports `study` into a new folder under `DATA/exports/`; returns the folder and the report.
pub async fn export_study(app: &AppState, study: i64, format: ExportFormat) -> ApiResult<(PathBuf, ExportReport)> {
    study_or_404(app, study).await?;
    let name = format!(
        "study-{study}-{}-{}-{}",
        match format {
            ExportFormat::Dataset => "dataset",
            ExportFormat::Ln => "ln",
        },
        deper_store::now_ms(),
        deper_store::random_hex(3)?
    );
    let rel = PathBuf::from("exports").join(name);
    let out = app.data_dir.join(&rel);
    let report = match format {
        ExportFormat::Dataset => export_dataset(&*app.store, &app.data_dir, study, &out).await?,
        ExportFormat::Ln => export_ln(&*app.store, &app.data_dir, study, &out).await?,
    };
    Ok((rel, report))
}

#[derive(Debug, Serialize)]
struct ExportOut {
    artifact: Artifact,
    /// The folder on the server.
    path: String,
    report: ExportReport,
}

/// `POST /api/studies/{id}/export {"format": "dataset"|"ln"}`: a folder on the server,
/// registered as an artifact (download it as a zip from `/api/artifacts/{id}/download`).
async fn export_to_folder(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    ApiJson(input): ApiJson<ExportIn>,
) -> ApiResult<(StatusCode, Json<ExportOut>)> {
    let (rel, report) = export_study(&app, id, input.format).await?;
    let kind = match input.format {
        ExportFormat::Dataset => "dataset_export",
        ExportFormat::Ln => "ln_export",
    };
    let artifact = app
        .store
        .insert_artifact(&NewArtifact {
            kind: kind.into(),
            path: rel.display().to_string(),
            sha256: None,
            job_id: None,
            study_id: Some(id),
        })
        .await?;
    let path = app.data_dir.join(&rel).display().to_string();
    Ok((StatusCode::CREATED, Json(ExportOut { artifact, path, report })))
}

#[derive(Debug, Deserialize)]
struct ZipQuery {
    #[serde(default = "default_format")]
    format: ExportFormat,
}

/// `GET /api/studies/{id}/export.zip?format=dataset|ln`: the export as a zip download.
async fn export_zip(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<ZipQuery>,
) -> ApiResult<Response> {
    let (rel, _) = export_study(&app, id, q.format).await?;
    let name = rel.file_name().map_or_else(|| "export".to_string(), |n| n.to_string_lossy().into_owned());
    zip_response(app.data_dir.join(&rel), &name).await
}

async fn get_artifact(State(app): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Artifact>> {
    Ok(Json(artifact_or_404(&app, id).await?))
}

async fn artifact_or_404(app: &AppState, id: i64) -> ApiResult<Artifact> {
    app.store.get_artifact(id).await?.ok_or_else(|| ApiError::not_found(format!("artifact {id} not found")))
}

/// A file artifact as it is; a folder as a zip.
async fn download_artifact(State(app): State<AppState>, Path(id): Path<i64>) -> ApiResult<Response> {
    let artifact = artifact_or_404(&app, id).await?;
    let path = app.data_dir.join(&artifact.path);
    let name = path.file_name().map_or_else(|| format!("artifact-{id}"), |n| n.to_string_lossy().into_owned());
    if path.is_dir() {
        return zip_response(path, &name).await;
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::not_found(format!("artifact {id}: {}: {e}", path.display())))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        bytes,
    )
        .into_response())
}

async fn zip_response(dir: PathBuf, name: &str) -> ApiResult<Response> {
    let bytes = tokio::task::spawn_blocking(move || zip_dir(&dir)).await.map_err(ApiError::internal)??;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.zip\"")),
        ],
        bytes,
    )
        .into_response())
}

/// Every file under `dir`, zipped in memory with paths relative to `dir`.
pub fn zip_dir(dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))? {
            let path = entry.map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
        zip.start_file(rel, options)?;
        let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        zip.write_all(&bytes)?;
    }
    Ok(zip.finish()?.into_inner())
}
