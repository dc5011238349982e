//! `deper serve`: the study server on one address, with its data folder and database.

use super::DeviceKind;
use crate::server::{launch, Limits, ServerSettings};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data folder: the SQLite database, uploaded images, exports, job runs, the researcher token.
    #[arg(long, default_value_os_t = super::default_data_dir())]
    pub data: PathBuf,
    /// Database URL: `postgres://user:pass@host/db` for PostgreSQL; default a SQLite file in --data.
    #[arg(long)]
    pub db: Option<String>,
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Device for training jobs.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Qwen2-VL Hugging Face folder for the caption API (`POST /api/captions`); without it the API answers 503.
    #[arg(long)]
    pub vlm: Option<PathBuf>,
    /// A `deper train stage2` DEPER run whose adapter turns a z_s into the persona embedding.
    #[arg(long, requires = "vlm")]
    pub persona_run: Option<PathBuf>,
    /// Folder with index.html, web/ and web/pkg/ (the browser app).
    #[arg(long, default_value = ".")]
    pub web: PathBuf,
    /// Most samples per uploaded batch.
    #[arg(long, default_value_t = Limits::default().max_samples_per_batch)]
    pub max_samples_per_batch: usize,
    /// Largest image upload in bytes.
    #[arg(long, default_value_t = Limits::default().max_upload_bytes)]
    pub max_upload_bytes: usize,
    /// Replace the researcher token with a new one (printed, and written to DATA/researcher-token).
    #[arg(long)]
    pub reset_token: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let caption: Option<std::sync::Arc<dyn crate::server::CaptionService>> = match &args.vlm {
        Some(vlm) => {
            if !vlm.is_dir() {
                anyhow::bail!("--vlm {}: not a folder", vlm.display());
            }
            let service = crate::server::caption::VlmCaptioner::load(vlm, args.persona_run.as_deref())?;
            eprintln!("caption API: {} loaded", vlm.display());
            Some(std::sync::Arc::new(service))
        }
        None => None,
    };
    let settings = ServerSettings {
        db_url: args.db,
        device: args.device,
        web_root: args.web,
        limits: Limits {
            max_samples_per_batch: args.max_samples_per_batch,
            max_upload_bytes: args.max_upload_bytes,
            ..Limits::default()
        },
        reset_token: args.reset_token,
        caption,
        ..ServerSettings::new(args.data)
    };
    // Fail now, not at the first job, when the training device is missing.
    super::with_backend!(args.device, B, AD, dev => {
        device_ready::<B>(&dev);
        Ok::<(), anyhow::Error>(())
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("--addr {}: cannot listen there", args.addr))?;
        let addr = listener.local_addr()?;
        println!("listening on http://{addr}");
        launch(settings, listener, shutdown_signal()).await
    })
}

/// Names the backend of `with_backend!` (its probe has already run a tensor op on the device).
fn device_ready<B: burn::tensor::backend::Backend>(_device: &B::Device) {}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("shutting down");
}
