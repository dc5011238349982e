//! Saving a Qwen2-VL or Qwen2.5-VL in the Hugging Face layout (`save_pretrained`), the inverse of
//! [`super::pretrained`].
//!
//! Writes `config.json` in the flat hub layout (the one released checkpoints use), `model.safetensors`
//! with hub key names (PyTorch `[out, in]` Linear weights, the 5-D Conv3d patch embedding), and
//! `generation_config.json`. Tokenizer files are written by the caller (they come from elsewhere).
//! A model saved here loads with [`super::load_pretrained`] and with transformers'
//! `Qwen2VLForConditionalGeneration` / `Qwen2_5_VLForConditionalGeneration.from_pretrained`.
//!
//! Reference: transformers `PreTrainedModel.save_pretrained` and the hub layout of
//! `Qwen/Qwen2-VL-2B-Instruct`.

use burn::module::Param;
use burn::nn::{LayerNorm, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use deper_weights::{write_safetensors, TensorData};
use serde_json::{json, Value};
use std::path::Path;

use super::config::{Qwen2VlConfig, VisionConfig, VisionKind};
use super::model::Qwen2Vl;
use super::vision::{VisionMlp, VisionNorm};
use crate::{Result, VlmError};

/// `config.json` in the flat hub layout of the released checkpoints.
pub fn config_json(config: &Qwen2VlConfig) -> Value {
    let (t, v, k) = (&config.text, &config.vision, &config.tokens);
    json!({
        "architectures": [v.kind.architecture()],
        "model_type": v.kind.model_type(),
        "attention_dropout": 0.0,
        "bos_token_id": k.bos_token_id,
        "eos_token_id": k.eos_token_id,
        "vision_start_token_id": k.vision_start_token_id,
        "vision_end_token_id": k.vision_end_token_id,
        "image_token_id": k.image_token_id,
        "video_token_id": k.video_token_id,
        "hidden_act": "silu",
        "hidden_size": t.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": t.intermediate_size,
        "max_position_embeddings": t.max_position_embeddings,
        "max_window_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_hidden_layers": t.num_hidden_layers,
        "num_key_value_heads": t.num_key_value_heads,
        "rms_norm_eps": t.rms_norm_eps,
        "rope_theta": t.rope_theta,
        "rope_scaling": {"type": "mrope", "mrope_section": t.mrope_section},
        "sliding_window": t.max_position_embeddings,
        "use_sliding_window": false,
        "tie_word_embeddings": t.tie_word_embeddings,
        "torch_dtype": "float32",
        "use_cache": true,
        "vocab_size": t.vocab_size,
        "vision_config": vision_config_json(v),
    })
}

/// The hub `vision_config` of either family (their field names differ, see [`crate::config`]).
fn vision_config_json(v: &VisionConfig) -> Value {
    match v.kind {
        VisionKind::Qwen2Vl => json!({
            "depth": v.depth,
            "embed_dim": v.embed_dim,
            "mlp_ratio": v.mlp_ratio,
            "num_heads": v.num_heads,
            "in_chans": v.in_channels,
            "hidden_size": v.hidden_size,
            "patch_size": v.patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "spatial_patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size,
        }),
        VisionKind::Qwen25Vl => json!({
            "depth": v.depth,
            "hidden_act": "silu",
            "hidden_size": v.embed_dim,
            "intermediate_size": v.intermediate_size,
            "num_heads": v.num_heads,
            "in_chans": v.in_channels,
            "out_hidden_size": v.hidden_size,
            "patch_size": v.patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "spatial_patch_size": v.patch_size,
            "window_size": v.window_size,
            "fullatt_block_indexes": v.fullatt_block_indexes,
            "tokens_per_second": v.tokens_per_second,
            "temporal_patch_size": v.temporal_patch_size,
        }),
    }
}

/// Tensors to write: hub key, row-major values, shape.
#[derive(Default)]
struct Collector {
    tensors: Vec<(String, Vec<f32>, Vec<usize>)>,
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<(Vec<f32>, Vec<usize>)> {
    let dims = t.dims().to_vec();
    let v = t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| VlmError::Input(format!("{e:?}")))?;
    Ok((v, dims))
}

impl Collector {
    fn tensor<B: Backend, const D: usize>(&mut self, key: String, t: Tensor<B, D>) -> Result<()> {
        let (v, dims) = values(t)?;
        self.tensors.push((key, v, dims));
        Ok(())
    }

    fn param<B: Backend, const D: usize>(&mut self, key: String, p: &Param<Tensor<B, D>>) -> Result<()> {
        self.tensor(key, p.val())
    }

    /// burn `[in, out]` → PyTorch `[out, in]`.
    fn linear<B: Backend>(&mut self, prefix: &str, l: &Linear<B>) -> Result<()> {
        self.tensor(format!("{prefix}.weight"), l.weight.val().transpose())?;
        if let Some(b) = &l.bias {
            self.param(format!("{prefix}.bias"), b)?;
        }
        Ok(())
    }

    fn layer_norm<B: Backend>(&mut self, prefix: &str, n: &LayerNorm<B>) -> Result<()> {
        self.param(format!("{prefix}.weight"), &n.gamma)?;
        if let Some(b) = &n.beta {
            self.param(format!("{prefix}.bias"), b)?;
        }
        Ok(())
    }

    fn rms_norm<B: Backend>(&mut self, prefix: &str, n: &RmsNorm<B>) -> Result<()> {
        self.param(format!("{prefix}.weight"), &n.gamma)
    }

    fn vision_norm<B: Backend>(&mut self, prefix: &str, n: &VisionNorm<B>) -> Result<()> {
        match n {
            VisionNorm::Layer(n) => self.layer_norm(prefix, n),
            VisionNorm::Rms(n) => self.rms_norm(prefix, n),
        }
    }
}

/// Writes `config.json`, `generation_config.json` and `model.safetensors` of `model` into `dir`.
///
/// A model whose weights went into CPU panels ([`crate::decoder::TextModel::pack_for_cpu`], done by
/// [`crate::Vlm::load`]) no longer holds its row-major projections and is refused.
pub fn save_pretrained<B: Backend>(model: &Qwen2Vl<B>, config: &Qwen2VlConfig, dir: &Path) -> Result<()> {
    if model.model.layers.iter().any(|l| l.cpu_panels.is_some()) {
        return Err(VlmError::Input(
            "the model's weights are packed for CPU inference (Vlm::load); save one loaded with load_pretrained".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| VlmError::Io { path: dir.into(), source: e })?;
    let mut c = Collector::default();
    let vc = &config.vision;
    let vis = &model.visual;
    // The patch embedding is a Linear over flattened (C, T, P, P) rows; on disk it is a Conv3d kernel.
    let conv = vis.patch_embed.weight.val().transpose().reshape([
        vc.embed_dim,
        vc.in_channels,
        vc.temporal_patch_size,
        vc.patch_size,
        vc.patch_size,
    ]);
    c.tensor("visual.patch_embed.proj.weight".into(), conv)?;
    for (j, b) in vis.blocks.iter().enumerate() {
        let p = format!("visual.blocks.{j}");
        c.vision_norm(&format!("{p}.norm1"), &b.norm1)?;
        c.linear(&format!("{p}.attn.qkv"), &b.qkv)?;
        c.linear(&format!("{p}.attn.proj"), &b.proj)?;
        c.vision_norm(&format!("{p}.norm2"), &b.norm2)?;
        match &b.mlp {
            VisionMlp::QuickGelu(m) => {
                c.linear(&format!("{p}.mlp.fc1"), &m.fc1)?;
                c.linear(&format!("{p}.mlp.fc2"), &m.fc2)?;
            }
            VisionMlp::SwiGlu(m) => {
                c.linear(&format!("{p}.mlp.gate_proj"), &m.gate_proj)?;
                c.linear(&format!("{p}.mlp.up_proj"), &m.up_proj)?;
                c.linear(&format!("{p}.mlp.down_proj"), &m.down_proj)?;
            }
        }
    }
    c.vision_norm("visual.merger.ln_q", &vis.merger.ln_q)?;
    c.linear("visual.merger.mlp.0", &vis.merger.fc1)?;
    c.linear("visual.merger.mlp.2", &vis.merger.fc2)?;

    let text = &model.model;
    c.param("model.embed_tokens.weight".into(), &text.embed_tokens.weight)?;
    for (i, l) in text.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        c.rms_norm(&format!("{p}.input_layernorm"), &l.input_layernorm)?;
        c.linear(&format!("{p}.self_attn.q_proj"), &l.self_attn.q_proj)?;
        c.linear(&format!("{p}.self_attn.k_proj"), &l.self_attn.k_proj)?;
        c.linear(&format!("{p}.self_attn.v_proj"), &l.self_attn.v_proj)?;
        c.linear(&format!("{p}.self_attn.o_proj"), &l.self_attn.o_proj)?;
        c.rms_norm(&format!("{p}.post_attention_layernorm"), &l.post_attention_layernorm)?;
        c.linear(&format!("{p}.mlp.gate_proj"), &l.mlp.gate_proj)?;
        c.linear(&format!("{p}.mlp.up_proj"), &l.mlp.up_proj)?;
        c.linear(&format!("{p}.mlp.down_proj"), &l.mlp.down_proj)?;
    }
    c.rms_norm("model.norm", &text.norm)?;
    if let Some(head) = &text.lm_head {
        c.linear("lm_head", head)?;
    }

    let views: Vec<(&str, TensorData<'_>)> =
        c.tensors.iter().map(|(k, v, s)| (k.as_str(), TensorData::F32(v, s))).collect();
    write_safetensors(&dir.join("model.safetensors"), &views)?;
    write_json(&dir.join("config.json"), &config_json(config))?;
    let k = &config.tokens;
    let generation = json!({
        "bos_token_id": k.bos_token_id,
        "eos_token_id": k.eos_token_id,
        "pad_token_id": k.bos_token_id,
        "use_cache": true,
    });
    write_json(&dir.join("generation_config.json"), &generation)
}

/// Pretty JSON with a trailing newline.
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| VlmError::Config(e.to_string()))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| VlmError::Io { path: path.into(), source: e })
}
