//! Loading Hugging Face Idefics3 / SmolVLM checkpoints.
//!
//! [`load_pretrained`] reads `config.json` and the weights from `model.safetensors` or a sharded index
//! through `deper-weights` (memory-mapped; bf16, f16 and f32 are converted to f32). Modules are built
//! directly from the tensors and every tensor is shape-checked; a missing or wrong one is reported by
//! key and expected shape. PyTorch Linear weights are `[out, in]` and are transposed to burn's
//! `[in, out]`; the Conv2d patch embedding is flattened to a Linear.
//!
//! Key names: the hub layout (`model.vision_model.*`, `model.connector.*`, `model.text_model.*`,
//! `lm_head.weight`) is canonical; [`KEY_RENAMES`] lists the alternatives tried when a hub key is absent.
//!
//! Reference: transformers `Idefics3ForConditionalGeneration` (`modeling_idefics3.py`) key names.

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use deper_weights::Checkpoint;
use std::path::Path;

use super::config::Idefics3Config;
use super::model::Idefics3;
use super::vision::{Connector, SiglipAttention, SiglipEncoderLayer, SiglipVision};
use crate::loader::{load_text_model, Loader};
use crate::Result;

/// `(hub prefix, alternative prefix)`: when `hub prefix…` is missing, `alternative prefix…` is tried.
pub const KEY_RENAMES: &[(&str, &str)] = &[
    // Bare `Idefics3Model` checkpoints (no `ForConditionalGeneration` wrapper) drop the `model.` prefix.
    ("model.", ""),
];

/// Loads `config.json` and the weights from a Hugging Face model folder.
pub fn load_pretrained<B: Backend>(dir: &Path, device: &B::Device) -> Result<Idefics3<B>> {
    let config = Idefics3Config::from_path(dir)?;
    let ckpt = Checkpoint::open(dir)?;
    load_weights(&config, &ckpt, device)
}

/// Builds the model of `config` from an opened checkpoint.
pub fn load_weights<B: Backend>(config: &Idefics3Config, ckpt: &Checkpoint, device: &B::Device) -> Result<Idefics3<B>> {
    let ld = Loader::<B> { ckpt, device, renames: KEY_RENAMES };
    Ok(Idefics3 {
        vision: load_vision(&ld, config)?,
        connector: Connector {
            proj: ld.linear(
                "model.connector.modality_projection.proj",
                config.vision.hidden_size * config.scale_factor * config.scale_factor,
                config.text.hidden_size,
                false,
            )?,
            scale_factor: config.scale_factor,
        },
        // Llama has no q/k/v biases.
        text: load_text_model(&ld, "model.text_model", &config.text_config(), config.text.head_dim, false)?,
        image_token_id: config.image_token_id as usize,
        max_position_embeddings: config.text.max_position_embeddings,
        vocab_size: config.text.vocab_size,
        hidden_size: config.text.hidden_size,
    })
}

fn load_vision<B: Backend>(ld: &Loader<'_, B>, config: &Idefics3Config) -> Result<SiglipVision<B>> {
    let vc = &config.vision;
    let (e, eps, p) = (vc.hidden_size, vc.layer_norm_eps, "model.vision_model");
    // Conv2d [E, C, P, P] with kernel = stride is a Linear over the (C, P, P) patch.
    let conv = ld.values(
        &format!("{p}.embeddings.patch_embedding.weight"),
        &[e, vc.num_channels, vc.patch_size, vc.patch_size],
    )?;
    let patch_embedding = ld.linear_from(conv, &format!("{p}.embeddings.patch_embedding"), vc.patch_dim(), e, true)?;
    let side = vc.patches_per_side();
    let position = ld.tensor(&format!("{p}.embeddings.position_embedding.weight"), [side * side, e])?;
    let layers = (0..vc.num_hidden_layers)
        .map(|i| {
            let l = format!("{p}.encoder.layers.{i}");
            Ok(SiglipEncoderLayer {
                layer_norm1: ld.layer_norm(&format!("{l}.layer_norm1"), e, eps)?,
                self_attn: SiglipAttention {
                    q_proj: ld.linear(&format!("{l}.self_attn.q_proj"), e, e, true)?,
                    k_proj: ld.linear(&format!("{l}.self_attn.k_proj"), e, e, true)?,
                    v_proj: ld.linear(&format!("{l}.self_attn.v_proj"), e, e, true)?,
                    out_proj: ld.linear(&format!("{l}.self_attn.out_proj"), e, e, true)?,
                    num_heads: vc.num_attention_heads,
                },
                layer_norm2: ld.layer_norm(&format!("{l}.layer_norm2"), e, eps)?,
                fc1: ld.linear(&format!("{l}.mlp.fc1"), e, vc.intermediate_size, true)?,
                fc2: ld.linear(&format!("{l}.mlp.fc2"), vc.intermediate_size, e, true)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SiglipVision {
        patch_embedding,
        position_embedding: Embedding { weight: Param::from_tensor(position) },
        layers,
        post_layernorm: ld.layer_norm(&format!("{p}.post_layernorm"), e, eps)?,
        patch_size: vc.patch_size,
        num_channels: vc.num_channels,
        patches_per_side: side,
    })
}
