//! Participant endpoints: join a study, fetch the next trial, upload sample batches
//! (idempotent on the client's batch id), describe, calibrate, finish. Every call after
//! `join` carries the session's own token.

use super::auth::session_for;
use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deper_core::Utterance;
use deper_store::{BatchAck, DescriptionRecord, Sample, SampleBatch, Session, Stimulus, Study};
use serde::{Deserialize, Serialize};

/// Longest client batch id.
const MAX_BATCH_ID: usize = 128;
/// Longest description, in characters.
const MAX_TEXT: usize = 20_000;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/studies/{id}/join", post(join))
        .route("/studies/{id}/brief", get(brief))
        .route("/sessions/{id}/next", get(next))
        .route("/sessions/{id}/samples", post(samples))
        .route("/sessions/{id}/descriptions", post(describe))
        .route("/sessions/{id}/calibration", post(calibrate))
        .route("/sessions/{id}/finish", post(finish))
        .route("/images/{sha256}", get(image))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
}

#[derive(Debug, Serialize)]
struct StudyBrief {
    id: i64,
    title: String,
    instructions: String,
    consent: String,
    capture_mode: deper_store::CaptureMode,
    description_mode: deper_store::DescriptionMode,
    settings: serde_json::Value,
}

impl From<Study> for StudyBrief {
    fn from(s: Study) -> Self {
        Self {
            id: s.id,
            title: s.title,
            instructions: s.instructions,
            consent: s.consent,
            capture_mode: s.capture_mode,
            description_mode: s.description_mode,
            settings: s.settings,
        }
    }
}

#[derive(Debug, Serialize)]
struct Joined {
    session_id: i64,
    /// Send as `Authorization: Bearer <token>` on every call of this session.
    token: String,
    participant: String,
    trials: usize,
    study: StudyBrief,
}

/// What a participant sees before joining (title, consent, instructions); no token needed.
async fn brief(State(app): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<StudyBrief>> {
    let study = app.store.get_study(id).await?.ok_or_else(|| ApiError::not_found(format!("study {id} not found")))?;
    Ok(Json(study.into()))
}

async fn join(State(app): State<AppState>, Path(id): Path<i64>) -> ApiResult<(StatusCode, Json<Joined>)> {
    let study = app.store.get_study(id).await?.ok_or_else(|| ApiError::not_found(format!("study {id} not found")))?;
    let trials = app.store.study_stimuli(id).await?.len();
    if trials == 0 {
        return Err(ApiError::conflict(format!("study {id} has no images yet")));
    }
    let token = deper_store::random_hex(32)?;
    let pseudonym = format!("p-{}", deper_store::random_hex(6)?);
    let session = app.store.create_session(id, &pseudonym, &deper_store::sha256_hex(token.as_bytes())).await?;
    tracing::info!(study = id, session = session.id, participant = %session.participant, "participant joined");
    Ok((
        StatusCode::CREATED,
        Json(Joined { session_id: session.id, token, participant: session.participant, trials, study: study.into() }),
    ))
}

#[derive(Debug, Serialize)]
struct TrialStimulus {
    id: i64,
    sha256: String,
    width: u32,
    height: u32,
    url: String,
}

#[derive(Debug, Serialize)]
struct Next {
    done: bool,
    trials: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    trial: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stimulus: Option<TrialStimulus>,
}

fn image_url(s: &Stimulus) -> String {
    format!("/api/images/{}", s.sha256)
}

async fn next(State(app): State<AppState>, Path(id): Path<i64>, headers: HeaderMap) -> ApiResult<Json<Next>> {
    let session = session_for(&app, &headers, id).await?;
    let stimuli = app.store.study_stimuli(session.study_id).await?;
    let trial = session.current_trial as usize;
    let finished = session.state == deper_store::SessionState::Finished;
    match stimuli.get(trial).filter(|_| !finished) {
        None => Ok(Json(Next { done: true, trials: stimuli.len(), trial: None, stimulus: None })),
        Some(s) => Ok(Json(Next {
            done: false,
            trials: stimuli.len(),
            trial: Some(session.current_trial),
            stimulus: Some(TrialStimulus {
                id: s.id,
                sha256: s.sha256.clone(),
                width: s.width,
                height: s.height,
                url: image_url(s),
            }),
        })),
    }
}

/// The stimulus shown in `trial` of `session`'s study, or 422.
async fn trial_stimulus(app: &AppState, session: &Session, trial: u32) -> ApiResult<Stimulus> {
    let stimuli = app.store.study_stimuli(session.study_id).await?;
    let n = stimuli.len();
    stimuli
        .into_iter()
        .nth(trial as usize)
        .ok_or_else(|| ApiError::unprocessable(format!("`trial` {trial} does not exist: the study has {n} trials")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SamplesIn {
    /// Chosen by the client, unique per batch; a retry sends the same id and samples.
    batch_id: String,
    trial: u32,
    samples: Vec<Sample>,
}

async fn samples(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<SamplesIn>,
) -> ApiResult<Json<BatchAck>> {
    let session = session_for(&app, &headers, id).await?;
    let batch_id = input.batch_id.trim();
    if batch_id.is_empty() || batch_id.len() > MAX_BATCH_ID {
        return Err(ApiError::unprocessable(format!("`batch_id` must have 1 to {MAX_BATCH_ID} characters")));
    }
    let max = app.limits.max_samples_per_batch;
    if input.samples.len() > max {
        return Err(ApiError::unprocessable(format!(
            "too many samples in one batch: {} (at most {max}; send several batches)",
            input.samples.len()
        )));
    }
    for (i, s) in input.samples.iter().enumerate() {
        for (name, v) in [("x", s.x), ("y", s.y), ("t", s.t)] {
            if !v.is_finite() {
                return Err(ApiError::unprocessable(format!("samples[{i}].{name} is not a finite number")));
            }
        }
    }
    let stimulus = trial_stimulus(&app, &session, input.trial).await?;
    // Samples are accepted after `finish` too: a client may still be retrying earlier batches.
    let ack = app
        .store
        .insert_sample_batch(
            id,
            &SampleBatch {
                client_batch_id: batch_id.to_string(),
                trial: input.trial,
                stimulus_id: stimulus.id,
                samples: input.samples,
            },
        )
        .await?;
    Ok(Json(ack))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DescriptionIn {
    trial: u32,
    text: String,
    #[serde(default)]
    utterances: Vec<Utterance>,
}

#[derive(Debug, Serialize)]
struct Described {
    trial: u32,
    next_trial: u32,
}

async fn describe(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<DescriptionIn>,
) -> ApiResult<Json<Described>> {
    let session = session_for(&app, &headers, id).await?;
    if input.text.trim().is_empty() {
        return Err(ApiError::unprocessable("`text` must not be empty"));
    }
    if input.text.chars().count() > MAX_TEXT {
        return Err(ApiError::unprocessable(format!("`text` is longer than {MAX_TEXT} characters")));
    }
    for (i, u) in input.utterances.iter().enumerate() {
        if !(u.start_time.is_finite() && u.end_time.is_finite()) {
            return Err(ApiError::unprocessable(format!("utterances[{i}] has a time that is not a finite number")));
        }
    }
    let stimulus = trial_stimulus(&app, &session, input.trial).await?;
    let record = DescriptionRecord {
        trial: input.trial,
        stimulus_id: stimulus.id,
        text: input.text,
        utterances: input.utterances,
    };
    let session = app.store.put_description(id, &record).await?;
    Ok(Json(Described { trial: input.trial, next_trial: session.current_trial }))
}

async fn calibrate(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    ApiJson(data): ApiJson<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    session_for(&app, &headers, id).await?;
    let record = app.store.insert_calibration(id, &data).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": record }))))
}

#[derive(Debug, Serialize)]
struct Finished {
    completion_code: String,
}

async fn finish(State(app): State<AppState>, Path(id): Path<i64>, headers: HeaderMap) -> ApiResult<Json<Finished>> {
    let before = session_for(&app, &headers, id).await?;
    let code = deper_store::random_hex(5)?.to_uppercase();
    let session = app.store.finish_session(id, &code).await?;
    // A repeated finish (a retry) answers the same code and is not a second event.
    if before.state != deper_store::SessionState::Finished {
        tracing::info!(study = session.study_id, session = id, participant = %session.participant, "participant finished");
    }
    let completion_code = session.completion_code.ok_or_else(|| ApiError::internal("finished without a code"))?;
    Ok(Json(Finished { completion_code }))
}

/// A stimulus by its SHA-256 (no token: the hash is the capability). Immutable, so cached for a year.
async fn image(State(app): State<AppState>, Path(sha): Path<String>) -> ApiResult<Response> {
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("no such image"));
    }
    let stimulus = app.store.get_stimulus_by_sha(&sha).await?.ok_or_else(|| ApiError::not_found("no such image"))?;
    let path = app.data_dir.join(&stimulus.file);
    let bytes = tokio::fs::read(&path).await.map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
        ],
        bytes,
    )
        .into_response())
}
