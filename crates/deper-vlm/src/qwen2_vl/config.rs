//! Qwen2-VL and Qwen2.5-VL hyperparameters, read from a Hugging Face `config.json`.
//!
//! The two families share the text model (Qwen2 with M-RoPE) and differ in the vision tower, recorded
//! as [`VisionKind`] (dispatch on `model_type`: `qwen2_vl` or `qwen2_5_vl`). Two layouts exist in the
//! wild for each and all are accepted:
//! - the flat hub layout of the released checkpoints (Qwen2-VL-2B/7B-Instruct, Qwen2.5-VL-3B/7B-Instruct):
//!   text fields at the top level, `rope_theta`, `rope_scaling {type: mrope, mrope_section}`, and a
//!   `vision_config` with hub names (`in_chans`; Qwen2-VL omits `hidden_act`, whose default is
//!   `quick_gelu`);
//! - the nested layout written by transformers 5.x: `text_config` with `rope_parameters {rope_theta,
//!   mrope_section}`, and a `vision_config` with `in_channels`.
//!
//! The vision field names differ between the families: Qwen2-VL has `embed_dim` (ViT width), `mlp_ratio`
//! and `hidden_size` (merger output); Qwen2.5-VL has `hidden_size` (ViT width), `intermediate_size`
//! (SwiGLU width), `out_hidden_size` (merger output), `window_size` (pixels), `fullatt_block_indexes` and
//! `tokens_per_second`. [`VisionConfig`] uses the Qwen2-VL names for the shared meaning.
//!
//! [`Qwen2VlConfig::from_json`] checks `model_type` first and names what it found when it is neither.
//! Reference: transformers `models/qwen2_vl/configuration_qwen2_vl.py`,
//! `models/qwen2_5_vl/configuration_qwen2_5_vl.py`.

use burn::config::Config;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

use crate::decoder::TextConfig;
use crate::VlmError;

/// Which vision tower: the only architectural difference between Qwen2-VL and Qwen2.5-VL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VisionKind {
    /// Qwen2-VL: LayerNorm, fc1 – QuickGELU – fc2 of width `embed_dim · mlp_ratio`, full attention in
    /// every block, LayerNorm in the merger.
    Qwen2Vl,
    /// Qwen2.5-VL: RMSNorm, SwiGLU with biases of width `intermediate_size`, window attention except in
    /// `fullatt_block_indexes`, RMSNorm in the merger.
    Qwen25Vl,
}

impl VisionKind {
    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Qwen2Vl => "qwen2_vl",
            Self::Qwen25Vl => "qwen2_5_vl",
        }
    }

    /// The transformers class name (`architectures` of `config.json`).
    pub fn architecture(self) -> &'static str {
        match self {
            Self::Qwen2Vl => "Qwen2VLForConditionalGeneration",
            Self::Qwen25Vl => "Qwen2_5_VLForConditionalGeneration",
        }
    }
}

/// The vision tower (ViT with 2-D RoPE and a 2×2 patch merger).
#[derive(Config, Debug, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    /// ViT width (Qwen2.5-VL's `vision_config.hidden_size`).
    pub embed_dim: usize,
    pub num_heads: usize,
    /// Output width of the merger (= the text hidden size; Qwen2.5-VL's `out_hidden_size`).
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
    #[config(default = "VisionKind::Qwen2Vl")]
    pub kind: VisionKind,
    /// SwiGLU width (Qwen2.5-VL only; Qwen2-VL's MLP is `embed_dim · mlp_ratio` wide).
    #[config(default = 0)]
    pub intermediate_size: usize,
    /// Attention window edge in pixels (Qwen2.5-VL only).
    #[config(default = 112)]
    pub window_size: usize,
    /// Blocks that attend over the whole image; the others attend within windows (Qwen2.5-VL only).
    #[config(default = "Vec::new()")]
    pub fullatt_block_indexes: Vec<usize>,
    /// Temporal position step per second of video (Qwen2.5-VL); unused for images, kept for export.
    #[config(default = 2)]
    pub tokens_per_second: usize,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }
    /// Width of a block's MLP hidden layer.
    pub fn mlp_dim(&self) -> usize {
        match self.kind {
            VisionKind::Qwen2Vl => self.embed_dim * self.mlp_ratio,
            VisionKind::Qwen25Vl => self.intermediate_size,
        }
    }
    /// Window edge in merged tokens (`window_size / spatial_merge_size / patch_size`), `None` without
    /// window attention (Qwen2-VL).
    pub fn window_tokens(&self) -> Option<usize> {
        match self.kind {
            VisionKind::Qwen2Vl => None,
            VisionKind::Qwen25Vl => Some(self.window_size / self.spatial_merge_size / self.patch_size),
        }
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

/// A whole Qwen2-VL (`Qwen2VLForConditionalGeneration`) or Qwen2.5-VL
/// (`Qwen2_5_VLForConditionalGeneration`); `vision.kind` tells which.
#[derive(Config, Debug, PartialEq)]
pub struct Qwen2VlConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub tokens: TokenIds,
}

impl Qwen2VlConfig {
    /// `qwen2_vl` or `qwen2_5_vl`.
    pub fn model_type(&self) -> &'static str {
        self.vision.kind.model_type()
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

    /// Parses either config layout (see the module docs).
    pub fn from_json(text: &str) -> Result<Self, VlmError> {
        let root: Value = serde_json::from_str(text).map_err(|e| VlmError::Config(format!("not JSON: {e}")))?;
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("<missing>");
        let kind = match model_type {
            "qwen2_vl" => VisionKind::Qwen2Vl,
            "qwen2_5_vl" => VisionKind::Qwen25Vl,
            _ => {
                return Err(VlmError::Config(format!(
                    "model_type is `{model_type}`, expected `qwen2_vl` or `qwen2_5_vl` (architectures: {})",
                    root.get("architectures").map(Value::to_string).unwrap_or_else(|| "<missing>".into())
                )))
            }
        };
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
            // transformers' defaults differ: Qwen2-VL ties, Qwen2.5-VL does not (the hub files say it).
            tie_word_embeddings: root
                .get("tie_word_embeddings")
                .or_else(|| text_root.get("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(kind == VisionKind::Qwen2Vl),
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

        let vision = match kind {
            VisionKind::Qwen2Vl => qwen2_vl_vision_config(vision_root)?,
            VisionKind::Qwen25Vl => qwen2_5_vl_vision_config(vision_root)?,
        };
        if vision.hidden_size != text.hidden_size {
            return Err(VlmError::Config(format!(
                "the vision merger output ({} in vision_config.{}) differs from the text hidden_size {}",
                vision.hidden_size,
                if kind == VisionKind::Qwen2Vl { "hidden_size" } else { "out_hidden_size" },
                text.hidden_size
            )));
        }
        // 2-D RoPE splits each head in four quarters (row/column × cos/sin halves).
        if vision.num_heads == 0 || vision.embed_dim % vision.num_heads != 0 || vision.head_dim() % 4 != 0 {
            return Err(VlmError::Config(format!(
                "vision width {} over {} heads must give a head_dim divisible by 4",
                vision.embed_dim, vision.num_heads
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

/// A usize field of a JSON object, or an error naming it.
fn usize_field(obj: &Value, key: &str) -> Result<usize, VlmError> {
    obj.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| VlmError::Config(format!("missing or non-integer `vision_config.{key}`")))
}

/// `rope_parameters.rope_theta` of a vision config (10000 when absent, as in transformers).
fn vision_rope_theta(vision_root: &Value) -> f64 {
    vision_root.get("rope_parameters").and_then(|p| p.get("rope_theta")).and_then(Value::as_f64).unwrap_or(10000.0)
}

fn vision_act_is(vision_root: &Value, default: &str, supported: &str) -> Result<(), VlmError> {
    let act = vision_root.get("hidden_act").and_then(Value::as_str).unwrap_or(default);
    if act != supported {
        return Err(VlmError::Config(format!("vision hidden_act `{act}` is not supported ({supported})")));
    }
    Ok(())
}

/// Qwen2-VL `vision_config`: `embed_dim`, `mlp_ratio`, `hidden_size` = merger output.
fn qwen2_vl_vision_config(v: &Value) -> Result<VisionConfig, VlmError> {
    vision_act_is(v, "quick_gelu", "quick_gelu")?;
    Ok(VisionConfig {
        depth: usize_field(v, "depth")?,
        embed_dim: usize_field(v, "embed_dim")?,
        num_heads: usize_field(v, "num_heads")?,
        hidden_size: usize_field(v, "hidden_size")?,
        mlp_ratio: usize_field(v, "mlp_ratio").unwrap_or(4),
        in_channels: usize_field(v, "in_channels").or_else(|_| usize_field(v, "in_chans")).unwrap_or(3),
        patch_size: usize_field(v, "patch_size").or_else(|_| usize_field(v, "spatial_patch_size"))?,
        temporal_patch_size: usize_field(v, "temporal_patch_size").unwrap_or(2),
        spatial_merge_size: usize_field(v, "spatial_merge_size").unwrap_or(2),
        rope_theta: vision_rope_theta(v),
        kind: VisionKind::Qwen2Vl,
        intermediate_size: 0,
        window_size: 112,
        fullatt_block_indexes: Vec::new(),
        tokens_per_second: 2,
    })
}

/// Qwen2.5-VL `vision_config`: `hidden_size` = ViT width, `intermediate_size`, `out_hidden_size` =
/// merger output, window settings. Absent fields take transformers' defaults.
fn qwen2_5_vl_vision_config(v: &Value) -> Result<VisionConfig, VlmError> {
    vision_act_is(v, "silu", "silu")?;
    let fullatt_block_indexes = match v.get("fullatt_block_indexes") {
        None => vec![7, 15, 23, 31],
        Some(list) => list
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| {
                VlmError::Config("`vision_config.fullatt_block_indexes` is not a list of integers".into())
            })?,
    };
    let config = VisionConfig {
        depth: usize_field(v, "depth")?,
        embed_dim: usize_field(v, "hidden_size")?,
        num_heads: usize_field(v, "num_heads")?,
        hidden_size: usize_field(v, "out_hidden_size")?,
        mlp_ratio: 4,
        in_channels: usize_field(v, "in_channels").or_else(|_| usize_field(v, "in_chans")).unwrap_or(3),
        patch_size: usize_field(v, "patch_size").or_else(|_| usize_field(v, "spatial_patch_size"))?,
        temporal_patch_size: usize_field(v, "temporal_patch_size").unwrap_or(2),
        spatial_merge_size: usize_field(v, "spatial_merge_size").unwrap_or(2),
        rope_theta: vision_rope_theta(v),
        kind: VisionKind::Qwen25Vl,
        intermediate_size: usize_field(v, "intermediate_size")?,
        window_size: usize_field(v, "window_size").unwrap_or(112),
        fullatt_block_indexes,
        tokens_per_second: usize_field(v, "tokens_per_second").unwrap_or(4),
    };
    if config.window_tokens() == Some(0) {
        return Err(VlmError::Config(format!(
            "vision_config.window_size {} is smaller than one merged token ({} px)",
            config.window_size,
            config.patch_size * config.spatial_merge_size
        )));
    }
    Ok(config)
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
        kind: VisionKind::Qwen2Vl,
        intermediate_size: 0,
        window_size: 112,
        fullatt_block_indexes: Vec::new(),
        tokens_per_second: 2,
    }
}

/// Qwen2.5-VL-3B(-Instruct), values of the hub `config.json` (tied head).
pub fn qwen2_5_vl_3b() -> Qwen2VlConfig {
    Qwen2VlConfig {
        text: TextConfig {
            vocab_size: 151936,
            hidden_size: 2048,
            intermediate_size: 11008,
            num_hidden_layers: 36,
            num_attention_heads: 16,
            num_key_value_heads: 2,
            max_position_embeddings: 128000,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            mrope_section: vec![16, 24, 24],
            tie_word_embeddings: true,
        },
        vision: qwen2_5_vl_vision(2048),
        tokens: qwen2_vl_tokens(),
    }
}

/// Qwen2.5-VL-7B(-Instruct), values of the hub `config.json` (untied head).
pub fn qwen2_5_vl_7b() -> Qwen2VlConfig {
    Qwen2VlConfig {
        text: TextConfig {
            vocab_size: 152064,
            hidden_size: 3584,
            intermediate_size: 18944,
            num_hidden_layers: 28,
            num_attention_heads: 28,
            num_key_value_heads: 4,
            max_position_embeddings: 128000,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            mrope_section: vec![16, 24, 24],
            tie_word_embeddings: false,
        },
        vision: qwen2_5_vl_vision(3584),
        tokens: qwen2_vl_tokens(),
    }
}

/// The Qwen2.5-VL vision tower (the same in 3B and 7B up to the merger output width).
fn qwen2_5_vl_vision(out_hidden_size: usize) -> VisionConfig {
    VisionConfig {
        depth: 32,
        embed_dim: 1280,
        num_heads: 16,
        hidden_size: out_hidden_size,
        mlp_ratio: 4,
        in_channels: 3,
        patch_size: 14,
        temporal_patch_size: 2,
        spatial_merge_size: 2,
        rope_theta: 10000.0,
        kind: VisionKind::Qwen25Vl,
        intermediate_size: 3420,
        window_size: 112,
        fullatt_block_indexes: vec![7, 15, 23, 31],
        tokens_per_second: 2,
    }
}

/// Token ids shared by Qwen2-VL and Qwen2.5-VL (the same tokenizer).
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
