//! The ready-made study `deper serve` opens on its embedded defaults: the demo world's held-out
//! images as stimuli, mouse capture, typed descriptions, and the caption preview switched on after
//! the K-shot support set (the page computes z_s in the browser and asks `/api/captions`).
//!
//! `GET /api/demo` tells the page which study that is (404 when the server runs without it).

use super::error::{ApiError, ApiResult};
use super::AppState;
use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use deper_store::{CaptureMode, DescriptionMode, Store, StudyInput};
use serde::Serialize;
use std::path::Path;

/// Setting holding the id of the demo study, so a restart reuses it (and its sessions).
pub const DEMO_STUDY_SETTING: &str = "demo_study_id";

/// Where the demo study's images come from and how many.
#[derive(Debug, Clone)]
pub struct DemoStudy {
    /// A synthetic-world dataset folder (`deper synth` layout).
    pub world: std::path::PathBuf,
    pub images: usize,
}

pub fn routes(_state: AppState) -> Router<AppState> {
    Router::new().route("/demo", get(demo))
}

#[derive(Debug, Serialize)]
struct DemoInfo {
    study_id: i64,
    /// Participant link, relative to the server.
    study_url: String,
    /// Researcher dashboard, relative to the server (asks for the researcher token).
    dashboard_url: String,
}

async fn demo(State(app): State<AppState>) -> ApiResult<Json<DemoInfo>> {
    let id = app
        .store
        .get_setting(DEMO_STUDY_SETTING)
        .await?
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| ApiError::not_found("this server runs without the demo study"))?;
    Ok(Json(DemoInfo { study_id: id, study_url: format!("/?study={id}"), dashboard_url: "/?researcher".into() }))
}

/// Returns the demo study's id, creating it (with its images) the first time.
pub async fn ensure_study(store: &dyn Store, data_dir: &Path, demo: &DemoStudy) -> anyhow::Result<i64> {
    if let Some(id) = store.get_setting(DEMO_STUDY_SETTING).await?.and_then(|v| v.parse::<i64>().ok()) {
        if store.get_study(id).await?.is_some() && !store.study_stimuli(id).await?.is_empty() {
            return Ok(id);
        }
    }
    let images = demo_images(&demo.world, demo.images)?;
    let study = store
        .create_study(&StudyInput {
            title: "Demo study: how do you see it?".into(),
            instructions: "You will see a few pictures. Look at each one as you like while moving the mouse over \
                           what you look at; when you are ready, describe the picture in one or two sentences."
                .into(),
            consent: "This is a demonstration. Your mouse movements over the pictures and your descriptions are \
                      stored on this server under a random pseudonym, for research on how people describe images."
                .into(),
            capture_mode: CaptureMode::Mouse,
            description_mode: DescriptionMode::Typed,
            settings: serde_json::json!({
                // The page shows personalized captions once this many trials are described.
                "preview_after": deper_core::split::DEFAULT_SHOTS,
                "preview": true,
                "min_view_ms": 1500,
            }),
        })
        .await?;
    for path in &images {
        let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
        let stimulus = deper_store::stimulus::save_stimulus(store, data_dir, &bytes)
            .await
            .with_context(|| format!("adding {} to the demo study", path.display()))?;
        store.attach_stimulus(study.id, stimulus.id).await?;
    }
    store.put_setting(DEMO_STUDY_SETTING, &study.id.to_string()).await?;
    Ok(study.id)
}

/// The world's test-split images first (no subject was trained on them), then the rest, in id order.
fn demo_images(world: &Path, count: usize) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let ds = deper_core::dataset::Dataset::open(world)?;
    let triplets = ds.load_triplets()?;
    let mut test: Vec<&str> =
        triplets.iter().filter(|t| t.split == deper_core::Split::Test).map(|t| t.image.as_str()).collect();
    let mut rest: Vec<&str> = triplets.iter().map(|t| t.image.as_str()).collect();
    test.sort_unstable();
    test.dedup();
    rest.sort_unstable();
    rest.dedup();
    let mut out = Vec::new();
    for id in test.into_iter().chain(rest) {
        if out.len() == count {
            break;
        }
        if let Some(path) = ds.image_path(id) {
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    if out.is_empty() {
        anyhow::bail!("{}: the demo world has no image files", world.display());
    }
    Ok(out)
}
