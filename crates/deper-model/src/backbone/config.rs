//! Configuration of the DINOv3 ViT backbone, read straight from a Hugging Face `config.json`.
//!
//! Matches `DINOv3ViTConfig` of transformers 5.24.0 (`models/dinov3_vit/configuration_dinov3_vit.py`):
//! field names are the HF ones and every field missing from the JSON takes the HF default, so
//! `serde_json::from_str::<Dinov3Config>(config_json)` reads a hub config as transformers does.
//! Training-only fields (`drop_path_rate`, `pos_embed_*`, `attention_dropout`, backbone stage
//! options) are accepted and ignored: this port is inference-only.

use serde::{Deserialize, Deserializer, Serialize};

use super::BackboneError;

/// The `model_type` of a DINOv3 ViT `config.json`.
pub const MODEL_TYPE: &str = "dinov3_vit";

/// Hyperparameters of a DINOv3 ViT (`DINOv3ViTConfig`).
///
/// The `Default` is transformers' `DINOv3ViTConfig()` (a ViT-S/16 without registers); use the
/// presets [`Dinov3Config::vits16`] and [`Dinov3Config::vitb16`] for the released checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dinov3Config {
    /// Always `"dinov3_vit"`; [`Dinov3Config::from_json_str`] rejects anything else.
    pub model_type: Option<String>,
    /// Token width `D`.
    pub hidden_size: usize,
    /// Hidden width of the MLP.
    pub intermediate_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads; `head_dim = hidden_size / num_attention_heads`.
    pub num_attention_heads: usize,
    /// MLP activation: `"gelu"` (exact erf) or `"silu"`/`"swish"`.
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// RoPE base period.
    pub rope_theta: f64,
    /// Training image size (informational: RoPE follows the actual input size).
    #[serde(deserialize_with = "square")]
    pub image_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Patch side (square patches).
    #[serde(deserialize_with = "square")]
    pub patch_size: usize,
    /// Bias on `q_proj`.
    pub query_bias: bool,
    /// Bias on `k_proj` (false in every released checkpoint).
    pub key_bias: bool,
    /// Bias on `v_proj`.
    pub value_bias: bool,
    /// Bias on `o_proj`.
    pub proj_bias: bool,
    /// Biases in the MLP.
    pub mlp_bias: bool,
    /// Initial LayerScale value (only used by [`Dinov3Config::init`]; checkpoints carry their own).
    pub layerscale_value: f64,
    /// SwiGLU-style MLP `down(act(gate(x)) * up(x))` instead of `down(act(up(x)))`.
    pub use_gated_mlp: bool,
    /// Register tokens between CLS and the patches.
    pub num_register_tokens: usize,
}

impl Default for Dinov3Config {
    fn default() -> Self {
        Self {
            model_type: Some(MODEL_TYPE.to_string()),
            hidden_size: 384,
            intermediate_size: 1536,
            num_hidden_layers: 12,
            num_attention_heads: 6,
            hidden_act: "gelu".to_string(),
            layer_norm_eps: 1e-5,
            rope_theta: 100.0,
            image_size: 224,
            num_channels: 3,
            patch_size: 16,
            query_bias: true,
            key_bias: false,
            value_bias: true,
            proj_bias: true,
            mlp_bias: true,
            layerscale_value: 1.0,
            use_gated_mlp: false,
            num_register_tokens: 0,
        }
    }
}

impl burn::config::Config for Dinov3Config {}

/// `image_size` / `patch_size` are `int | [h, w]` in HF; this port supports square values only.
/// Parses `config.json` text into `T` once its `model_type` is `expected`; `wrong` names what was
/// found instead (both families share this check, so another family is a clear error).
pub(super) fn parse_config_of_type<T: serde::de::DeserializeOwned>(
    text: &str,
    expected: &str,
    wrong: impl FnOnce(String) -> BackboneError,
) -> Result<T, BackboneError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| BackboneError::Config(format!("invalid JSON: {e}")))?;
    let found = value.get("model_type").map(|v| v.to_string()).unwrap_or_else(|| "no `model_type`".to_string());
    if value.get("model_type").and_then(|v| v.as_str()) != Some(expected) {
        return Err(wrong(found));
    }
    serde_json::from_value(value).map_err(|e| BackboneError::Config(e.to_string()))
}

/// Reads `path` and parses it with `parse`; errors name the file.
pub(super) fn read_config_file<T>(
    path: &std::path::Path,
    parse: impl FnOnce(&str) -> Result<T, BackboneError>,
) -> Result<T, BackboneError> {
    let text = std::fs::read_to_string(path).map_err(|e| BackboneError::Io { path: path.into(), source: e })?;
    parse(&text).map_err(|e| e.in_file(path))
}

fn square<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrPair {
        Int(usize),
        Pair([usize; 2]),
    }
    match IntOrPair::deserialize(deserializer)? {
        IntOrPair::Int(v) => Ok(v),
        IntOrPair::Pair([h, w]) if h == w => Ok(h),
        IntOrPair::Pair([h, w]) => {
            Err(serde::de::Error::custom(format!("non-square size [{h}, {w}] is not supported by this port")))
        }
    }
}

/// The MLP activation named by `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x·Φ(x)` with erf (`"gelu"`).
    Gelu,
    /// SiLU / swish, `x·σ(x)` (`"silu"`, `"swish"`).
    Silu,
}

impl Dinov3Config {
    /// `facebook/dinov3-vits16-pretrain-lvd1689m`: ViT-S/16, 4 registers.
    pub fn vits16() -> Self {
        Self { num_register_tokens: 4, ..Self::default() }
    }

    /// `facebook/dinov3-vitb16-pretrain-lvd1689m`: ViT-B/16, 4 registers.
    pub fn vitb16() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_attention_heads: 12,
            num_register_tokens: 4,
            ..Self::default()
        }
    }

    /// Parses a `config.json`, checking first that it describes a DINOv3 ViT (`model_type`).
    pub fn from_json_str(text: &str) -> Result<Self, BackboneError> {
        let config: Self = parse_config_of_type(text, MODEL_TYPE, |found| BackboneError::NotDinov3 { found })?;
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
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.head_dim() % 4 != 0 {
            return bad(format!("head_dim {} must be a multiple of 4 for the 2-D RoPE", self.head_dim()));
        }
        if self.patch_size == 0 {
            return bad("patch_size is 0".to_string());
        }
        self.activation().map(|_| ())
    }

    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Number of tokens before the patches: CLS plus the registers.
    pub fn num_prefix_tokens(&self) -> usize {
        1 + self.num_register_tokens
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
