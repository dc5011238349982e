//! Idefics3 / SmolVLM hyperparameters, read from a Hugging Face `config.json`.
//!
//! The file is nested in every layout seen: top-level `model_type: idefics3`, `scale_factor`,
//! `image_token_id`, `tie_word_embeddings`; a `vision_config` (SigLIP-like, `idefics3_vision`) and a
//! `text_config` (Llama). Fields missing from a sub-config take transformers' defaults (those of
//! `Idefics3VisionConfig`, and `LlamaConfig` with `rms_norm_eps` 1e-5 as `Idefics3Config` sets it). The
//! rotary base is `text_config.rope_parameters.rope_theta` (transformers 5.x) or `text_config.rope_theta`
//! (hub files written by 4.x); only the default (unscaled) rotary type is supported.
//!
//! No presets: SmolVLM checkpoints ship a complete `config.json`, which is what is read.
//! Reference: transformers `models/idefics3/configuration_idefics3.py`, `models/llama/configuration_llama.py`.

use burn::config::Config;
use serde_json::Value;
use std::path::Path;

use crate::decoder::TextConfig;
use crate::VlmError;

/// The SigLIP-like vision encoder.
#[derive(Config, Debug, PartialEq)]
pub struct Idefics3VisionConfig {
    #[config(default = 1152)]
    pub hidden_size: usize,
    #[config(default = 3072)]
    pub intermediate_size: usize,
    #[config(default = 12)]
    pub num_hidden_layers: usize,
    #[config(default = 16)]
    pub num_attention_heads: usize,
    #[config(default = 3)]
    pub num_channels: usize,
    /// Side of the square tile the position embeddings were trained for.
    #[config(default = 224)]
    pub image_size: usize,
    #[config(default = 32)]
    pub patch_size: usize,
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
}

impl Idefics3VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// Patches along one side of a full tile (`image_size / patch_size`).
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Width of one flattened patch: `channels · patch²`.
    pub fn patch_dim(&self) -> usize {
        self.num_channels * self.patch_size * self.patch_size
    }
}

/// The Llama language model.
#[derive(Config, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    #[config(default = 2048)]
    pub max_position_embeddings: usize,
    #[config(default = 1e-5)]
    pub rms_norm_eps: f64,
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// No `lm_head.weight`: the head is `embed_tokens.weight` transposed.
    #[config(default = false)]
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

/// A whole Idefics3 (`Idefics3ForConditionalGeneration`).
#[derive(Config, Debug, PartialEq)]
pub struct Idefics3Config {
    pub vision: Idefics3VisionConfig,
    pub text: LlamaConfig,
    /// Pixel-shuffle factor of the connector: `scale²` patches become one image token.
    #[config(default = 2)]
    pub scale_factor: usize,
    pub image_token_id: u32,
}

impl Idefics3Config {
    /// The Llama decoder as the shared decoder's config (1-D RoPE as M-RoPE, see `llama_rope_section`).
    pub fn text_config(&self) -> TextConfig {
        let t = &self.text;
        TextConfig {
            vocab_size: t.vocab_size,
            hidden_size: t.hidden_size,
            intermediate_size: t.intermediate_size,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            num_key_value_heads: t.num_key_value_heads,
            max_position_embeddings: t.max_position_embeddings,
            rms_norm_eps: t.rms_norm_eps,
            rope_theta: t.rope_theta,
            mrope_section: llama_rope_section(t.head_dim),
            tie_word_embeddings: t.tie_word_embeddings,
        }
    }

    /// `<image>` tokens per tile: `(image_size / patch)² / scale²`.
    pub fn image_seq_len(&self) -> usize {
        let side = self.vision.patches_per_side();
        side * side / (self.scale_factor * self.scale_factor)
    }

    /// Reads `config.json` (a file, or a model folder holding one).
    pub fn from_path(path: &Path) -> Result<Self, VlmError> {
        let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).map_err(|e| VlmError::Io { path: file.clone(), source: e })?;
        Self::from_json(&text).map_err(|e| match e {
            VlmError::Config(message) => VlmError::Config(format!("{}: {message}", file.display())),
            other => other,
        })
    }

    /// Parses the config (see the module docs).
    pub fn from_json(text: &str) -> Result<Self, VlmError> {
        let root: Value = serde_json::from_str(text).map_err(|e| VlmError::Config(format!("not JSON: {e}")))?;
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("<missing>");
        if model_type != "idefics3" {
            return Err(VlmError::Config(format!(
                "model_type is `{model_type}`, expected `idefics3` (architectures: {})",
                root.get("architectures").map(Value::to_string).unwrap_or_else(|| "<missing>".into())
            )));
        }
        let vision_root = root.get("vision_config").unwrap_or(&Value::Null);
        let text_root = root.get("text_config").ok_or_else(|| VlmError::Config("no `text_config`".into()))?;
        let uint = |obj: &Value, section: &str, key: &str| -> Result<Option<usize>, VlmError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|v| Some(v as usize))
                    .ok_or_else(|| VlmError::Config(format!("`{section}.{key}` is not a non-negative integer: {v}"))),
            }
        };
        let required = |obj: &Value, section: &str, key: &str| -> Result<usize, VlmError> {
            uint(obj, section, key)?.ok_or_else(|| VlmError::Config(format!("missing `{section}.{key}`")))
        };
        let float = |obj: &Value, key: &str| obj.get(key).and_then(Value::as_f64);
        let id = |obj: &Value, key: &str| obj.get(key).and_then(Value::as_u64).map(|v| v as u32);

        let v = "vision_config";
        let d = Idefics3VisionConfig::new();
        let vision = Idefics3VisionConfig {
            hidden_size: uint(vision_root, v, "hidden_size")?.unwrap_or(d.hidden_size),
            intermediate_size: uint(vision_root, v, "intermediate_size")?.unwrap_or(d.intermediate_size),
            num_hidden_layers: uint(vision_root, v, "num_hidden_layers")?.unwrap_or(d.num_hidden_layers),
            num_attention_heads: uint(vision_root, v, "num_attention_heads")?.unwrap_or(d.num_attention_heads),
            num_channels: uint(vision_root, v, "num_channels")?.unwrap_or(d.num_channels),
            image_size: uint(vision_root, v, "image_size")?.unwrap_or(d.image_size),
            patch_size: uint(vision_root, v, "patch_size")?.unwrap_or(d.patch_size),
            layer_norm_eps: float(vision_root, "layer_norm_eps").unwrap_or(d.layer_norm_eps),
        };
        let act = vision_root.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu_pytorch_tanh");
        if act != "gelu_pytorch_tanh" && act != "gelu_tanh" {
            return Err(VlmError::Config(format!(
                "vision_config.hidden_act `{act}` is not supported (gelu_pytorch_tanh)"
            )));
        }
        if vision.num_attention_heads == 0
            || vision.hidden_size % vision.num_attention_heads != 0
            || vision.patch_size == 0
            || vision.image_size % vision.patch_size != 0
        {
            return Err(VlmError::Config(format!(
                "vision_config: hidden_size {} / heads {} or image_size {} / patch_size {} do not divide",
                vision.hidden_size, vision.num_attention_heads, vision.image_size, vision.patch_size
            )));
        }

        let t = "text_config";
        let text_type = text_root.get("model_type").and_then(Value::as_str).unwrap_or("llama");
        if text_type != "llama" {
            return Err(VlmError::Config(format!("text_config.model_type `{text_type}` is not supported (llama)")));
        }
        let text_act = text_root.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if text_act != "silu" {
            return Err(VlmError::Config(format!("text_config.hidden_act `{text_act}` is not supported (silu)")));
        }
        for key in ["attention_bias", "mlp_bias"] {
            if text_root.get(key).and_then(Value::as_bool) == Some(true) {
                return Err(VlmError::Config(format!("text_config.{key} = true is not supported")));
            }
        }
        let hidden_size = required(text_root, t, "hidden_size")?;
        let heads = required(text_root, t, "num_attention_heads")?;
        if heads == 0 || hidden_size % heads != 0 {
            return Err(VlmError::Config(format!(
                "text_config: hidden_size {hidden_size} / heads {heads} do not divide"
            )));
        }
        let kv_heads = uint(text_root, t, "num_key_value_heads")?.unwrap_or(heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(VlmError::Config(format!("text_config: heads {heads} / kv heads {kv_heads} do not divide")));
        }
        let text = LlamaConfig {
            vocab_size: required(text_root, t, "vocab_size")?,
            hidden_size,
            intermediate_size: required(text_root, t, "intermediate_size")?,
            num_hidden_layers: required(text_root, t, "num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim: uint(text_root, t, "head_dim")?.unwrap_or(hidden_size / heads),
            max_position_embeddings: uint(text_root, t, "max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: float(text_root, "rms_norm_eps").unwrap_or(1e-5),
            rope_theta: rope_theta(text_root)?,
            tie_word_embeddings: root
                .get("tie_word_embeddings")
                .or_else(|| text_root.get("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            bos_token_id: id(text_root, "bos_token_id").or_else(|| id(&root, "bos_token_id")),
            eos_token_id: id(text_root, "eos_token_id").or_else(|| id(&root, "eos_token_id")),
        };
        if text.head_dim % 2 != 0 {
            return Err(VlmError::Config(format!("text_config.head_dim {} must be even (rotary)", text.head_dim)));
        }
        let scale_factor = uint(&root, "config", "scale_factor")?.unwrap_or(2);
        let side = vision.patches_per_side();
        if scale_factor == 0 || side % scale_factor != 0 {
            return Err(VlmError::Config(format!(
                "scale_factor {scale_factor} does not divide the {side} patches per tile side"
            )));
        }
        let image_token_id = id(&root, "image_token_id").unwrap_or(128257);
        Ok(Self { vision, text, scale_factor, image_token_id })
    }
}

/// The rotary base; errors on scaled rotary types (llama3, linear, dynamic, yarn…), which are not
/// implemented.
fn rope_theta(text_root: &Value) -> Result<f64, VlmError> {
    let params = text_root.get("rope_parameters").filter(|p| p.is_object());
    let scaling = text_root.get("rope_scaling").filter(|p| p.is_object());
    for p in [params, scaling].into_iter().flatten() {
        let kind = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str).unwrap_or("default");
        if kind != "default" {
            return Err(VlmError::Config(format!("text_config rope type `{kind}` is not supported (default)")));
        }
    }
    Ok(params
        .and_then(|p| p.get("rope_theta"))
        .or_else(|| text_root.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(10000.0))
}

/// All rotary frequencies on the first M-RoPE component: with positions `(p, p, p)` this is 1-D RoPE.
pub(crate) fn llama_rope_section(head_dim: usize) -> Vec<usize> {
    vec![head_dim / 2, 0, 0]
}
