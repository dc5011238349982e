//! Captions from a frozen VLM as downloaded (Qwen2-VL, Qwen2.5-VL, Idefics3/SmolVLM), optionally
//! with persona vectors in the persona slot, and the raw forward pass for parity checks.

use crate::backend::{with_backend, DeviceKind};
use deper_vlm::{AnyVlm, Caption, PersonaVectors};
use std::path::{Path, PathBuf};

/// One caption request.
#[derive(Debug, Clone)]
pub struct CaptionRequest {
    /// Hugging Face model folder.
    pub model: PathBuf,
    pub image: PathBuf,
    /// The user turn's text; the image is placed before it, as the HF processor does.
    pub prompt: String,
    /// Persona vectors (safetensors with `persona_embeddings` [K, hidden], optional
    /// `persona_token_ids`); the prompt must then contain the persona token(s).
    pub persona: Option<PathBuf>,
    pub max_new_tokens: usize,
}

/// Greedy caption of one image; `on_token` sees each generated id and may stop generation by
/// returning `false`.
pub fn caption(
    request: &CaptionRequest,
    device: DeviceKind,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> anyhow::Result<Caption> {
    let persona = request.persona.as_deref().map(PersonaVectors::from_file).transpose()?;
    with_backend!(device, B, AD, device => {
        let vlm = AnyVlm::<B>::load(&request.model, &device)?;
        let generation = vlm.generation_config(request.max_new_tokens);
        vlm.caption(&request.image, &request.prompt, persona.as_ref(), &generation, on_token)
            .map_err(anyhow::Error::from)
    })
}

/// Logits for the inputs in `inputs` (safetensors), written to `out` (`deper vlm forward`).
pub fn vlm_forward(model: &Path, inputs: &Path, out: &Path, device: DeviceKind) -> anyhow::Result<()> {
    with_backend!(device, B, AD, device => {
        let vlm = AnyVlm::<B>::load(model, &device)?;
        vlm.forward_file(inputs, out).map_err(anyhow::Error::from)
    })
}
