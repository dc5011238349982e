//! The frozen VLM of DEPER in burn, loaded from Hugging Face files: Qwen2-VL / Qwen2.5-VL and
//! Idefics3 (SmolVLM), each in its own folder over shared parts.
//!
//! Families (neither imports the other; [`family`] is the one place that names both):
//! - [`qwen2_vl`]: Qwen2-VL and Qwen2.5-VL (the two vision towers side by side, M-RoPE positions).
//! - [`idefics3`]: Idefics3 / SmolVLM (SigLIP tiles, pixel-shuffle connector, Llama decoder).
//! - [`family`]: [`AnyVlm`], a model folder → its family's pipeline by `config.json`'s `model_type`.
//!
//! Shared parts:
//! - [`loader`]: checkpoint key renaming and typed builders, and the decoder's weights.
//! - [`decoder`]: the decoder layers both language models use (Qwen2 with biases, Llama without),
//!   rotary tables, [`decoder::TextConfig`].
//! - [`cache`], [`sampling`], [`generation`]: KV cache, seeded sampler, and the generation loop.
//! - [`tokenizer`], [`chat_template`]: the tokenizer (with Qwen2-VL's image-pad expansion) and the
//!   chat template.
//! - [`persona`]: DEPER's persona slot — the token, the prompt, persona vectors and their injection.
//! - `resample`: the fixed-point resize pass both image processors share.
//! - [`caption`]: caption jobs and results; [`error`]: [`VlmError`]; [`cpu`]: CPU fast paths.
//!
//! Everything is generic over the burn backend; the backend is chosen by the caller.

pub mod cache;
pub mod caption;
pub mod chat_template;
pub mod cpu;
pub mod decoder;
pub mod error;
pub mod family;
pub mod generation;
pub mod idefics3;
pub mod loader;
pub mod persona;
pub mod qwen2_vl;
mod resample;
pub mod sampling;
pub mod tokenizer;

pub use cache::KvCache;
pub use caption::{Caption, CaptionJob};
pub use decoder::TextConfig;
pub use error::{Result, VlmError};
pub use family::{input_embedding_table, AnyVlm, InputEmbeddingTable};
pub use generation::{Generated, GenerationConfig, StopReason};
pub use persona::{Persona, PersonaVectors};
pub use qwen2_vl::{
    load_pretrained, qwen2_5_vl_3b, qwen2_5_vl_7b, qwen2_vl_2b, qwen2_vl_7b, smart_resize, ImageProcessor,
    MultimodalInput, PixelValues, Qwen2Vl, Qwen2VlConfig, TokenIds, VisionConfig, VisionKind, Vlm,
};
pub use sampling::{Sampler, SamplingConfig};
pub use tokenizer::{ChatMessage, ContentPart, Qwen2VlTokenizer};
