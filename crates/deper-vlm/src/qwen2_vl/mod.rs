//! Qwen2-VL and Qwen2.5-VL (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`).
//!
//! The two share everything but the vision tower; `config.json`'s `model_type` (`qwen2_vl` or
//! `qwen2_5_vl`) picks it.
//!
//! - [`config`]: both `config.json` layouts (flat hub, nested transformers 5.x) of both families, and
//!   presets.
//! - [`pretrained`]: the key-rename table and [`pretrained::load_pretrained`] (safetensors, sharded,
//!   bf16/f16/f32, tied embeddings).
//! - [`vision`]: the ViT with 2-D RoPE and the 2×2 patch merger — Qwen2-VL's tower (full attention,
//!   LayerNorm, QuickGELU) beside Qwen2.5-VL's (window attention, RMSNorm, SwiGLU).
//! - [`mrope`]: M-RoPE positions ([`rope_index`]) of text and image tokens for the shared decoder.
//! - [`model`]: [`Qwen2Vl`] — image features scattered into `<|image_pad|>` slots, persona rows
//!   injected at persona-token positions, logits, and KV-cache generation (single and batched).
//! - [`preprocess`]: `Qwen2VLImageProcessor` (smart resize, bicubic antialias, patches).
//! - [`pipeline`]: [`Vlm`], what `deper caption` and `deper vlm forward` call through [`crate::AnyVlm`].
//! - [`train`]: the batched teacher-forced caption loss; [`export`]: `save_pretrained` in the hub layout.
//!
//! Reference: transformers `models/qwen2_vl/`, `models/qwen2_5_vl/`, checked against
//! `tests/fixtures/qwen2_vl_tiny` and the Qwen2.5-VL fixtures.

pub mod config;
pub mod export;
pub mod model;
pub mod mrope;
pub mod pipeline;
pub mod preprocess;
pub mod pretrained;
pub mod train;
pub mod vision;

pub use config::{
    qwen2_5_vl_3b, qwen2_5_vl_7b, qwen2_vl_2b, qwen2_vl_7b, Qwen2VlConfig, TokenIds, VisionConfig, VisionKind,
};
pub use model::{MultimodalInput, Qwen2Vl};
pub use mrope::rope_index;
pub use pipeline::Vlm;
pub use preprocess::{smart_resize, ImageProcessor, PixelValues};
pub use pretrained::load_pretrained;
