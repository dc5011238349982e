//! What the browser needs to compute a participant's z_s in the page: the subject encoder (a
//! stage-1 run folder: `run.json` + `model.mpk`, the same files native `deper embed` reads) and
//! the patch features of each stimulus, computed here with the backbone the encoder was trained on.
//!
//! - `GET /api/embedder`: manifest (`backbone`, `grid`, `dim`, `shots`, file URLs, a `version` hash
//!   the page keys its cache on); 404 when the server has no encoder.
//! - `GET /api/embedder/run.json`, `GET /api/embedder/model.mpk`: the files.
//! - `GET /api/images/{sha256}/features`: little-endian f32 `[grid_h, grid_w, dim]`, row-major, with
//!   the grid in `X-Deper-Grid: h,w,c` (no token: like the image, the hash is the capability).
//! - `POST /api/sessions/{id}/z_s` (session token) `{"triplets": [{"image": sha256, "caption",
//!   "trajectory"}]}` → `{"z_s", "backend": "server", "encoder_version"}`: the mean z_s computed
//!   here, for an encoder the page cannot run (`in_page: false` in the manifest): one whose
//!   captions are embedded with a VLM's input-embedding table (`deper train stage1
//!   --text-embeddings`), which a browser cannot load. The page then stores it as its own.

use super::auth::session_for;
use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deper_train::eval::{Encoder, HostTriplet};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Header carrying the feature grid of `/api/images/{sha}/features`.
pub const GRID_HEADER: &str = "x-deper-grid";
/// Feature grids kept in memory (each ~12 KiB for pixel-stats).
const FEATURE_CACHE: usize = 512;
/// Most triplets one `POST /api/sessions/{id}/z_s` embeds.
pub const MAX_Z_S_TRIPLETS: usize = 200;

/// A subject encoder loaded for the page.
#[derive(Debug)]
pub struct EmbedderAssets {
    pub run_dir: PathBuf,
    run_json: Vec<u8>,
    model_mpk: Vec<u8>,
    pub backbone: String,
    pub grid: [usize; 3],
    pub dim: usize,
    pub version: String,
    /// Whether the page can run this encoder; `false` for a VLM text side, whose z_s the server
    /// computes (`native`).
    pub in_page: bool,
    native: Option<Mutex<Encoder<burn::backend::NdArray>>>,
    features: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl EmbedderAssets {
    /// Reads a stage-1 run folder. Only backbones the server can compute per uploaded image are
    /// accepted (today `pixel-stats`): the page has no other way to get features of a new image.
    pub fn load(run: &std::path::Path) -> anyhow::Result<Self> {
        let info = deper_train::stage1::RunInfo::load(run)?;
        let backbone = info.config.train.backbone.clone();
        if backbone != deper_train::features::PIXEL_STATS {
            anyhow::bail!(
                "{}: the encoder reads `{backbone}` features; the server computes only `{}` for uploaded images",
                run.display(),
                deper_train::features::PIXEL_STATS
            );
        }
        let run_json_path = run.join(deper_train::stage1::RUN_FILE);
        let model_path = run.join(deper_train::stage1::MODEL_FILE).with_extension("mpk");
        let run_json = std::fs::read(&run_json_path).with_context(|| run_json_path.display().to_string())?;
        let model_mpk = std::fs::read(&model_path).with_context(|| model_path.display().to_string())?;
        let mut hashed = run_json.clone();
        hashed.extend_from_slice(&model_mpk);
        let version = deper_store::sha256_hex(&hashed)[..16].to_string();
        // A VLM's table cannot be loaded in a browser: the server embeds captions itself, with the
        // VLM folder the run names (opened now, so a missing one stops `deper serve` at start).
        let native = match &info.text_embeddings {
            Some(_) => Some(Mutex::new(Encoder::open(run, &Default::default())?)),
            None => None,
        };
        Ok(Self {
            run_dir: run.to_path_buf(),
            run_json,
            model_mpk,
            backbone,
            grid: info.feature_grid,
            dim: info.config.model.d_model,
            version,
            in_page: native.is_none(),
            native,
            features: Mutex::new(HashMap::new()),
        })
    }
}

pub fn routes(_state: AppState) -> Router<AppState> {
    Router::new()
        .route("/embedder", get(manifest))
        .route("/embedder/run.json", get(run_json))
        .route("/embedder/model.mpk", get(model_mpk))
        .route("/images/{sha256}/features", get(features))
        .route("/sessions/{id}/z_s", post(server_z_s))
}

fn assets(app: &AppState) -> ApiResult<Arc<EmbedderAssets>> {
    app.embedder.clone().ok_or_else(|| {
        ApiError::not_found("this server has no subject encoder (start `deper serve` with --embedder RUN or the demo)")
    })
}

#[derive(Debug, Serialize)]
struct Manifest {
    backbone: String,
    grid: [usize; 3],
    /// Length of z_s.
    dim: usize,
    /// Support triplets a participant's z_s averages (the paper's K = 5).
    shots: usize,
    run_json: &'static str,
    model: &'static str,
    /// Changes whenever the weights do; the page caches the files under it.
    version: String,
    /// `false`: the page cannot run this encoder (its captions are embedded with a VLM's table)
    /// and asks the server for z_s instead (`POST /api/sessions/{id}/z_s`).
    in_page: bool,
}

async fn manifest(State(app): State<AppState>) -> ApiResult<Json<Manifest>> {
    let a = assets(&app)?;
    Ok(Json(Manifest {
        backbone: a.backbone.clone(),
        grid: a.grid,
        dim: a.dim,
        shots: deper_core::split::DEFAULT_SHOTS,
        run_json: "/api/embedder/run.json",
        model: "/api/embedder/model.mpk",
        version: a.version.clone(),
        in_page: a.in_page,
    }))
}

async fn run_json(State(app): State<AppState>) -> ApiResult<Response> {
    let a = assets(&app)?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], a.run_json.clone()).into_response())
}

async fn model_mpk(State(app): State<AppState>) -> ApiResult<Response> {
    let a = assets(&app)?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))], a.model_mpk.clone())
        .into_response())
}

async fn features(State(app): State<AppState>, Path(sha): Path<String>) -> ApiResult<Response> {
    let a = assets(&app)?;
    let bytes = feature_bytes(&app, &a, sha).await?;
    let [h, w, c] = a.grid;
    let grid = HeaderValue::from_str(&format!("{h},{w},{c}")).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (HeaderName::from_static(GRID_HEADER), grid),
        ],
        bytes.as_ref().clone(),
    )
        .into_response())
}

/// The features of image `sha` (little-endian f32 of the encoder's grid), from the cache or
/// computed from the stored stimulus.
async fn feature_bytes(app: &AppState, a: &EmbedderAssets, sha: String) -> ApiResult<Arc<Vec<u8>>> {
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("no such image"));
    }
    let cached = a.features.lock().map_err(|_| ApiError::internal("feature cache poisoned"))?.get(&sha).cloned();
    Ok(match cached {
        Some(bytes) => bytes,
        None => {
            let stimulus =
                app.store.get_stimulus_by_sha(&sha).await?.ok_or_else(|| ApiError::not_found("no such image"))?;
            let path = app.data_dir.join(&stimulus.file);
            let values = tokio::task::spawn_blocking(move || deper_train::features::pixel_stats(&path))
                .await
                .map_err(|e| ApiError::internal(format!("feature task: {e}")))?
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let expected = a.grid.iter().product::<usize>();
            if values.len() != expected {
                return Err(ApiError::internal(format!(
                    "features of {sha} have {} values, the encoder's grid {:?} needs {expected}",
                    values.len(),
                    a.grid
                )));
            }
            let bytes: Arc<Vec<u8>> = Arc::new(values.iter().flat_map(|v| v.to_le_bytes()).collect());
            let mut cache = a.features.lock().map_err(|_| ApiError::internal("feature cache poisoned"))?;
            if cache.len() >= FEATURE_CACHE {
                cache.clear();
            }
            cache.insert(sha, bytes.clone());
            bytes
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZsIn {
    triplets: Vec<ZsTriplet>,
}

/// One described trial: the stimulus by hash, the description, the trajectory the page built.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZsTriplet {
    image: String,
    caption: String,
    trajectory: deper_core::Trajectory,
}

#[derive(Debug, Serialize)]
struct ZsOut {
    z_s: Vec<f32>,
    backend: &'static str,
    encoder_version: String,
}

async fn server_z_s(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<ZsIn>,
) -> ApiResult<Json<ZsOut>> {
    session_for(&app, &headers, id).await?;
    let a = assets(&app)?;
    if a.native.is_none() {
        return Err(ApiError::conflict("the page computes z_s with this encoder (`in_page` in /api/embedder)"));
    }
    if input.triplets.is_empty() || input.triplets.len() > MAX_Z_S_TRIPLETS {
        return Err(ApiError::unprocessable(format!(
            "`triplets` has {} entries; 1 to {MAX_Z_S_TRIPLETS} are embedded at once",
            input.triplets.len()
        )));
    }
    let mut triplets = Vec::with_capacity(input.triplets.len());
    for (i, t) in input.triplets.into_iter().enumerate() {
        let finite =
            t.trajectory.steps.iter().all(|s| {
                s.bbox.to_array().iter().all(|v| v.is_finite()) && s.duration.is_finite() && s.duration >= 0.0
            });
        if !finite {
            return Err(ApiError::unprocessable(format!("triplets[{i}].trajectory: a box or duration is not finite")));
        }
        let bytes = feature_bytes(&app, &a, t.image).await?;
        let features = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        triplets.push(HostTriplet { features, caption: t.caption, trajectory: t.trajectory });
    }
    let encoder_version = a.version.clone();
    let z_s = tokio::task::spawn_blocking(move || {
        let native = a.native.as_ref().ok_or_else(|| ApiError::internal("no native encoder"))?;
        let encoder = native.lock().map_err(|_| ApiError::internal("encoder poisoned"))?;
        encoder.mean_z_s(&triplets).map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(format!("z_s task: {e}")))??;
    Ok(Json(ZsOut { z_s, backend: "server", encoder_version }))
}
