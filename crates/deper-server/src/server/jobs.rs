//! Background jobs: queued in the database, run one at a time per device by [`run_jobs`]
//! beside the API (it stops with the server under `tokio::select!`), cancellable, with
//! progress stored on the job and streamed as server-sent events.
//!
//! Kinds:
//! * `train_stage1`: stage-1 training ([`deper_pipeline::stage1::train_stage1`]) on a dataset
//!   folder (`dataset`) or a fresh export of a study (`study_id`). Splits and `pixel-stats`
//!   features are made first when the dataset has none. The run folder and its checkpoint
//!   become artifacts.
//! * `features`: image patch features ([`deper_pipeline::features::extract`]) for a dataset folder
//!   or a fresh export of a study: `pixel-stats`, or `dinov3` with a checkpoint folder (`model`).
//! * `train_stage2`: stage 2 on a frozen VLM folder ([`deper_pipeline::stage2::train_stage2`]).
//! * `evaluate`: captions, metrics and the report of stage-2 runs ([`deper_pipeline::evaluate`]).
//!
//! Each job is a thin adapter over a `deper_pipeline` function: its progress events become the
//! job's stored progress, log lines and server-sent events.
//!
//! Cancellation sets a flag the training loop checks after every batch (so it stops within
//! one batch); the job ends `cancelled`. A job found `running` at start-up was cut off by a
//! stopped server and is marked `failed` (see [`super::launch`]).
//! Pattern after zero-to-production's worker loop and burn-train's interrupter.

use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use deper_pipeline::{DeviceKind, Event as PipelineEvent};
use deper_store::{Artifact, Job, JobState, NewArtifact};
use deper_train::stage1::{self, ModelSettings, Stage1Config};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TRAIN_STAGE1: &str = "train_stage1";
pub const FEATURES: &str = "features";
pub const TRAIN_STAGE2: &str = "train_stage2";
pub const EVALUATE: &str = "evaluate";

/// How often an idle runner looks for queued jobs (a new job also wakes it at once).
const POLL: Duration = Duration::from_millis(500);
/// Least time between two stored batch-progress updates.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// How often an event stream checks its job.
const EVENT_POLL: Duration = Duration::from_millis(200);

/// The runner's live state shared with the API: a wake-up for new jobs and the cancel flags
/// of running jobs.
#[derive(Debug, Default)]
pub struct JobHub {
    wake: tokio::sync::Notify,
    cancels: Mutex<HashMap<i64, Arc<AtomicBool>>>,
}

impl JobHub {
    fn cancel_flag(&self, id: i64) -> Option<Arc<AtomicBool>> {
        self.cancels.lock().ok()?.get(&id).cloned()
    }

    fn register(&self, id: i64) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut map) = self.cancels.lock() {
            map.insert(id, flag.clone());
        }
        flag
    }

    fn unregister(&self, id: i64) {
        if let Ok(mut map) = self.cancels.lock() {
            map.remove(&id);
        }
    }
}

/// Parameters of `train_stage1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// A dataset folder on the server (absolute, or relative to the data folder).
    #[serde(default)]
    pub dataset: Option<PathBuf>,
    /// A study to export and train on (instead of `dataset`).
    #[serde(default)]
    pub study_id: Option<i64>,
    /// `tiny` or `paper`: the network size preset; the fields `config.model` sets go over it.
    #[serde(default)]
    pub preset: Option<String>,
    /// A stage-1 config (`train`, `model`, `loss` sections, any subset of fields), read with
    /// [`Stage1Config::from_json_over_preset`].
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub epochs: Option<usize>,
    #[serde(default)]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub seed: Option<u64>,
}

/// Parameters of `features`: `deper features extract` on a dataset folder or a fresh export of a
/// study (paths absolute or relative to the data folder).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesParams {
    #[serde(default)]
    pub dataset: Option<PathBuf>,
    #[serde(default)]
    pub study_id: Option<i64>,
    /// `pixel-stats` or `dinov3` (with `model`).
    #[serde(default = "default_backbone")]
    pub backbone: String,
    /// The DINOv3 checkpoint folder the researcher chose.
    #[serde(default)]
    pub model: Option<PathBuf>,
    #[serde(default)]
    pub image_size: Option<usize>,
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Cache name (defaults to `backbone`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub dtype: Option<deper_train::features::CacheDtype>,
}

impl FeaturesParams {
    fn check(&self) -> Result<(), String> {
        check_dataset_source(self.dataset.as_ref(), self.study_id)?;
        match self.backbone.as_str() {
            deper_train::features::PIXEL_STATS => {}
            deper_train::features::DINOV3 if self.model.is_some() => {}
            deper_train::features::DINOV3 => {
                return Err("`backbone` `dinov3` needs `model` (a checkpoint folder)".into())
            }
            other => return Err(format!("`backbone` must be `pixel-stats` or `dinov3`, not `{other}`")),
        }
        if self.image_size == Some(0) || self.batch_size == Some(0) {
            return Err("`image_size` and `batch_size` must be at least 1".into());
        }
        Ok(())
    }

    fn settings(&self, data_dir: &FsPath) -> deper_train::features::ExtractSettings {
        let defaults = deper_train::features::ExtractSettings::default();
        deper_train::features::ExtractSettings {
            backbone: self.backbone.clone(),
            name: self.name.clone(),
            model: self.model.as_ref().map(|m| data_dir.join(m)),
            image_size: self.image_size.unwrap_or(defaults.image_size),
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            dtype: self.dtype.unwrap_or(defaults.dtype),
            ..defaults
        }
    }
}

/// Parameters of `train_stage2` (paths absolute or relative to the data folder).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage2Params {
    pub dataset: PathBuf,
    /// The Hugging Face Qwen2-VL folder kept frozen.
    pub vlm: PathBuf,
    /// `deper` (needs `stage1`) or `pt`.
    #[serde(default = "default_method")]
    pub method: String,
    /// A stage-1 run folder (`deper`).
    #[serde(default)]
    pub stage1: Option<PathBuf>,
    #[serde(default)]
    pub epochs: Option<usize>,
}

fn default_method() -> String {
    "deper".into()
}

impl Stage2Params {
    fn method(&self) -> Result<deper_train::stage2::Method, String> {
        match self.method.as_str() {
            "deper" if self.stage1.is_none() => Err("method `deper` needs `stage1` (a stage-1 run folder)".into()),
            "deper" => Ok(deper_train::stage2::Method::Deper),
            "pt" => Ok(deper_train::stage2::Method::Pt),
            other => Err(format!("`method` must be `deper` or `pt`, not `{other}`")),
        }
    }
}

/// Parameters of `evaluate`: stage-2 runs scored on a dataset (the `deper eval` report).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    pub dataset: PathBuf,
    pub runs: Vec<PathBuf>,
    #[serde(default)]
    pub shots: Option<usize>,
}

fn default_backbone() -> String {
    deper_train::features::PIXEL_STATS.to_string()
}

impl TrainParams {
    fn check(&self) -> Result<(), String> {
        check_dataset_source(self.dataset.as_ref(), self.study_id)?;
        if let Some(p) = &self.preset {
            if ModelSettings::preset(p).is_none() {
                let names = ModelSettings::PRESETS.map(|n| format!("`{n}`")).join(" or ");
                return Err(format!("`preset` must be {names}, not `{p}`"));
            }
        }
        if self.epochs == Some(0) || self.batch_size == Some(0) {
            return Err("`epochs` and `batch_size` must be at least 1".into());
        }
        Ok(())
    }

    fn stage1_config(&self) -> Result<Stage1Config, String> {
        let preset = self.preset.as_deref().and_then(ModelSettings::preset);
        let value = self.config.clone().unwrap_or_else(|| serde_json::json!({}));
        let mut config =
            Stage1Config::from_json_over_preset(value, preset).map_err(|e| format!("params.config: {e}"))?;
        config.train.override_with(self.epochs, self.batch_size, self.seed);
        Ok(config)
    }
}

/// Checks a job's kind and parameters before it is queued.
fn check_params(kind: &str, params: &serde_json::Value) -> Result<(), String> {
    match kind {
        TRAIN_STAGE1 => {
            let p: TrainParams = serde_json::from_value(params.clone()).map_err(|e| format!("params: {e}"))?;
            p.check()?;
            p.stage1_config()?.validate().map_err(|e| format!("params.config: {e}"))
        }
        FEATURES => {
            serde_json::from_value::<FeaturesParams>(params.clone()).map_err(|e| format!("params: {e}"))?.check()
        }
        TRAIN_STAGE2 => {
            let p: Stage2Params = serde_json::from_value(params.clone()).map_err(|e| format!("params: {e}"))?;
            if p.epochs == Some(0) {
                return Err("`epochs` must be at least 1".into());
            }
            p.method().map(|_| ())
        }
        EVALUATE => {
            let p: EvaluateParams = serde_json::from_value(params.clone()).map_err(|e| format!("params: {e}"))?;
            if p.runs.is_empty() {
                return Err("`runs` must name at least one stage-2 run folder".into());
            }
            Ok(())
        }
        other => {
            Err(format!("unknown job kind `{other}` (known: {TRAIN_STAGE1}, {TRAIN_STAGE2}, {FEATURES}, {EVALUATE})"))
        }
    }
}

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list_jobs).post(create_job))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/events", get(job_events))
        .route_layer(middleware::from_fn_with_state(state, super::auth::require_researcher))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobIn {
    kind: String,
    #[serde(default)]
    params: serde_json::Value,
}

#[derive(Debug, Serialize)]
struct JobOut {
    #[serde(flatten)]
    job: Job,
    artifacts: Vec<Artifact>,
}

async fn create_job(State(app): State<AppState>, ApiJson(input): ApiJson<JobIn>) -> ApiResult<(StatusCode, Json<Job>)> {
    let params = if input.params.is_null() { serde_json::json!({}) } else { input.params };
    check_params(&input.kind, &params).map_err(ApiError::unprocessable)?;
    let job = app.store.create_job(&input.kind, &params, app.device.name()).await?;
    app.jobs.wake.notify_one();
    Ok((StatusCode::CREATED, Json(job)))
}

async fn list_jobs(State(app): State<AppState>) -> ApiResult<Json<Vec<Job>>> {
    Ok(Json(app.store.list_jobs().await?))
}

async fn job_or_404(app: &AppState, id: i64) -> ApiResult<Job> {
    app.store.get_job(id).await?.ok_or_else(|| ApiError::not_found(format!("job {id} not found")))
}

async fn get_job(State(app): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<JobOut>> {
    let job = job_or_404(&app, id).await?;
    let artifacts = app.store.job_artifacts(id).await?;
    Ok(Json(JobOut { job, artifacts }))
}

async fn cancel_job(State(app): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Job>> {
    let job = app.store.request_cancel(id).await?.ok_or_else(|| ApiError::not_found(format!("job {id} not found")))?;
    if let Some(flag) = app.jobs.cancel_flag(id) {
        flag.store(true, Ordering::Relaxed);
    }
    Ok(Json(job))
}

/// Server-sent events: `progress` (the job, whenever its progress or state changes), then one
/// `end` event with the final job; the stream closes after it (or when the server stops).
async fn job_events(
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    job_or_404(&app, id).await?;
    struct Cursor {
        app: AppState,
        last: Option<(String, String)>,
        ended: bool,
    }
    let start = Cursor { app, last: None, ended: false };
    let stream = futures_util::stream::unfold(start, move |mut c| async move {
        if c.ended {
            return None;
        }
        loop {
            let job = match c.app.store.get_job(id).await {
                Ok(Some(job)) => job,
                Ok(None) | Err(_) => return None,
            };
            let key = (job.state.to_string(), job.progress_detail.to_string());
            let data = serde_json::to_string(&job).unwrap_or_default();
            if job.state.is_terminal() {
                c.ended = true;
                return Some((Ok(Event::default().event("end").data(data)), c));
            }
            if c.last.as_ref() != Some(&key) {
                c.last = Some(key);
                return Some((Ok(Event::default().event("progress").data(data)), c));
            }
            let mut stopping = c.app.stopping.clone();
            if *stopping.borrow() {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(EVENT_POLL) => {}
                _ = stopping.changed() => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Runs queued jobs of this server's device, one at a time, until `stop` turns true.
pub async fn run_jobs(app: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let device = app.device.name();
    loop {
        if *stop.borrow() {
            return;
        }
        match app.store.claim_next_job(device).await {
            Ok(Some(job)) => run_one(&app, job, &mut stop).await,
            Ok(None) => {
                tokio::select! {
                    _ = app.jobs.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => return,
                }
            }
            Err(e) => {
                eprintln!("job runner: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(POLL * 4) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// A progress event from the blocking job to the runner.
#[derive(Debug)]
struct Tick {
    fraction: f64,
    detail: serde_json::Value,
    log: Option<String>,
    /// Batch ticks are thinned out; the others are always stored.
    frequent: bool,
}

async fn run_one(app: &AppState, job: Job, stop: &mut tokio::sync::watch::Receiver<bool>) {
    let id = job.id;
    tracing::info!(job = id, kind = %job.kind, device = %job.device, "job started");
    let cancel = app.jobs.register(id);
    if job.cancel_requested {
        cancel.store(true, Ordering::Relaxed);
    }
    let outcome = run_job(app, &job, &cancel, stop).await;
    app.jobs.unregister(id);
    let (state, error) = match outcome {
        Ok(artifacts) => {
            for mut a in artifacts {
                // Inside the data folder, paths are stored relative to it (the folder may move).
                if let Ok(rel) = FsPath::new(&a.path).strip_prefix(&*app.data_dir) {
                    a.path = rel.display().to_string();
                }
                if let Err(e) = app.store.insert_artifact(&a).await {
                    eprintln!("job {id}: registering artifact {}: {e}", a.path);
                }
            }
            (JobState::Succeeded, None)
        }
        Err(JobEnd::Cancelled) => (JobState::Cancelled, Some("cancelled".to_string())),
        Err(JobEnd::Stopped) => (JobState::Failed, Some("server stopped while the job was running".to_string())),
        Err(JobEnd::Failed(message)) => (JobState::Failed, Some(message)),
    };
    match (state, &error) {
        (JobState::Failed, Some(reason)) => tracing::info!(job = id, kind = %job.kind, %reason, "job failed"),
        _ => tracing::info!(job = id, kind = %job.kind, %state, "job finished"),
    }
    if let Err(e) = app.store.finish_job(id, state, error.as_deref()).await {
        eprintln!("job {id}: recording its end ({state}): {e}");
    }
}

#[derive(Debug)]
enum JobEnd {
    Cancelled,
    Stopped,
    Failed(String),
}

/// A job reads one dataset: a folder (`dataset`) or a fresh export of a study (`study_id`).
fn check_dataset_source(dataset: Option<&PathBuf>, study_id: Option<i64>) -> Result<(), String> {
    match (dataset, study_id) {
        (Some(_), Some(_)) => Err("give either `dataset` or `study_id`, not both".into()),
        (None, None) => Err("give `dataset` (a dataset folder) or `study_id`".into()),
        _ => Ok(()),
    }
}

/// The dataset folder a job reads: a fresh export of `study`, or `dataset` under the data folder.
async fn job_dataset(app: &AppState, study: Option<i64>, dataset: Option<&PathBuf>) -> Result<PathBuf, JobEnd> {
    match (study, dataset) {
        (Some(study), _) => {
            let (rel, _) = super::studies::export_study(app, study, super::studies::ExportFormat::Dataset)
                .await
                .map_err(|e| JobEnd::Failed(format!("exporting study {study}: {}", e.message)))?;
            Ok(app.data_dir.join(rel))
        }
        (None, Some(path)) => Ok(app.data_dir.join(path)),
        (None, None) => Err(JobEnd::Failed("params name no dataset".into())),
    }
}

async fn run_job(
    app: &AppState,
    job: &Job,
    cancel: &Arc<AtomicBool>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<NewArtifact>, JobEnd> {
    let job_dir = app.data_dir.join("jobs").join(job.id.to_string());
    std::fs::create_dir_all(&job_dir).map_err(|e| JobEnd::Failed(format!("{}: {e}", job_dir.display())))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Tick>();
    let blocking: tokio::task::JoinHandle<anyhow::Result<Vec<NewArtifact>>> = match job.kind.as_str() {
        TRAIN_STAGE1 => {
            let params: TrainParams =
                serde_json::from_value(job.params.clone()).map_err(|e| JobEnd::Failed(format!("params: {e}")))?;
            let dataset = job_dataset(app, params.study_id, params.dataset.as_ref()).await?;
            let (device, cancel, job_id) = (app.device, cancel.clone(), job.id);
            tokio::task::spawn_blocking(move || train_job(job_id, &dataset, &job_dir, &params, device, &tx, &cancel))
        }
        FEATURES => {
            let params: FeaturesParams =
                serde_json::from_value(job.params.clone()).map_err(|e| JobEnd::Failed(format!("params: {e}")))?;
            let dataset = job_dataset(app, params.study_id, params.dataset.as_ref()).await?;
            let (settings, device) = (params.settings(&app.data_dir), app.device);
            tokio::task::spawn_blocking(move || features_job(&dataset, &settings, device, &tx))
        }
        TRAIN_STAGE2 => {
            let params: Stage2Params =
                serde_json::from_value(job.params.clone()).map_err(|e| JobEnd::Failed(format!("params: {e}")))?;
            let resolve = |p: &PathBuf| app.data_dir.join(p);
            let (dataset, vlm, stage1) =
                (resolve(&params.dataset), resolve(&params.vlm), params.stage1.as_ref().map(resolve));
            let (device, cancel, job_id) = (app.device, cancel.clone(), job.id);
            tokio::task::spawn_blocking(move || {
                stage2_job(job_id, &dataset, stage1.as_deref(), &vlm, &job_dir, &params, device, &tx, &cancel)
            })
        }
        EVALUATE => {
            let params: EvaluateParams =
                serde_json::from_value(job.params.clone()).map_err(|e| JobEnd::Failed(format!("params: {e}")))?;
            let dataset = app.data_dir.join(&params.dataset);
            let runs: Vec<PathBuf> = params.runs.iter().map(|r| app.data_dir.join(r)).collect();
            let (device, job_id) = (app.device, job.id);
            let shots = params.shots.unwrap_or(deper_core::split::DEFAULT_SHOTS);
            tokio::task::spawn_blocking(move || evaluate_job(job_id, &dataset, &runs, shots, &job_dir, device, &tx))
        }
        other => return Err(JobEnd::Failed(format!("unknown job kind `{other}`"))),
    };
    tokio::pin!(blocking);
    let mut last_store = Instant::now().checked_sub(PROGRESS_EVERY).unwrap_or_else(Instant::now);
    let mut pending: Option<Tick> = None;
    let (mut stopped, mut ticks_closed) = (false, false);
    let result = loop {
        tokio::select! {
            done = &mut blocking => break done,
            tick = rx.recv(), if !ticks_closed => {
                ticks_closed = tick.is_none();
                if let Some(tick) = tick {
                    if tick.frequent && last_store.elapsed() < PROGRESS_EVERY {
                        pending = Some(tick);
                        continue;
                    }
                    pending = None;
                    store_tick(app, job.id, &tick).await;
                    last_store = Instant::now();
                }
            }
            _ = stop.changed(), if !stopped => {
                // The server is stopping: ask the job to stop and wait for it.
                stopped = true;
                cancel.store(true, Ordering::Relaxed);
            }
        }
    };
    while let Ok(tick) = rx.try_recv() {
        pending = None;
        store_tick(app, job.id, &tick).await;
    }
    if let Some(tick) = pending {
        store_tick(app, job.id, &tick).await;
    }
    match result {
        Ok(Ok(artifacts)) => Ok(artifacts),
        Ok(Err(e)) => {
            let cancelled = e
                .downcast_ref::<deper_train::TrainError>()
                .is_some_and(|t| matches!(t, deper_train::TrainError::Cancelled));
            match (cancelled, stopped) {
                (true, true) => Err(JobEnd::Stopped),
                (true, false) => Err(JobEnd::Cancelled),
                _ => Err(JobEnd::Failed(format!("{e:#}"))),
            }
        }
        Err(join) => Err(JobEnd::Failed(format!("the job panicked: {join}"))),
    }
}

async fn store_tick(app: &AppState, id: i64, tick: &Tick) {
    if let Err(e) = app.store.set_job_progress(id, tick.fraction, &tick.detail, tick.log.as_deref()).await {
        eprintln!("job {id}: storing progress: {e}");
    }
}

fn send(
    tx: &tokio::sync::mpsc::UnboundedSender<Tick>,
    fraction: f64,
    detail: serde_json::Value,
    log: Option<String>,
    frequent: bool,
) {
    // A closed channel means the runner is gone; the job's result is then ignored anyway.
    let _ = tx.send(Tick { fraction, detail, log, frequent });
}

/// The job's side of the pipeline's progress: each event becomes a tick with the fraction of the
/// current phase, the event's detail and its line for the job log. Per-batch and per-item ticks are
/// marked frequent, and the runner thins them out.
struct Ticks<'a> {
    tx: &'a tokio::sync::mpsc::UnboundedSender<Tick>,
    total: usize,
    fraction: f64,
}

impl<'a> Ticks<'a> {
    fn new(tx: &'a tokio::sync::mpsc::UnboundedSender<Tick>) -> Self {
        Self { tx, total: 1, fraction: 0.0 }
    }

    fn event(&mut self, event: PipelineEvent) {
        match event {
            PipelineEvent::Step { index, count, name } => {
                let detail = serde_json::json!({"event": "step", "index": index, "count": count, "name": name});
                send(self.tx, self.fraction, detail, Some(format!("step {index} of {count}: {name}")), false);
            }
            PipelineEvent::Begin { total, detail, line, .. } => {
                (self.total, self.fraction) = (total.max(1), 0.0);
                send(self.tx, 0.0, detail, line, false);
            }
            PipelineEvent::Advance { done, detail, .. } => {
                self.fraction = done as f64 / self.total as f64;
                send(self.tx, self.fraction, detail, None, true);
            }
            PipelineEvent::Note { line, detail } => send(self.tx, self.fraction, detail, Some(line), false),
            PipelineEvent::End => {}
        }
    }
}

/// Stage 2 on the frozen VLM; the run folder is the artifact.
#[allow(clippy::too_many_arguments)]
fn stage2_job(
    job_id: i64,
    dataset: &FsPath,
    stage1: Option<&FsPath>,
    vlm: &FsPath,
    job_dir: &FsPath,
    params: &Stage2Params,
    device: DeviceKind,
    tx: &tokio::sync::mpsc::UnboundedSender<Tick>,
    cancel: &AtomicBool,
) -> anyhow::Result<Vec<NewArtifact>> {
    let mut config = deper_train::stage2::Stage2Config::default();
    if let Some(e) = params.epochs {
        config.epochs = e;
    }
    let run = job_dir.join("run");
    let job = deper_pipeline::stage2::Stage2Job {
        data: dataset.to_path_buf(),
        stage1: stage1.map(FsPath::to_path_buf),
        vlm: vlm.to_path_buf(),
        out: run.clone(),
        method: params.method().map_err(anyhow::Error::msg)?,
        config,
        resume: false,
    };
    let mut ticks = Ticks::new(tx);
    deper_pipeline::stage2::train_stage2(job, device, cancel, &mut |e| ticks.event(e))?;
    Ok(vec![NewArtifact {
        kind: "stage2_run".into(),
        path: run.display().to_string(),
        sha256: None,
        job_id: Some(job_id),
        study_id: None,
    }])
}

/// `deper eval` as a job: captions of every method, metrics, the report folder as the artifact.
fn evaluate_job(
    job_id: i64,
    dataset: &FsPath,
    runs: &[PathBuf],
    shots: usize,
    job_dir: &FsPath,
    device: DeviceKind,
    tx: &tokio::sync::mpsc::UnboundedSender<Tick>,
) -> anyhow::Result<Vec<NewArtifact>> {
    let request = deper_pipeline::evaluate::EvalRequest {
        data: dataset.to_path_buf(),
        runs: runs.to_vec(),
        out: job_dir.join("report"),
        shots,
        vlm: None,
        command: format!("evaluate job {job_id}"),
    };
    let mut ticks = Ticks::new(tx);
    deper_pipeline::evaluate::evaluate(&request, device, &mut |e| ticks.event(e))?;
    Ok(vec![NewArtifact {
        kind: "report".into(),
        path: request.out.display().to_string(),
        sha256: None,
        job_id: Some(job_id),
        study_id: None,
    }])
}

fn train_job(
    job_id: i64,
    dataset: &FsPath,
    job_dir: &FsPath,
    params: &TrainParams,
    device: DeviceKind,
    tx: &tokio::sync::mpsc::UnboundedSender<Tick>,
    cancel: &AtomicBool,
) -> anyhow::Result<Vec<NewArtifact>> {
    let config = params.stage1_config().map_err(anyhow::Error::msg)?;
    let mut ticks = Ticks::new(tx);
    deper_pipeline::features::prepare_dataset(dataset, &config.train.backbone, &mut |e| ticks.event(e))?;
    let run = job_dir.join("run");
    let job = deper_pipeline::stage1::Stage1Job {
        data: dataset.to_path_buf(),
        out: run.clone(),
        config,
        resume: false,
        devices: None,
    };
    deper_pipeline::stage1::train_stage1(job, device, cancel, &mut |e| ticks.event(e))?;
    let checkpoint = run.join(format!("{}.mpk", stage1::MODEL_FILE));
    let bytes = std::fs::read(&checkpoint).map_err(|e| anyhow::anyhow!("{}: {e}", checkpoint.display()))?;
    Ok(vec![
        NewArtifact {
            kind: "checkpoint".into(),
            path: checkpoint.display().to_string(),
            sha256: Some(deper_store::sha256_hex(&bytes)),
            job_id: Some(job_id),
            study_id: params.study_id,
        },
        NewArtifact {
            kind: "stage1_run".into(),
            path: run.display().to_string(),
            sha256: None,
            job_id: Some(job_id),
            study_id: params.study_id,
        },
    ])
}

fn features_job(
    dataset: &FsPath,
    settings: &deper_train::features::ExtractSettings,
    device: DeviceKind,
    tx: &tokio::sync::mpsc::UnboundedSender<Tick>,
) -> anyhow::Result<Vec<NewArtifact>> {
    let mut ticks = Ticks::new(tx);
    let meta = deper_pipeline::features::extract(dataset, settings, device, &mut |e| ticks.event(e))?;
    send(
        tx,
        1.0,
        serde_json::json!({"event": "done", "meta": meta}),
        Some(format!("extracted {} features into features/{}", settings.backbone, settings.cache_name())),
        false,
    );
    Ok(Vec::new())
}
