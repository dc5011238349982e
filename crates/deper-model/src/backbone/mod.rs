//! DINOv3 ViT image backbone: a burn port of Hugging Face `DINOv3ViTModel` and
//! `DINOv3ViTImageProcessor` (transformers 5.24.0, `models/dinov3_vit/`), inference only.
//!
//! - [`config`]: [`Dinov3Config`], read directly from a hub `config.json`; presets
//!   [`Dinov3Config::vits16`] and [`Dinov3Config::vitb16`].
//! - [`vit`]: the model [`Dinov3`]: patch embedding, CLS + register tokens, pre-LN layers with
//!   2-D RoPE attention on the patch tokens and LayerScale, final LayerNorm.
//! - [`rope`]: the RoPE tables and rotation.
//! - [`pretrained`]: [`load_pretrained`] with the key-rename table.
//! - [`preprocess`]: [`Dinov3ImageProcessor`] (rescale → antialiased bilinear resize → normalise).
//!
//! Parity against transformers is checked by `tests/dinov3_parity.rs` on the tiny random fixture
//! in `tests/fixtures/dinov3_tiny/`.

pub mod config;
pub mod preprocess;
pub mod pretrained;
pub mod rope;
pub mod vit;

use std::path::{Path, PathBuf};

pub use config::Dinov3Config;
pub use preprocess::Dinov3ImageProcessor;
pub use pretrained::{from_checkpoint, load_pretrained};
pub use vit::{Dinov3, Dinov3Output};

/// Errors of configuration, weight loading and preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not a DINOv3 ViT config: model_type is {found} (expected \"dinov3_vit\")")]
    NotDinov3 { found: String },
    #[error("invalid DINOv3 config: {0}")]
    Config(String),
    #[error("{}: {inner}", path.display())]
    InFile { path: PathBuf, inner: Box<BackboneError> },
    #[error(transparent)]
    Weights(#[from] deper_weights::WeightsError),
    #[error("image: {0}")]
    Image(String),
}

impl BackboneError {
    /// Prefixes the error with the file it came from.
    pub(crate) fn in_file(self, path: &Path) -> Self {
        BackboneError::InFile { path: path.into(), inner: Box::new(self) }
    }
}
