//! Idefics3 (`Idefics3ForConditionalGeneration`, the architecture of SmolVLM): the small model that runs
//! well on CPU.
//!
//! - [`config`]: `config.json` (SigLIP-like `vision_config`, Llama `text_config`, `scale_factor`).
//! - [`pretrained`]: the key table and [`pretrained::load_pretrained`].
//! - [`vision`]: SigLIP embeddings with bucketised position ids, encoder, pixel-shuffle connector.
//! - [`model`]: [`model::Idefics3`] — tile features scattered into `<image>` slots, persona rows, the
//!   Llama decoder (the crate's [`crate::decoder::TextModel`] with 1-D rotary positions), KV-cache generation.
//! - [`pipeline`]: [`pipeline::Idefics3Vlm`], what `deper caption` / `deper vlm forward` call through
//!   [`crate::AnyVlm`].
//! - [`preprocess`]: `Idefics3ImageProcessor` (PIL Lanczos resize, tiling, global image) and the
//!   `<image>` expansion of `Idefics3Processor`.
//!
//! Reference: transformers `models/idefics3/`, checked against `tests/fixtures/idefics3_tiny`.

pub mod config;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod pretrained;
pub mod vision;

pub use config::{Idefics3Config, Idefics3VisionConfig, LlamaConfig};
pub use model::{Idefics3, Idefics3Images, Idefics3Input};
pub use pipeline::Idefics3Vlm;
pub use preprocess::{expand_image_tokens, Idefics3ImageProcessor, Idefics3Pixels, Resample};
pub use pretrained::load_pretrained;
