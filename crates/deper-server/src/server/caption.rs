//! The caption endpoint's extension point: a [`CaptionService`] in the app state, `None`
//! until a captioner (the VLM with persona vectors) is wired in; then `/api/caption` answers 503.

use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{middleware, Json, Router};
use serde::{Deserialize, Serialize};

/// What a caption request carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionRequest {
    /// SHA-256 of an uploaded stimulus.
    pub image: String,
    /// A subject embedding z_s to personalise the caption; `None`: a generic caption.
    #[serde(default)]
    pub persona: Option<Vec<f32>>,
    #[serde(default)]
    pub prompt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionResponse {
    pub caption: String,
}

/// A loaded captioner. Calls run on a blocking thread.
pub trait CaptionService: Send + Sync + std::fmt::Debug {
    /// Captions the PNG at `image_path` (a stored stimulus).
    fn caption(&self, image_path: &std::path::Path, request: &CaptionRequest) -> anyhow::Result<CaptionResponse>;
}

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/caption", post(caption))
        .route_layer(middleware::from_fn_with_state(state, super::auth::require_researcher))
}

async fn caption(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CaptionRequest>,
) -> ApiResult<Json<CaptionResponse>> {
    let Some(service) = app.caption.clone() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no captioner loaded"));
    };
    let stimulus = app
        .store
        .get_stimulus_by_sha(&req.image)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no uploaded image with sha256 {}", req.image)))?;
    let path = app.data_dir.join(&stimulus.file);
    let out = tokio::task::spawn_blocking(move || service.caption(&path, &req)).await.map_err(ApiError::internal)??;
    Ok(Json(out))
}
