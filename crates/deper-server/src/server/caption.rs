//! The caption endpoint (`POST /api/captions`, also `/api/caption`): a [`CaptionService`] in the app
//! state. [`VlmCaptioner`] is the real one: a Hugging Face Qwen2-VL folder loaded once and shared,
//! with an optional DEPER stage-2 run whose adapter turns a z_s into the persona token's embedding.
//! Without a service the endpoint answers 503.

use super::error::{ApiError, ApiJson, ApiResult};
use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{middleware, Json, Router};
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

/// The VLM (CPU) with an optional DEPER adapter.
pub struct VlmCaptioner {
    vlm: std::sync::Mutex<deper_vlm::Vlm<burn::backend::NdArray>>,
    hidden: usize,
    has_persona_token: bool,
    /// Adapter weight `[d_in, hidden]` row-major and `d_in` (the z_s width).
    adapter: Option<(Vec<f32>, usize)>,
}

impl std::fmt::Debug for VlmCaptioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VlmCaptioner").field("hidden", &self.hidden).field("adapter", &self.adapter.is_some()).finish()
    }
}

impl VlmCaptioner {
    /// Loads `vlm` (a Hugging Face Qwen2-VL folder) and, optionally, the adapter of a `deper train
    /// stage2 --method deper` run.
    pub fn load(vlm: &std::path::Path, stage2_run: Option<&std::path::Path>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let device = Default::default();
        let model = deper_vlm::Vlm::<burn::backend::NdArray>::load(vlm, &device)
            .with_context(|| format!("--vlm {}", vlm.display()))?;
        let hidden = model.config.text.hidden_size;
        let has_persona_token = model.tokenizer.token_id(deper_vlm::pipeline::PERSONA_TOKEN).is_some();
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
                let p = deper_train::stage2::load_personalizer::<burn::backend::NdArray>(run, &info, &device)?;
                let linear =
                    p.adapter.ok_or_else(|| anyhow::anyhow!("{}: not a DEPER run (no adapter)", run.display()))?;
                let w = linear.weight.val();
                let [d_in, _] = w.dims();
                let values = w.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                Some((values, d_in))
            }
        };
        Ok(Self { vlm: std::sync::Mutex::new(model), hidden, has_persona_token, adapter })
    }

    /// The persona token's embedding for a request's vector: as given (VLM hidden size) or through
    /// the adapter (z_s width).
    fn persona_row(&self, v: &[f32]) -> Result<Vec<f32>, String> {
        if v.iter().any(|x| !x.is_finite()) {
            return Err("persona holds a non-finite value".into());
        }
        if v.len() == self.hidden {
            return Ok(v.to_vec());
        }
        match &self.adapter {
            Some((w, d_in)) if v.len() == *d_in => {
                Ok((0..self.hidden).map(|o| (0..*d_in).map(|i| v[i] * w[i * self.hidden + o]).sum()).collect())
            }
            Some((_, d_in)) => Err(format!(
                "persona has {} values; expected z_s ({d_in}) or a persona embedding ({})",
                v.len(),
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
            deper_train::captioner::PERSONA_PROMPT
        } else {
            deper_vlm::pipeline::DEFAULT_CAPTION_PROMPT
        };
        let prompt = request.prompt.as_deref().unwrap_or(default_prompt);
        let vlm = self.vlm.lock().map_err(|_| anyhow::anyhow!("the captioner crashed earlier"))?;
        let generation = vlm.generation_config(request.max_new_tokens.unwrap_or(64));
        // Each token's text is what it adds to the decoded caption (byte-level BPE pieces may only
        // become characters together with later ones).
        let mut ids = Vec::new();
        let mut text = String::new();
        let mut forward = |id: u32| {
            if generation.stop_tokens.contains(&id) {
                return on_token(id, "");
            }
            ids.push(id);
            let now = vlm.tokenizer.decode(&ids, true).unwrap_or_default();
            let added = now.strip_prefix(text.as_str()).unwrap_or("").to_string();
            if now.starts_with(text.as_str()) {
                text = now;
            }
            on_token(id, &added)
        };
        let out = vlm.caption(image_path, prompt, persona.as_ref(), &generation, &mut forward)?;
        Ok(CaptionResponse { caption: out.text, personalized: persona.is_some(), generated_ids: out.generated_ids })
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
