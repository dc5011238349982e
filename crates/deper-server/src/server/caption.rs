//! The caption endpoint (`POST /api/captions`, also `/api/caption`): a [`CaptionService`] in the app
//! state. [`VlmCaptioner`] is the real one: a Hugging Face VLM folder (Qwen2-VL, Qwen2.5-VL or Idefics3) loaded once, owned by one
//! worker thread that generates requests arriving together as one batch ([`Batching`]), with an
//! optional DEPER stage-2 run whose adapter turns a z_s into the persona token's embedding.
//! Without a service the endpoint answers 503.

use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{middleware, Json, Router};
use deper_model::adapter::PersonaAdapter;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::convert::Infallible;

/// What a caption request carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionRequest {
    /// SHA-256 of an uploaded stimulus.
    pub image: String,
    /// A subject embedding z_s to personalise the caption; `None`: a generic caption.
    #[serde(default)]
    pub persona: Option<Vec<f32>>,
    /// A subject by name instead of `persona`: a participant pseudonym whose page stored its z_s, or
    /// a reference subject of the demo world. The server puts their z_s in `persona`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    /// Most generated tokens (default 64, at most 256).
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// Answer with server-sent events: `token` `{"id", "text"}` per generated token (the text it adds),
    /// then `done` with the whole response (or `error`).
    #[serde(default)]
    pub stream: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionResponse {
    pub caption: String,
    /// Whether a persona vector conditioned the caption.
    #[serde(default)]
    pub personalized: bool,
    #[serde(default)]
    pub generated_ids: Vec<u32>,
    /// How many requests were generated together with this one (itself included).
    #[serde(default = "one")]
    pub batch_size: usize,
}

fn one() -> usize {
    1
}

/// A loaded captioner. Calls run on a blocking thread.
pub trait CaptionService: Send + Sync + std::fmt::Debug {
    /// Captions the PNG at `image_path` (a stored stimulus).
    fn caption(&self, image_path: &std::path::Path, request: &CaptionRequest) -> anyhow::Result<CaptionResponse>;

    /// Like [`Self::caption`], calling `on_token(id, added_text)` as tokens arrive; returning `false`
    /// stops generation (the client went away).
    fn caption_streaming(
        &self,
        image_path: &std::path::Path,
        request: &CaptionRequest,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> anyhow::Result<CaptionResponse> {
        let out = self.caption(image_path, request)?;
        for &id in &out.generated_ids {
            on_token(id, "");
        }
        Ok(out)
    }

    /// Checks a request before any work: `Err` is the client's mistake (answered 422).
    fn check(&self, _request: &CaptionRequest) -> Result<(), String> {
        Ok(())
    }
}

/// How [`VlmCaptioner`] groups requests into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most requests generated together.
    pub max_batch: usize,
    /// How long the first request of an idle captioner waits for company. Requests that arrive
    /// while a batch is generating are batched in the next round whatever this is.
    pub window: std::time::Duration,
}

impl Default for Batching {
    fn default() -> Self {
        // A few milliseconds against captions that take hundreds: simultaneous requests share a pass.
        Self { max_batch: 8, window: std::time::Duration::from_millis(15) }
    }
}

/// One request waiting for the batch worker.
struct Pending {
    image: std::path::PathBuf,
    prompt: String,
    persona: Option<deper_vlm::PersonaVectors>,
    max_new_tokens: usize,
    events: std::sync::mpsc::Sender<RowEvent>,
}

/// What the worker tells a waiting request.
enum RowEvent {
    /// A generated id and the text it adds to the caption.
    Token(u32, String),
    /// The caption (or why not) and how many requests shared its batch.
    Done(Result<deper_vlm::Caption, String>, usize),
}

/// The VLM (CPU; Qwen2-VL, Qwen2.5-VL or Idefics3) with an optional DEPER adapter, owned by one
/// worker thread that generates the requests queued together as one batch
/// ([`deper_vlm::AnyVlm::caption_batch`]; Idefics3 takes them one after the other).
pub struct VlmCaptioner {
    queue: std::sync::Mutex<std::sync::mpsc::Sender<Pending>>,
    hidden: usize,
    has_persona_token: bool,
    /// The DEPER run's persona adapter (z_s → persona embedding), the one stage 2 trained.
    adapter: Option<PersonaAdapter<burn::backend::NdArray>>,
    stats: std::sync::Arc<BatchStats>,
}

/// Counters of the batch worker.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: std::sync::atomic::AtomicUsize,
    pub requests: std::sync::atomic::AtomicUsize,
    pub largest_batch: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for VlmCaptioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VlmCaptioner").field("hidden", &self.hidden).field("adapter", &self.adapter.is_some()).finish()
    }
}

impl VlmCaptioner {
    /// Loads `vlm` (a Hugging Face Qwen2-VL, Qwen2.5-VL or Idefics3 folder) and, optionally, the adapter of a `deper train
    /// stage2 --method deper` run, with the default [`Batching`].
    pub fn load(vlm: &std::path::Path, stage2_run: Option<&std::path::Path>) -> anyhow::Result<Self> {
        Self::load_with(vlm, stage2_run, Batching::default())
    }

    /// [`Self::load`] with explicit batching.
    pub fn load_with(
        vlm: &std::path::Path,
        stage2_run: Option<&std::path::Path>,
        batching: Batching,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        if batching.max_batch == 0 {
            anyhow::bail!("the caption batch size must be at least 1");
        }
        let device = Default::default();
        let model = deper_vlm::AnyVlm::<burn::backend::NdArray>::load(vlm, &device)
            .with_context(|| format!("--vlm {}", vlm.display()))?;
        let hidden = model.hidden_size();
        let has_persona_token = model.tokenizer().token_id(deper_vlm::persona::PERSONA_TOKEN).is_some();
        let adapter = match stage2_run {
            None => None,
            Some(run) => {
                let info = deper_train::stage2::Stage2Info::load(run)?;
                if info.hidden_size != hidden {
                    anyhow::bail!(
                        "{}: the run's adapter writes {} values but the VLM's hidden size is {hidden}",
                        run.display(),
                        info.hidden_size
                    );
                }
                let personalizer =
                    deper_train::stage2::load_personalizer::<burn::backend::NdArray>(run, &info, &device)?;
                let adapter = personalizer
                    .adapter()
                    .ok_or_else(|| anyhow::anyhow!("{}: not a DEPER run (no adapter)", run.display()))?;
                Some(adapter.clone())
            }
        };
        let (queue, requests) = std::sync::mpsc::channel::<Pending>();
        let stats = std::sync::Arc::new(BatchStats::default());
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name("deper-captioner".into())
            .spawn(move || batch_worker(model, requests, batching, &worker_stats))
            .context("starting the captioner thread")?;
        Ok(Self { queue: std::sync::Mutex::new(queue), hidden, has_persona_token, adapter, stats })
    }

    /// Batches run and requests served so far.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// The persona token's embedding for a request's vector: as given (VLM hidden size) or through
    /// the adapter (z_s width).
    pub fn persona_row(&self, v: &[f32]) -> Result<Vec<f32>, String> {
        if v.iter().any(|x| !x.is_finite()) {
            return Err("persona holds a non-finite value".into());
        }
        if v.len() == self.hidden {
            return Ok(v.to_vec());
        }
        match &self.adapter {
            Some(adapter) if v.len() == adapter.d_in() => adapter.forward_vec(v).map_err(|e| e.to_string()),
            Some(adapter) => Err(format!(
                "persona has {} values; expected z_s ({}) or a persona embedding ({})",
                v.len(),
                adapter.d_in(),
                self.hidden
            )),
            None => Err(format!(
                "persona has {} values; expected a persona embedding of {} (start the server with --persona-run to pass z_s)",
                v.len(),
                self.hidden
            )),
        }
    }
}

/// The captioner thread: waits for a request, gathers the ones that arrive within the window (or
/// queued meanwhile), generates them as one batch and streams each its tokens. It ends when the
/// captioner is dropped.
fn batch_worker(
    vlm: deper_vlm::AnyVlm<burn::backend::NdArray>,
    requests: std::sync::mpsc::Receiver<Pending>,
    batching: Batching,
    stats: &BatchStats,
) {
    use std::sync::atomic::Ordering;
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        let deadline = std::time::Instant::now() + batching.window;
        while batch.len() < batching.max_batch {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match requests.recv_timeout(left) {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let jobs: Vec<deper_vlm::CaptionJob<'_>> = batch
            .iter()
            .map(|p| deper_vlm::CaptionJob {
                image: &p.image,
                prompt: &p.prompt,
                persona: p.persona.as_ref(),
                generation: vlm.generation_config(p.max_new_tokens),
            })
            .collect();
        let stop_tokens = vlm.generation_config(1).stop_tokens;
        // Each token's text is what it adds to the decoded caption (byte-level BPE pieces may only
        // become characters together with later ones).
        let mut ids: Vec<Vec<u32>> = vec![Vec::new(); batch.len()];
        let mut texts: Vec<String> = vec![String::new(); batch.len()];
        let mut on_token = |k: usize, id: u32| {
            let added = if stop_tokens.contains(&id) {
                String::new()
            } else {
                ids[k].push(id);
                let now = vlm.tokenizer().decode(&ids[k], true).unwrap_or_default();
                let added = now.strip_prefix(texts[k].as_str()).unwrap_or("").to_string();
                if now.starts_with(texts[k].as_str()) {
                    texts[k] = now;
                }
                added
            };
            // A closed receiver is a client that went away: its row stops.
            batch[k].events.send(RowEvent::Token(id, added)).is_ok()
        };
        let results =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vlm.caption_batch(&jobs, &mut on_token)));
        let size = batch.len();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(size, Ordering::Relaxed);
        stats.largest_batch.fetch_max(size, Ordering::Relaxed);
        match results {
            Ok(results) => {
                for (pending, result) in batch.iter().zip(results) {
                    let _ = pending.events.send(RowEvent::Done(result.map_err(|e| e.to_string()), size));
                }
            }
            Err(_) => {
                for pending in &batch {
                    let _ = pending.events.send(RowEvent::Done(Err("the captioner failed on this batch".into()), size));
                }
            }
        }
    }
}

impl CaptionService for VlmCaptioner {
    fn check(&self, request: &CaptionRequest) -> Result<(), String> {
        if let Some(v) = &request.persona {
            if !self.has_persona_token {
                return Err("this VLM's tokenizer has no <|persona|> token: it cannot take a persona".into());
            }
            self.persona_row(v)?;
        }
        if request.max_new_tokens.is_some_and(|n| n == 0 || n > 256) {
            return Err("max_new_tokens must be 1..=256".into());
        }
        Ok(())
    }

    fn caption(&self, image_path: &std::path::Path, request: &CaptionRequest) -> anyhow::Result<CaptionResponse> {
        self.caption_streaming(image_path, request, &mut |_, _| true)
    }

    fn caption_streaming(
        &self,
        image_path: &std::path::Path,
        request: &CaptionRequest,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> anyhow::Result<CaptionResponse> {
        let persona = match &request.persona {
            Some(v) => Some(deper_vlm::PersonaVectors {
                values: self.persona_row(v).map_err(anyhow::Error::msg)?,
                rows: 1,
                token_ids: None,
            }),
            None => None,
        };
        // The persona prompt with the token's own embedding is the zero-shot caption of evaluation.
        let default_prompt = if self.has_persona_token {
            deper_vlm::persona::PERSONA_PROMPT
        } else {
            deper_vlm::caption::DEFAULT_CAPTION_PROMPT
        };
        let personalized = persona.is_some();
        let (events, replies) = std::sync::mpsc::channel();
        let pending = Pending {
            image: image_path.to_path_buf(),
            prompt: request.prompt.clone().unwrap_or_else(|| default_prompt.to_string()),
            persona,
            max_new_tokens: request.max_new_tokens.unwrap_or(64),
            events,
        };
        self.queue
            .lock()
            .map_err(|_| anyhow::anyhow!("the captioner crashed earlier"))?
            .send(pending)
            .map_err(|_| anyhow::anyhow!("the captioner thread has stopped"))?;
        loop {
            match replies.recv() {
                Ok(RowEvent::Token(id, added)) => {
                    if !on_token(id, &added) {
                        // Dropping `replies` tells the worker to stop this row.
                        anyhow::bail!("the client went away");
                    }
                }
                Ok(RowEvent::Done(result, batch_size)) => {
                    let out = result.map_err(anyhow::Error::msg)?;
                    return Ok(CaptionResponse {
                        caption: out.text,
                        personalized,
                        generated_ids: out.generated_ids,
                        batch_size,
                    });
                }
                Err(_) => anyhow::bail!("the captioner thread stopped during the request"),
            }
        }
    }
}

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/caption", post(caption))
        .route("/captions", post(caption))
        .route_layer(middleware::from_fn_with_state(state, super::auth::require_researcher_or_previewing_participant))
}

async fn caption(State(app): State<AppState>, ApiJson(mut req): ApiJson<CaptionRequest>) -> ApiResult<Response> {
    let Some(service) = app.caption.clone() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no captioner loaded"));
    };
    if let Some(subject) = req.subject.take() {
        if req.persona.is_some() {
            return Err(ApiError::unprocessable("give `persona` or `subject`, not both"));
        }
        let z = super::embeddings::subject_vector(&app, &subject)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no stored z_s for subject `{subject}`")))?;
        req.persona = Some(z);
    }
    service.check(&req).map_err(ApiError::unprocessable)?;
    let stimulus = app
        .store
        .get_stimulus_by_sha(&req.image)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no uploaded image with sha256 {}", req.image)))?;
    let path = app.data_dir.join(&stimulus.file);
    if !req.stream {
        let out =
            tokio::task::spawn_blocking(move || service.caption(&path, &req)).await.map_err(ApiError::internal)??;
        return Ok(Json(out).into_response());
    }
    // Tokens go from the generating thread to the response as they come; a closed connection makes
    // the send fail, which stops generation.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    tokio::task::spawn_blocking(move || {
        let result = service.caption_streaming(&path, &req, &mut |id, text| {
            tx.send(Event::default().event("token").data(json!({"id": id, "text": text}).to_string())).is_ok()
        });
        let last = match result {
            Ok(out) => Event::default().event("done").data(serde_json::to_string(&out).unwrap_or_default()),
            Err(e) => Event::default().event("error").data(json!({"error": format!("{e:#}")}).to_string()),
        };
        let _ = tx.send(last);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
