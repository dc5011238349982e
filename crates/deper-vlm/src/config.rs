//! Qwen2-VL hyperparameters, read from a Hugging Face `config.json`.
//!
//! Two layouts exist in the wild and both are accepted:
//! - the flat hub layout of the released checkpoints (Qwen2-VL-2B/7B-Instruct): text fields at the top
//!   level, `rope_theta`, `rope_scaling {type: mrope, mrope_section}`, and a `vision_config` with hub names
//!   (`in_chans`, no `hidden_act`, whose default is `quick_gelu`);
//! - the nested layout written by transformers 5.x: `text_config` with `rope_parameters {rope_theta,
//!   mrope_section}`, and a `vision_config` with `in_channels`.
//!
//! [`Qwen2VlConfig::from_json`] checks `model_type` first and names what it found when it is not
//! `qwen2_vl`. Reference: transformers `models/qwen2_vl/configuration_qwen2_vl.py`.

use burn::config::Config;
use serde_json::Value;
use std::path::Path;

use crate::VlmError;

/// The Qwen2 language model.
#[derive(Config, Debug, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[config(default = 32768)]
    pub max_position_embeddings: usize,
    #[config(default = 1e-6)]
    pub rms_norm_eps: f64,
    #[config(default = 1_000_000.0)]
    pub rope_theta: f64,
    /// Frequencies per M-RoPE component (t, h, w); sums to `head_dim / 2`.
    pub mrope_section: Vec<usize>,
    /// No `lm_head.weight`: the head is `embed_tokens.weight` transposed.
    #[config(default = true)]
    pub tie_word_embeddings: bool,
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// The vision tower (ViT with 2-D RoPE and a 2×2 patch merger).
#[derive(Config, Debug, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub embed_dim: usize,
    pub num_heads: usize,
    /// Output width of the merger (= the text hidden size).
    pub hidden_size: usize,
    #[config(default = 4)]
    pub mlp_ratio: usize,
    #[config(default = 3)]
    pub in_channels: usize,
    #[config(default = 14)]
    pub patch_size: usize,
    #[config(default = 2)]
    pub temporal_patch_size: usize,
    #[config(default = 2)]
    pub spatial_merge_size: usize,
    #[config(default = 10000.0)]
    pub rope_theta: f64,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }
    /// Width of one `pixel_values` row: channels × temporal × patch × patch (1176 for Qwen2-VL).
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// Special token ids of the multimodal model.
#[derive(Config, Debug, PartialEq)]
pub struct TokenIds {
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

/// A whole Qwen2-VL (`Qwen2VLForConditionalGeneration`).
#[derive(Config, Debug, PartialEq)]
pub struct Qwen2VlConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub tokens: TokenIds,
}

impl Qwen2VlConfig {
    /// Reads `config.json` (a file, or a model folder holding one).
    pub fn from_path(path: &Path) -> Result<Self, VlmError> {
        let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).map_err(|e| VlmError::Io { path: file.clone(), source: e })?;
        Self::from_json(&text).map_err(|e| match e {
            VlmError::Config(message) => VlmError::Config(format!("{}: {message}", file.display())),
            other => other,
        })
    }

    /// Parses either config layout (see the module docs).
    pub fn from_json(text: &str) -> Result<Self, VlmError> {
        let root: Value = serde_json::from_str(text).map_err(|e| VlmError::Config(format!("not JSON: {e}")))?;
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("<missing>");
        if model_type != "qwen2_vl" {
            return Err(VlmError::Config(format!(
                "model_type is `{model_type}`, expected `qwen2_vl` (architectures: {})",
                root.get("architectures").map(Value::to_string).unwrap_or_else(|| "<missing>".into())
            )));
        }
        // Nested (transformers 5.x) keeps text fields under `text_config`; flat (hub) at the top.
        let text_root = root.get("text_config").unwrap_or(&root);
        let vision_root = root.get("vision_config").ok_or_else(|| VlmError::Config("no `vision_config`".into()))?;
        let field = |obj: &Value, key: &str| -> Result<usize, VlmError> {
            obj.get(key)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| VlmError::Config(format!("missing or non-integer `{key}`")))
        };
        let opt_f64 = |obj: &Value, key: &str| obj.get(key).and_then(Value::as_f64);
        let id = |obj: &Value, key: &str| obj.get(key).and_then(Value::as_u64).map(|v| v as u32);

        let (rope_theta, mrope_section) = rope_settings(&root, text_root)?;
        let text = TextConfig {
            vocab_size: field(text_root, "vocab_size")?,
            hidden_size: field(text_root, "hidden_size")?,
            intermediate_size: field(text_root, "intermediate_size")?,
            num_hidden_layers: field(text_root, "num_hidden_layers")?,
            num_attention_heads: field(text_root, "num_attention_heads")?,
            num_key_value_heads: field(text_root, "num_key_value_heads")
                .or_else(|_| field(text_root, "num_attention_heads"))?,
            max_position_embeddings: field(text_root, "max_position_embeddings").unwrap_or(32768),
            rms_norm_eps: opt_f64(text_root, "rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            mrope_section,
            tie_word_embeddings: root
                .get("tie_word_embeddings")
                .or_else(|| text_root.get("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(true),
        };
        if text.hidden_size % text.num_attention_heads != 0 || text.num_attention_heads % text.num_key_value_heads != 0
        {
            return Err(VlmError::Config(format!(
                "hidden_size {} / heads {} / kv heads {} do not divide",
                text.hidden_size, text.num_attention_heads, text.num_key_value_heads
            )));
        }
        if text.mrope_section.len() != 3 || text.mrope_section.iter().sum::<usize>() * 2 != text.head_dim() {
            return Err(VlmError::Config(format!(
                "mrope_section {:?} must have 3 entries summing to head_dim/2 = {}",
                text.mrope_section,
                text.head_dim() / 2
            )));
        }

        let act = vision_root.get("hidden_act").and_then(Value::as_str).unwrap_or("quick_gelu");
        if act != "quick_gelu" {
            return Err(VlmError::Config(format!("vision hidden_act `{act}` is not supported (quick_gelu)")));
        }
        let vision_theta = vision_root
            .get("rope_parameters")
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10000.0);
        let vision = VisionConfig {
            depth: field(vision_root, "depth")?,
            embed_dim: field(vision_root, "embed_dim")?,
            num_heads: field(vision_root, "num_heads")?,
            hidden_size: field(vision_root, "hidden_size")?,
            mlp_ratio: field(vision_root, "mlp_ratio").unwrap_or(4),
            in_channels: field(vision_root, "in_channels").or_else(|_| field(vision_root, "in_chans")).unwrap_or(3),
            patch_size: field(vision_root, "patch_size").or_else(|_| field(vision_root, "spatial_patch_size"))?,
            temporal_patch_size: field(vision_root, "temporal_patch_size").unwrap_or(2),
            spatial_merge_size: field(vision_root, "spatial_merge_size").unwrap_or(2),
            rope_theta: vision_theta,
        };
        if vision.hidden_size != text.hidden_size {
            return Err(VlmError::Config(format!(
                "vision_config.hidden_size {} differs from the text hidden_size {}",
                vision.hidden_size, text.hidden_size
            )));
        }
        let tokens = TokenIds {
            image_token_id: id(&root, "image_token_id").unwrap_or(151655),
            video_token_id: id(&root, "video_token_id").unwrap_or(151656),
            vision_start_token_id: id(&root, "vision_start_token_id").unwrap_or(151652),
            vision_end_token_id: id(&root, "vision_end_token_id").unwrap_or(151653),
            bos_token_id: id(text_root, "bos_token_id").or_else(|| id(&root, "bos_token_id")),
            eos_token_id: id(text_root, "eos_token_id").or_else(|| id(&root, "eos_token_id")),
        };
        Ok(Self { text, vision, tokens })
    }
}

/// `(rope_theta, mrope_section)` from `rope_parameters` (nested) or `rope_theta` + `rope_scaling` (flat).
fn rope_settings(root: &Value, text_root: &Value) -> Result<(f64, Vec<usize>), VlmError> {
    let section = |v: &Value| -> Option<Vec<usize>> {
        v.get("mrope_section")?.as_array()?.iter().map(|x| x.as_u64().map(|x| x as usize)).collect()
    };
    if let Some(params) = text_root.get("rope_parameters").filter(|p| p.is_object()) {
        let theta = params.get("rope_theta").and_then(Value::as_f64).unwrap_or(1_000_000.0);
        let sec = section(params).ok_or_else(|| VlmError::Config("rope_parameters has no mrope_section".into()))?;
        return Ok((theta, sec));
    }
    let theta = text_root.get("rope_theta").or_else(|| root.get("rope_theta")).and_then(Value::as_f64);
    let scaling = text_root.get("rope_scaling").or_else(|| root.get("rope_scaling")).filter(|s| s.is_object());
    let scaling = scaling.ok_or_else(|| VlmError::Config("no `rope_parameters` or `rope_scaling`".into()))?;
    let kind = scaling.get("type").or_else(|| scaling.get("rope_type")).and_then(Value::as_str).unwrap_or("mrope");
    if kind != "mrope" && kind != "default" {
        return Err(VlmError::Config(format!("rope_scaling type `{kind}` is not supported (mrope)")));
    }
    let sec = section(scaling).ok_or_else(|| VlmError::Config("rope_scaling has no mrope_section".into()))?;
    Ok((theta.unwrap_or(1_000_000.0), sec))
}

/// Qwen2-VL-2B(-Instruct), values of the hub `config.json`.
pub fn qwen2_vl_2b() -> Qwen2VlConfig {
    Qwen2VlConfig {
        text: TextConfig {
            vocab_size: 151936,
            hidden_size: 1536,
            intermediate_size: 8960,
            num_hidden_layers: 28,
            num_attention_heads: 12,
            num_key_value_heads: 2,
            max_position_embeddings: 32768,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            mrope_section: vec![16, 24, 24],
            tie_word_embeddings: true,
        },
        vision: qwen2_vl_vision(1536),
        tokens: qwen2_vl_tokens(),
    }
}

/// Qwen2-VL-7B(-Instruct), values of the hub `config.json` (untied head).
pub fn qwen2_vl_7b() -> Qwen2VlConfig {
    Qwen2VlConfig {
        text: TextConfig {
            vocab_size: 152064,
            hidden_size: 3584,
            intermediate_size: 18944,
            num_hidden_layers: 28,
            num_attention_heads: 28,
            num_key_value_heads: 4,
            max_position_embeddings: 32768,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            mrope_section: vec![16, 24, 24],
            tie_word_embeddings: false,
        },
        vision: qwen2_vl_vision(3584),
        tokens: qwen2_vl_tokens(),
    }
}

fn qwen2_vl_vision(hidden_size: usize) -> VisionConfig {
    VisionConfig {
        depth: 32,
        embed_dim: 1280,
        num_heads: 16,
        hidden_size,
        mlp_ratio: 4,
        in_channels: 3,
        patch_size: 14,
        temporal_patch_size: 2,
        spatial_merge_size: 2,
        rope_theta: 10000.0,
    }
}

fn qwen2_vl_tokens() -> TokenIds {
    TokenIds {
        image_token_id: 151655,
        video_token_id: 151656,
        vision_start_token_id: 151652,
        vision_end_token_id: 151653,
        bos_token_id: Some(151643),
        eos_token_id: Some(151645),
    }
}
