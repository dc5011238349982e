//! `deper serve`: the study server on one address, with its data folder and database.

use crate::server::{launch, Limits, ServerSettings};
use anyhow::Context;
use clap::Args;
use deper_pipeline::DeviceKind;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  deper serve                                   SQLite in deper-data/, the demo study, caption preview\n  deper serve --addr 0.0.0.0:8080 --db postgres://deper:secret@db/deper --no-demo\n  deper serve --vlm Qwen2-VL-2B-Instruct --persona-run runs/deper --embedder runs/deper"
)]
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
    #[arg(long, default_value = "cpu", help = super::DEVICE_HELP)]
    pub device: DeviceKind,
    /// Hugging Face VLM folder (Qwen2-VL, Qwen2.5-VL or Idefics3/SmolVLM) for the caption API (`POST /api/captions`); without it the API answers 503.
    #[arg(long)]
    pub vlm: Option<PathBuf>,
    /// A `deper train stage2` DEPER run whose adapter turns a z_s into the persona embedding.
    #[arg(long, requires = "vlm")]
    pub persona_run: Option<PathBuf>,
    /// Stage-1 run folder (`run.json` + `model.mpk`) whose subject encoder the page runs in the browser
    /// (`/api/embedder`); a `deper train stage2 --method deper` run works too (its fine-tuned encoder).
    #[arg(long)]
    pub embedder: Option<PathBuf>,
    /// Do not build or open the demo (world, models, study). Without --vlm and --embedder, `deper serve`
    /// otherwise builds the demo models in DATA/demo on first start (as `deper demo` does) and serves them.
    #[arg(long)]
    pub no_demo: bool,
    /// Images in the demo study.
    #[arg(long, default_value_t = 8)]
    pub demo_study_images: usize,
    /// Folder with index.html, web/ and web/pkg/ (the browser app).
    #[arg(long, default_value = ".")]
    pub web: PathBuf,
    /// Most samples per uploaded batch.
    #[arg(long, default_value_t = Limits::default().max_samples_per_batch)]
    pub max_samples_per_batch: usize,
    /// Largest image upload in bytes.
    #[arg(long, default_value_t = Limits::default().max_upload_bytes)]
    pub max_upload_bytes: usize,
    /// Most caption requests generated together in one batch.
    #[arg(long, default_value_t = crate::server::caption::Batching::default().max_batch, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub caption_batch: usize,
    /// Milliseconds an idle captioner waits for more requests to batch with the first one.
    #[arg(long, default_value_t = crate::server::caption::Batching::default().window.as_millis() as u64)]
    pub caption_batch_window_ms: u64,
    /// Replace the researcher token with a new one (printed, and written to DATA/researcher-token).
    #[arg(long)]
    pub reset_token: bool,
}

pub fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    // Fail now, not at the first job, when the training device is missing.
    deper_pipeline::backend::check_device(args.device)?;
    let mut demo = None;
    if !args.no_demo && args.vlm.is_none() && args.embedder.is_none() {
        let out = args.data.join("demo");
        if !deper_pipeline::demo::DemoPaths::new(&out).is_complete() {
            eprintln!(
                "first start: building the demo models in {} (once; `deper serve --no-demo` skips this)",
                out.display()
            );
        }
        let mut bars = super::Bars::new();
        let prepared = deper_pipeline::demo::ensure(&out, args.device, &mut bars.callback())?;
        drop(bars);
        args.vlm = Some(prepared.captioner);
        args.persona_run = Some(prepared.persona_run);
        args.embedder = Some(prepared.encoder);
        demo = Some(crate::server::demo::DemoStudy { world: prepared.world, images: args.demo_study_images });
    }
    let embedder = match &args.embedder {
        Some(run) => Some(std::sync::Arc::new(load_embedder(run)?)),
        None => None,
    };
    // The demo world's subjects, embedded with the page's encoder, are the reference points of the
    // embedding map and caption subjects by name.
    let mut references = crate::server::embeddings::ReferenceSubjects::default();
    if let (Some(demo), Some(assets)) = (&demo, &embedder) {
        let device = Default::default();
        let embeddings = deper_train::eval::embed::<burn::backend::NdArray>(
            &assets.run_dir,
            &demo.world,
            None,
            deper_core::split::DEFAULT_SHOTS,
            &device,
        )
        .context("embedding the demo world's subjects")?;
        references.subjects = embeddings.subjects.into_iter().map(|(name, e)| (name, e.z_s)).collect();
    }
    let caption: Option<std::sync::Arc<dyn crate::server::CaptionService>> = match &args.vlm {
        Some(vlm) => {
            if !vlm.is_dir() {
                anyhow::bail!("--vlm {}: not a folder", vlm.display());
            }
            let batching = crate::server::caption::Batching {
                max_batch: args.caption_batch,
                window: std::time::Duration::from_millis(args.caption_batch_window_ms),
            };
            let service = crate::server::caption::VlmCaptioner::load_with(vlm, args.persona_run.as_deref(), batching)?;
            eprintln!("caption API: {} loaded", vlm.display());
            Some(std::sync::Arc::new(service))
        }
        None => None,
    };
    if !args.web.join("index.html").is_file() {
        eprintln!("warning: --web {}: no index.html there; the browser app will answer 404", args.web.display());
    } else if !args.web.join("web/pkg/deper_web.js").is_file() {
        eprintln!(
            "warning: {} is missing: pages work, but without the in-page encoder (no z_s, no preview); \
             build it with `bash web/build.sh`",
            args.web.join("web/pkg").display()
        );
    }
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
        embedder,
        demo,
        references,
        ..ServerSettings::new(args.data)
    };
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

/// A stage-1 run as it is; a stage-2 DEPER run through its exported encoder (`RUN/encoder`, written
/// once: stage 2 fine-tunes the encoder, and its adapter expects that encoder's z_s).
fn load_embedder(run: &std::path::Path) -> anyhow::Result<crate::server::embedder::EmbedderAssets> {
    let stage = std::fs::read_to_string(run.join(deper_train::stage1::RUN_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("stage")?.as_str().map(str::to_string));
    let folder = if stage.as_deref() == Some(deper_train::stage2::STAGE2) {
        let out = run.join("encoder");
        if !out.join(deper_train::stage1::RUN_FILE).is_file() {
            deper_train::stage2::export_encoder(run, &out)?;
        }
        out
    } else {
        run.to_path_buf()
    };
    let assets = crate::server::embedder::EmbedderAssets::load(&folder)
        .with_context(|| format!("--embedder {}", run.display()))?;
    eprintln!("in-page subject encoder: {} (version {})", folder.display(), assets.version);
    Ok(assets)
}

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
