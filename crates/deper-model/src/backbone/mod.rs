//! DINOv3 image backbones: burn ports of Hugging Face `DINOv3ViTModel`, `DINOv3ConvNextModel` and
//! `DINOv3ViTImageProcessor` (transformers 5.24.0, `models/dinov3_vit/`, `models/dinov3_convnext/`),
//! inference only.
//!
//! - [`any`]: [`AnyBackbone`], which loads either family from a hub folder by its `model_type`.
//! - [`config`]: [`Dinov3Config`], read directly from a hub `config.json`; presets
//!   [`Dinov3Config::vits16`] and [`Dinov3Config::vitb16`].
//! - [`vit`]: the model [`Dinov3`]: patch embedding, CLS + register tokens, pre-LN layers with
//!   2-D RoPE attention on the patch tokens and LayerScale, final LayerNorm.
//! - [`rope`]: the RoPE tables and rotation.
//! - [`pretrained`]: [`load_pretrained`] with the key-rename table.
//! - [`convnext_config`]: [`Dinov3ConvNextConfig`], presets [`Dinov3ConvNextConfig::convnext_tiny`] etc.
//! - [`convnext`]: the model [`Dinov3ConvNext`]: patchify stem, four stages of depthwise-7×7 blocks,
//!   pooled token + grid tokens through the final LayerNorm.
//! - [`convnext_pretrained`]: its loader ([`load_convnext_pretrained`]) with the key-rename table.
//! - `loader`: checkpoint tensors as burn modules, shared by both loaders.
//! - [`preprocess`]: [`Dinov3ImageProcessor`] (rescale → antialiased bilinear resize → normalise), the
//!   processor of both families' hub checkpoints.
//!
//! Parity against transformers is checked by `tests/dinov3_parity.rs` and
//! `tests/dinov3_convnext_parity.rs` on the tiny random fixtures in `tests/fixtures/dinov3_tiny/`
//! and `tests/fixtures/dinov3_convnext_tiny/`.

pub mod any;
pub mod config;
pub mod convnext;
pub mod convnext_config;
pub mod convnext_pretrained;
pub(crate) mod loader;
pub mod preprocess;
pub mod pretrained;
pub mod rope;
pub mod vit;

use std::path::{Path, PathBuf};

pub use any::AnyBackbone;
pub use config::Dinov3Config;
pub use convnext::{Dinov3ConvNext, Dinov3ConvNextOutput};
pub use convnext_config::Dinov3ConvNextConfig;
pub use convnext_pretrained::{
    from_checkpoint as convnext_from_checkpoint, load_pretrained as load_convnext_pretrained,
};
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
    #[error("not a DINOv3 ConvNeXt config: model_type is {found} (expected \"dinov3_convnext\")")]
    NotDinov3ConvNext { found: String },
    #[error("unsupported backbone: model_type is {found} (supported: \"dinov3_vit\", \"dinov3_convnext\")")]
    UnsupportedModelType { found: String },
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
