//! [`AnyBackbone`]: one front door to the DINOv3 families, chosen by the checkpoint's `config.json`.
//!
//! A Hugging Face folder says what it holds in `model_type`: `"dinov3_vit"` loads the ViT port
//! ([`super::vit`]), `"dinov3_convnext"` the ConvNeXt port ([`super::convnext`]); anything else is
//! an error naming the file, the `model_type` found and the supported ones. Both families take the
//! same preprocessed pixels ([`super::Dinov3ImageProcessor`]: the hub's ConvNeXt checkpoints ship
//! `DINOv3ViTImageProcessorFast` settings) and return HF's `last_hidden_state` `[N, T, C]`:
//! prefix tokens (ViT: CLS and registers; ConvNeXt: the pooled token), then the grid row-major.

use std::path::Path;

use burn::prelude::*;

use super::config::MODEL_TYPE as VIT_MODEL_TYPE;
use super::convnext::Dinov3ConvNext;
use super::convnext_config::CONVNEXT_MODEL_TYPE;
use super::vit::Dinov3;
use super::BackboneError;

/// A loaded DINOv3 backbone of either family.
// One value per loaded model: the variants' size difference (a few hundred bytes) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AnyBackbone<B: Backend> {
    /// `DINOv3ViTModel` (`model_type` `"dinov3_vit"`).
    Vit(Dinov3<B>),
    /// `DINOv3ConvNextModel` (`model_type` `"dinov3_convnext"`).
    ConvNext(Dinov3ConvNext<B>),
}

/// The top-level `model_type` of a `config.json` (`None` when absent or not a string).
pub fn read_model_type(config_path: &Path) -> Result<Option<String>, BackboneError> {
    let text =
        std::fs::read_to_string(config_path).map_err(|e| BackboneError::Io { path: config_path.into(), source: e })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| BackboneError::Config(format!("invalid JSON: {e}")).in_file(config_path))?;
    Ok(value.get("model_type").and_then(|v| v.as_str()).map(str::to_string))
}

impl<B: Backend> AnyBackbone<B> {
    /// Loads the backbone of a Hugging Face model folder (`config.json` plus `model.safetensors` or
    /// a sharded index; a `.safetensors` / index file with `config.json` beside it also works),
    /// choosing the family from `config.json`'s `model_type`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, BackboneError> {
        let config = super::loader::model_folder(dir).join("config.json");
        match read_model_type(&config)?.as_deref() {
            Some(VIT_MODEL_TYPE) => super::pretrained::load_pretrained(dir, device).map(Self::Vit),
            Some(CONVNEXT_MODEL_TYPE) => super::convnext_pretrained::load_pretrained(dir, device).map(Self::ConvNext),
            other => {
                let found = other.map_or_else(|| "missing".to_string(), |t| format!("\"{t}\""));
                Err(BackboneError::UnsupportedModelType { found }.in_file(&config))
            }
        }
    }

    /// `last_hidden_state`: prefix tokens, then the grid row-major.
    ///
    /// # Shapes
    /// - `pixel_values`: `[N, 3, H, W]`, `H` and `W` multiples of [`AnyBackbone::stride`]
    /// - output: `[N, num_prefix_tokens + gh·gw, hidden_size]` with `(gh, gw) = grid(H, W)`
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 3> {
        match self {
            Self::Vit(m) => m.forward(pixel_values),
            Self::ConvNext(m) => m.forward(pixel_values),
        }
    }

    /// Token width `C`.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Vit(m) => m.hidden_size(),
            Self::ConvNext(m) => m.hidden_size(),
        }
    }

    /// Tokens before the grid: ViT 1 + registers (CLS, registers); ConvNeXt 1 (the pooled token).
    pub fn num_prefix_tokens(&self) -> usize {
        match self {
            Self::Vit(m) => m.num_prefix_tokens(),
            Self::ConvNext(_) => 1,
        }
    }

    /// Token grid `(gh, gw)` for an `h × w` input (ViT: `h/16, w/16`; ConvNeXt: `h/32, w/32`, each
    /// division floored).
    pub fn grid(&self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Self::Vit(m) => (h / m.patch_size, w / m.patch_size),
            Self::ConvNext(m) => m.grid(h, w),
        }
    }

    /// Pixels per token side: the ViT's patch size (16), the ConvNeXt's total stride (32).
    pub fn stride(&self) -> usize {
        match self {
            Self::Vit(m) => m.patch_size,
            Self::ConvNext(m) => m.stages.iter().map(|s| s.conv.patch_size).product(),
        }
    }

    /// The family's `model_type`: `"dinov3_vit"` or `"dinov3_convnext"`.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Vit(_) => VIT_MODEL_TYPE,
            Self::ConvNext(_) => CONVNEXT_MODEL_TYPE,
        }
    }
}
