//! The frozen VLM of DEPER: Qwen2-VL and Qwen2.5-VL in burn, loaded from Hugging Face files.
//!
//! The two families share everything but the vision tower; `config.json`'s `model_type` (`qwen2_vl` or
//! `qwen2_5_vl`) picks it, and the model, generation, persona injection and pipeline serve both.
//!
//! - [`config`]: both `config.json` layouts (flat hub, nested transformers 5.x) of both families, and
//!   presets.
//! - [`pretrained`]: the key-rename table and [`pretrained::load_pretrained`] (safetensors, sharded,
//!   bf16/f16/f32, tied embeddings).
//! - [`vision`]: the ViT with 2-D RoPE and the 2×2 patch merger (Qwen2-VL full attention, Qwen2.5-VL
//!   window attention with RMSNorm and SwiGLU).
//! - [`text`]: the Qwen2 decoder with multimodal rotary positions (M-RoPE) and [`text::rope_index`].
//! - [`model`]: [`model::Qwen2Vl`] — image features scattered into `<|image_pad|>` slots, persona rows
//!   injected at persona-token positions, logits, and KV-cache generation with a streaming callback.
//! - [`cache`], [`sampling`], [`tokenizer`], [`preprocess`]: KV cache, seeded sampler, tokenizer + chat
//!   template, and `Qwen2VLImageProcessor`.
//! - [`export`]: `save_pretrained` in the hub layout; [`train`]: the batched teacher-forced caption loss.
//! - [`pipeline`]: [`pipeline::Vlm`], what the `deper caption` and `deper vlm forward` commands call.
//! - [`idefics3`]: Idefics3 / SmolVLM (SigLIP tiles, pixel-shuffle connector, Llama), same persona
//!   injection and generation.
//!
//! Everything is generic over the burn backend; the backend is chosen by the caller.

pub mod cache;
pub mod config;
pub mod cpu;
pub mod export;
pub mod idefics3;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod pretrained;
pub mod sampling;
pub mod text;
pub mod tokenizer;
pub mod train;
pub mod vision;

pub use cache::KvCache;
pub use config::{
    qwen2_5_vl_3b, qwen2_5_vl_7b, qwen2_vl_2b, qwen2_vl_7b, Qwen2VlConfig, TextConfig, TokenIds, VisionConfig,
    VisionKind,
};
pub use model::{Generated, GenerationConfig, MultimodalInput, Persona, Qwen2Vl, StopReason};
pub use pipeline::{AnyVlm, Caption, CaptionJob, PersonaVectors, Vlm};
pub use preprocess::{smart_resize, ImageProcessor, PixelValues};
pub use pretrained::load_pretrained;
pub use sampling::{Sampler, SamplingConfig};
pub use tokenizer::{ChatMessage, ContentPart, Qwen2VlTokenizer};

use std::path::PathBuf;

/// Every failure of this crate, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum VlmError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad config: {0}")]
    Config(String),
    #[error(transparent)]
    Weights(#[from] deper_weights::WeightsError),
    #[error("bad input: {0}")]
    Input(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("image: {0}")]
    Image(String),
}

pub type Result<T, E = VlmError> = std::result::Result<T, E>;
