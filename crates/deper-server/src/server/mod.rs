//! The study server: an axum app over a [`deper_store::Store`], with a job runner beside it.
//!
//! [`launch`] takes a bound listener (tests bind port 0) and a shutdown future; it opens the
//! store, fails jobs a previous server left running, makes sure a researcher token exists,
//! then serves the routes of [`studies`], [`participant`], [`jobs`], [`caption`] and the
//! static browser app until `shutdown` resolves, and stops the job runner with it. Every
//! request is logged as one `tracing` event ([`log_request`]: method, route template, status,
//! milliseconds; never the path's values, the query string or a header).
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
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
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
        tracing::warn!(jobs = failed, "jobs were running when the server stopped; marked failed (server restarted)");
    }
    let copied = embeddings::backfill_from_files(&*store, &data_dir).await.context("copying stored z_s files")?;
    if copied > 0 {
        tracing::info!(subjects = copied, "participant z_s files of an older server copied into the database");
    }
    let researcher_hash = researcher_token(&*store, &data_dir, settings.reset_token).await?;
    if let Some(demo) = &settings.demo {
        let id = demo::ensure_study(&*store, &data_dir, demo).await.context("preparing the demo study")?;
        tracing::info!(study = id, "demo study ready: open /?study={id} (participant), /?researcher (dashboard)");
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
    match listener.local_addr() {
        Ok(addr) => tracing::info!("listening on http://{addr}"),
        Err(e) => tracing::warn!(error = %e, "listening (address unknown)"),
    }
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
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/api", api)
        .merge(static_routes(web_root))
        // `Router::layer` wraps each route (after routing, so the route template is known) and the
        // fallback.
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Target of the request log (`RUST_LOG=deper_server::http=warn` silences it).
pub const REQUEST_LOG_TARGET: &str = "deper_server::http";

/// One `info` event per request once its response is ready (for a stream: when it starts):
/// `method`, `route` (the template, e.g. `/api/studies/{id}`: ids, hashes and query strings stay
/// out of the log), `status` and `ms`.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = route_template(&request);
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::info!(target: REQUEST_LOG_TARGET, %method, %route, status = response.status().as_u16(), ms = format_args!("{ms:.1}"), "request");
    response
}

/// The route a request matched. The static folders are nested services, which set no
/// [`MatchedPath`]; they are named by their mount point.
fn route_template(request: &Request) -> String {
    if let Some(matched) = request.extensions().get::<MatchedPath>() {
        return matched.as_str().to_string();
    }
    let path = request.uri().path();
    if path.starts_with("/web/") {
        "/web/{file}".into()
    } else if path.starts_with("/pkg/") {
        "/pkg/{file}".into()
    } else {
        "unmatched".into()
    }
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
