//! The study server: an axum app over a [`deper_store::Store`], with a job runner beside it.
//!
//! [`launch`] takes a bound listener (tests bind port 0) and a shutdown future; it opens the
//! store, fails jobs a previous server left running, makes sure a researcher token exists,
//! then serves the routes of [`studies`], [`participant`], [`jobs`], [`caption`] and the
//! static browser app until `shutdown` resolves, and stops the job runner with it.
//! Layout after atuin-server (`launch(settings, listener, shutdown)`) and
//! realworld-axum-sqlx (routers per resource, one error type).

pub mod auth;
pub mod caption;
pub mod demo;
pub mod embedder;
pub mod embeddings;
pub mod error;
pub mod jobs;
pub mod participant;
pub mod studies;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::routing::get;
use axum::Router;
use deper_pipeline::DeviceKind;
use deper_store::Store;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

pub use caption::CaptionService;

/// Name of the SQLite file in the data folder when no `--db` URL is given.
pub const DB_FILE: &str = "deper.db";
/// File in the data folder holding the researcher token (mode 0600).
pub const TOKEN_FILE: &str = "researcher-token";
/// Setting holding the SHA-256 of the researcher token.
const TOKEN_SETTING: &str = "researcher_token_sha256";

/// Request limits; every limit answers with a 4xx naming it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON body (sample batches, descriptions, …), bytes.
    pub max_body_bytes: usize,
    /// Largest image upload, bytes.
    pub max_upload_bytes: usize,
    /// Most samples in one batch.
    pub max_samples_per_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 2 << 20, max_upload_bytes: 20 << 20, max_samples_per_batch: 5000 }
    }
}

/// Everything [`launch`] needs.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Data folder: SQLite file, stimuli, exports, job folders, researcher token.
    pub data_dir: PathBuf,
    /// `postgres://…` or a SQLite path/URL; `None`: `DATA/deper.db`.
    pub db_url: Option<String>,
    /// Device the job runner trains on.
    pub device: DeviceKind,
    /// Folder holding `index.html`, `web/` and `web/pkg/` (the browser app).
    pub web_root: PathBuf,
    pub limits: Limits,
    /// Replace the researcher token with a new one (the old one stops working).
    pub reset_token: bool,
    /// The captioner behind `/api/caption`; `None` answers 503.
    pub caption: Option<Arc<dyn CaptionService>>,
    /// The subject encoder the page computes z_s with (`/api/embedder`); `None` answers 404.
    pub embedder: Option<Arc<embedder::EmbedderAssets>>,
    /// Create (once) and announce the demo study.
    pub demo: Option<demo::DemoStudy>,
    /// Subjects with a known z_s shown on every study's embedding map (the demo world's).
    pub references: embeddings::ReferenceSubjects,
}

impl ServerSettings {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            db_url: None,
            device: DeviceKind::Cpu,
            web_root: PathBuf::from("."),
            limits: Limits::default(),
            reset_token: false,
            caption: None,
            embedder: None,
            demo: None,
            references: embeddings::ReferenceSubjects::default(),
        }
    }
}

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub data_dir: Arc<PathBuf>,
    pub researcher_hash: Arc<str>,
    pub limits: Limits,
    pub device: DeviceKind,
    pub jobs: Arc<jobs::JobHub>,
    pub caption: Option<Arc<dyn CaptionService>>,
    pub embedder: Option<Arc<embedder::EmbedderAssets>>,
    pub references: Arc<embeddings::ReferenceSubjects>,
    /// Becomes `true` when the server is shutting down (ends event streams).
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Serves the app on `listener` until `shutdown` resolves.
pub async fn launch(
    settings: ServerSettings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating the data folder {}", data_dir.display()))?;
    // Absolute, so paths stored for artifacts do not depend on the working directory.
    let data_dir = std::fs::canonicalize(&data_dir).with_context(|| format!("resolving {}", data_dir.display()))?;
    let url = match &settings.db_url {
        Some(url) => url.clone(),
        None => data_dir.join(DB_FILE).display().to_string(),
    };
    let store = deper_store::open(&url).await.with_context(|| format!("opening the database {}", redact(&url)))?;
    let failed = store.fail_running_jobs("server restarted").await?;
    if failed > 0 {
        eprintln!("{failed} job(s) were running when the server stopped; marked failed (server restarted)");
    }
    let researcher_hash = researcher_token(&*store, &data_dir, settings.reset_token).await?;
    if let Some(demo) = &settings.demo {
        let id = demo::ensure_study(&*store, &data_dir, demo).await.context("preparing the demo study")?;
        eprintln!("demo study {id} ready: open /?study={id} (participant), /?researcher (dashboard)");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState {
        store,
        data_dir: Arc::new(data_dir),
        researcher_hash: researcher_hash.into(),
        limits: settings.limits.clone(),
        device: settings.device,
        jobs: Arc::new(jobs::JobHub::default()),
        caption: settings.caption.clone(),
        embedder: settings.embedder.clone(),
        references: Arc::new(settings.references.clone()),
        stopping: stop_rx.clone(),
    };
    let runner = tokio::spawn(jobs::run_jobs(state.clone(), stop_rx));
    let app = router(state, &settings.web_root);
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let served = serve.await.context("serving HTTP");
    // The runner stops on the same signal (a running job is asked to cancel).
    runner.await.context("job runner")?;
    served
}

/// The whole route table.
pub fn router(state: AppState, web_root: &Path) -> Router {
    let api = Router::new()
        .merge(studies::routes(state.clone()))
        .merge(participant::routes(state.clone()))
        .merge(jobs::routes(state.clone()))
        .merge(caption::routes(state.clone()))
        .merge(embedder::routes(state.clone()))
        .merge(embeddings::routes(state.clone()))
        .merge(demo::routes(state.clone()));
    Router::new().route("/healthz", get(healthz)).nest("/api", api).merge(static_routes(web_root)).with_state(state)
}

/// `index.html`, `/web/…` and `/pkg/…` (the wasm build). File names there are not
/// content-hashed, so clients revalidate (`no-cache` with Last-Modified) instead of caching blindly.
fn static_routes(web_root: &Path) -> Router<AppState> {
    Router::new()
        .route_service("/", ServeFile::new(web_root.join("index.html")))
        .route_service("/index.html", ServeFile::new(web_root.join("index.html")))
        .nest_service("/web", ServeDir::new(web_root.join("web")))
        .nest_service("/pkg", ServeDir::new(web_root.join("web").join("pkg")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
}

async fn healthz(State(app): State<AppState>) -> (StatusCode, &'static str) {
    match tokio::time::timeout(Duration::from_secs(3), app.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database not answering\n"),
    }
}

/// The stored hash of the researcher token, creating the token on first start (or with
/// `reset`): printed once and written to `DATA/researcher-token` with mode 0600.
async fn researcher_token(store: &dyn Store, data_dir: &Path, reset: bool) -> anyhow::Result<String> {
    if !reset {
        if let Some(hash) = store.get_setting(TOKEN_SETTING).await? {
            eprintln!(
                "researcher token: as printed at the first start (kept in {})",
                data_dir.join(TOKEN_FILE).display()
            );
            return Ok(hash);
        }
    }
    let token = deper_store::random_hex(32)?;
    let hash = deper_store::sha256_hex(token.as_bytes());
    let path = data_dir.join(TOKEN_FILE);
    write_private(&path, &format!("{token}\n")).with_context(|| format!("writing {}", path.display()))?;
    store.put_setting(TOKEN_SETTING, &hash).await?;
    println!("researcher token (shown once; also in {}): {token}", path.display());
    Ok(hash)
}

/// Writes `text` to a file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        // `mode` applies only to new files; an older file gets its permissions fixed too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    }
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
