//! Bearer tokens: the researcher token (one per server, stored as a SHA-256 hash) guards the
//! researcher endpoints; each session has its own token, valid only for that session.

use super::error::{ApiError, ApiResult};
use super::AppState;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use deper_store::{sha256_hex, Session};

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// `?access_token=` of an event-stream request: browsers' `EventSource` cannot send headers.
fn event_stream_token(req: &Request) -> Option<&str> {
    if req.method() != axum::http::Method::GET || !req.uri().path().ends_with("/events") {
        return None;
    }
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix("access_token=")).filter(|t| !t.is_empty())
}

/// Middleware: lets a request through only with the researcher token.
pub async fn require_researcher(State(app): State<AppState>, req: Request, next: Next) -> ApiResult<Response> {
    let token = bearer(req.headers())
        .or_else(|| event_stream_token(&req))
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <researcher token>`"))?;
    if sha256_hex(token.as_bytes()) != *app.researcher_hash {
        return Err(ApiError::unauthorized("wrong researcher token"));
    }
    Ok(next.run(req).await)
}

/// The session `id` when the request carries its token: 401 without a token, 404 for an
/// unknown session, 403 for a token of another session (or the researcher token).
pub async fn session_for(app: &AppState, headers: &HeaderMap, id: i64) -> ApiResult<Session> {
    let token =
        bearer(headers).ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <session token>`"))?;
    let session =
        app.store.get_session(id).await?.ok_or_else(|| ApiError::not_found(format!("session {id} not found")))?;
    if sha256_hex(token.as_bytes()) != session.token_hash {
        return Err(ApiError::forbidden(format!("this token does not grant access to session {id}")));
    }
    Ok(session)
}

/// Header naming the participant session whose token a caption request carries.
pub const SESSION_HEADER: &str = "x-deper-session";

/// The researcher token (`None`), or a participant's session token with its session id in
/// `X-Deper-Session` when that session's study shows the preview to participants
/// (`settings.preview: true`): that session. Anything else is 400/401/403/404.
pub async fn researcher_or_previewing_session(app: &AppState, headers: &HeaderMap) -> ApiResult<Option<Session>> {
    let token = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <researcher or session token>`"))?;
    if sha256_hex(token.as_bytes()) == *app.researcher_hash {
        return Ok(None);
    }
    let Some(session_id) = headers.get(SESSION_HEADER) else {
        return Err(ApiError::unauthorized("wrong researcher token (a participant also sends `X-Deper-Session`)"));
    };
    let session_id: i64 = session_id
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("`{SESSION_HEADER}` must be a session number")))?;
    let session = session_for(app, headers, session_id).await?;
    let study = app.store.get_study(session.study_id).await?;
    let allowed = study.is_some_and(|s| s.settings.get("preview").and_then(|v| v.as_bool()) == Some(true));
    if !allowed {
        return Err(ApiError::forbidden("this study does not show the caption preview to participants"));
    }
    Ok(Some(session))
}

/// Middleware of the caption API: [`researcher_or_previewing_session`].
pub async fn require_researcher_or_previewing_participant(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> ApiResult<Response> {
    researcher_or_previewing_session(&app, req.headers()).await?;
    Ok(next.run(req).await)
}
