//! Configuration of the DINOv3 ConvNeXt backbone, read straight from a Hugging Face `config.json`.
//!
//! Matches `DINOv3ConvNextConfig` of transformers 5.24.0
//! (`models/dinov3_convnext/configuration_dinov3_convnext.py`): field names are the HF ones and a
//! field missing from the JSON (or `null`, for the two lists) takes the HF default, which is
//! ConvNeXt-Tiny. Training-only and backbone-API fields (`drop_path_rate`, `initializer_range`,
//! `out_features`, `out_indices`, `stage_names`) are accepted and ignored: this port is inference-only.

use serde::{Deserialize, Deserializer, Serialize};

use super::config::{parse_config_of_type, read_config_file, Activation};
use super::BackboneError;

/// The `model_type` of a DINOv3 ConvNeXt `config.json`.
pub const CONVNEXT_MODEL_TYPE: &str = "dinov3_convnext";

/// Side of the stem's non-overlapping patches (`Conv2d(C, C₀, kernel 4, stride 4)`).
pub const STEM_PATCH: usize = 4;
/// Side of each later stage's downsampling patches (`Conv2d(Cᵢ₋₁, Cᵢ, kernel 2, stride 2)`).
pub const DOWNSAMPLE_PATCH: usize = 2;
/// Side of the depthwise convolution of every block (padding 3 keeps the grid size).
pub const DEPTHWISE_KERNEL: usize = 7;

/// Hyperparameters of a DINOv3 ConvNeXt (`DINOv3ConvNextConfig`).
///
/// The `Default` is transformers' `DINOv3ConvNextConfig()`, i.e. [`Dinov3ConvNextConfig::convnext_tiny`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dinov3ConvNextConfig {
    /// Always `"dinov3_convnext"`; [`Dinov3ConvNextConfig::from_json_str`] rejects anything else.
    pub model_type: Option<String>,
    /// Input channels.
    pub num_channels: usize,
    /// Channel width of each stage; the last one is the token width `D`.
    #[serde(deserialize_with = "null_as_default_sizes")]
    pub hidden_sizes: Vec<usize>,
    /// Number of blocks in each stage.
    #[serde(deserialize_with = "null_as_default_depths")]
    pub depths: Vec<usize>,
    /// Block activation: `"gelu"` (exact erf) or `"silu"`/`"swish"`.
    pub hidden_act: String,
    /// Epsilon of every LayerNorm (the stem's, the downsampling ones, the blocks' and the final one).
    pub layer_norm_eps: f64,
    /// Initial layer scale `gamma` (only used by [`Dinov3ConvNextConfig::init`]; checkpoints carry their own).
    pub layer_scale_init_value: f64,
    /// Training image size `int | [h, w]` (informational: any input size works).
    #[serde(deserialize_with = "int_or_pair")]
    pub image_size: [usize; 2],
}

impl Default for Dinov3ConvNextConfig {
    fn default() -> Self {
        Self {
            model_type: Some(CONVNEXT_MODEL_TYPE.to_string()),
            num_channels: 3,
            hidden_sizes: vec![96, 192, 384, 768],
            depths: vec![3, 3, 9, 3],
            hidden_act: "gelu".to_string(),
            layer_norm_eps: 1e-6,
            layer_scale_init_value: 1e-6,
            image_size: [224, 224],
        }
    }
}

impl burn::config::Config for Dinov3ConvNextConfig {}

/// HF replaces `hidden_sizes: null` by its default in `__post_init__`.
fn null_as_default_sizes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<usize>, D::Error> {
    Ok(Option::deserialize(deserializer)?.unwrap_or_else(|| Dinov3ConvNextConfig::default().hidden_sizes))
}

/// HF replaces `depths: null` by its default in `__post_init__`.
fn null_as_default_depths<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<usize>, D::Error> {
    Ok(Option::deserialize(deserializer)?.unwrap_or_else(|| Dinov3ConvNextConfig::default().depths))
}

/// `image_size` is `int | [h, w]` in HF.
fn int_or_pair<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[usize; 2], D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrPair {
        Int(usize),
        Pair([usize; 2]),
    }
    Ok(match IntOrPair::deserialize(deserializer)? {
        IntOrPair::Int(v) => [v, v],
        IntOrPair::Pair(pair) => pair,
    })
}

impl Dinov3ConvNextConfig {
    /// `facebook/dinov3-convnext-tiny-pretrain-lvd1689m`: depths [3, 3, 9, 3], widths [96, 192, 384, 768].
    pub fn convnext_tiny() -> Self {
        Self::default()
    }

    /// `facebook/dinov3-convnext-small-pretrain-lvd1689m`: depths [3, 3, 27, 3], widths [96, 192, 384, 768].
    pub fn convnext_small() -> Self {
        Self { depths: vec![3, 3, 27, 3], ..Self::default() }
    }

    /// `facebook/dinov3-convnext-base-pretrain-lvd1689m`: depths [3, 3, 27, 3], widths [128, 256, 512, 1024].
    pub fn convnext_base() -> Self {
        Self { depths: vec![3, 3, 27, 3], hidden_sizes: vec![128, 256, 512, 1024], ..Self::default() }
    }

    /// `facebook/dinov3-convnext-large-pretrain-lvd1689m`: depths [3, 3, 27, 3], widths [192, 384, 768, 1536].
    pub fn convnext_large() -> Self {
        Self { depths: vec![3, 3, 27, 3], hidden_sizes: vec![192, 384, 768, 1536], ..Self::default() }
    }

    /// Parses a `config.json`, checking first that it describes a DINOv3 ConvNeXt (`model_type`).
    pub fn from_json_str(text: &str) -> Result<Self, BackboneError> {
        let config: Self =
            parse_config_of_type(text, CONVNEXT_MODEL_TYPE, |found| BackboneError::NotDinov3ConvNext { found })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a `config.json` file.
    pub fn from_json_file(path: &std::path::Path) -> Result<Self, BackboneError> {
        read_config_file(path, Self::from_json_str)
    }

    /// Checks the hyperparameters this port relies on.
    pub fn validate(&self) -> Result<(), BackboneError> {
        let bad = |m: String| Err(BackboneError::Config(m));
        if self.hidden_sizes.is_empty() || self.hidden_sizes.len() != self.depths.len() {
            return bad(format!(
                "hidden_sizes {:?} and depths {:?} must be non-empty and of the same length",
                self.hidden_sizes, self.depths
            ));
        }
        if self.num_channels == 0 || self.hidden_sizes.contains(&0) {
            return bad(format!(
                "zero width: num_channels {}, hidden_sizes {:?}",
                self.num_channels, self.hidden_sizes
            ));
        }
        self.activation().map(|_| ())
    }

    /// Number of stages.
    pub fn num_stages(&self) -> usize {
        self.hidden_sizes.len()
    }

    /// Token width `D`: the last stage's width.
    pub fn hidden_size(&self) -> usize {
        self.hidden_sizes.last().copied().unwrap_or(0)
    }

    /// Pixels per token side when the input is a multiple of it: 4 · 2^(stages − 1) (32 for 4 stages).
    pub fn total_stride(&self) -> usize {
        STEM_PATCH * DOWNSAMPLE_PATCH.pow(self.num_stages().saturating_sub(1) as u32)
    }

    /// Token grid `(gh, gw)` for an `h × w` input: each strided convolution floors, as in PyTorch.
    pub fn grid(&self, h: usize, w: usize) -> (usize, usize) {
        let down = |n: usize| (1..self.num_stages()).fold(n / STEM_PATCH, |n, _| n / DOWNSAMPLE_PATCH);
        (down(h), down(w))
    }

    /// The activation named by `hidden_act`.
    pub fn activation(&self) -> Result<Activation, BackboneError> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(BackboneError::Config(format!(
                "hidden_act `{other}` is not supported (expected \"gelu\", \"silu\" or \"swish\")"
            ))),
        }
    }
}
