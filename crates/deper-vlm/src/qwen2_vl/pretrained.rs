//! Loading Hugging Face Qwen2-VL and Qwen2.5-VL checkpoints.
//!
//! [`load_pretrained`] reads `config.json` (either layout) and the weights from `model.safetensors` or a
//! sharded `model.safetensors.index.json` through `deper-weights` (memory-mapped; bf16, f16 and f32 are
//! converted to f32). Modules are built directly from the tensors, so no random initialisation is paid.
//! Every tensor is shape-checked and a missing or wrong one is reported by key and expected shape.
//!
//! Key names: the hub layout is the canonical one; [`KEY_RENAMES`] lists the other prefixes seen in the
//! wild, tried in order when the hub key is absent. Both families use the same prefixes; the vision
//! blocks differ by name (Qwen2-VL `norm{1,2}.{weight,bias}`, `mlp.fc{1,2}`; Qwen2.5-VL RMSNorm
//! `norm{1,2}.weight`, `mlp.{gate,up,down}_proj` with biases, `merger.ln_q.weight` only), chosen by
//! `vision_config`'s [`VisionKind`]. PyTorch Linear weights are `[out, in]` and are
//! transposed to burn's `[in, out]`; the Conv3d patch embedding is flattened to a Linear.
//!
//! Reference: transformers `Qwen2VLForConditionalGeneration` / `Qwen2_5_VLForConditionalGeneration`
//! `_checkpoint_conversion_mapping`; tracel-ai/models `llama-burn/src/pretrained.rs` (the form).

use burn::tensor::backend::Backend;
use deper_weights::Checkpoint;
use std::path::Path;

use super::config::{Qwen2VlConfig, VisionKind};
use super::model::Qwen2Vl;
use super::vision::{PatchMerger, QuickGeluMlp, SwiGluMlp, VisionBlock, VisionMlp, VisionNorm, VisionTower};
use crate::loader::{load_text_model, Loader};
use crate::Result;

/// `(hub prefix, alternative prefix)`: when `hub prefix…` is missing, `alternative prefix…` is tried.
/// The same table serves Qwen2-VL and Qwen2.5-VL (transformers moved both the same way).
pub const KEY_RENAMES: &[(&str, &str)] = &[
    // transformers ≥ 4.52 in-memory layout (and checkpoints saved without the save-time mapping):
    // the language model moved under `model.language_model`.
    ("model.", "model.language_model."),
    // … and the vision tower under `model.visual`.
    ("visual.", "model.visual."),
    // Bare `Qwen2VLModel` checkpoints (no `ForConditionalGeneration` wrapper) drop the `model.` prefix.
    ("model.", "language_model."),
    // The LM head has stayed `lm_head.` everywhere; listed for completeness of the 5.x layout.
    ("lm_head.", "model.lm_head."),
];

/// Loads `config.json` and the weights from a Hugging Face model folder.
pub fn load_pretrained<B: Backend>(dir: &Path, device: &B::Device) -> Result<Qwen2Vl<B>> {
    let config = Qwen2VlConfig::from_path(dir)?;
    let ckpt = Checkpoint::open(dir)?;
    load_weights(&config, &ckpt, device)
}

/// Builds the model of `config` from an opened checkpoint.
pub fn load_weights<B: Backend>(config: &Qwen2VlConfig, ckpt: &Checkpoint, device: &B::Device) -> Result<Qwen2Vl<B>> {
    let ld = Loader::<B> { ckpt, device, renames: KEY_RENAMES };
    Ok(Qwen2Vl {
        visual: load_vision(&ld, config)?,
        // Qwen2 has q/k/v biases.
        model: load_text_model(&ld, "model", &config.text, config.text.head_dim(), true)?,
        image_token_id: config.tokens.image_token_id as usize,
        max_position_embeddings: config.text.max_position_embeddings,
        vocab_size: config.text.vocab_size,
        hidden_size: config.text.hidden_size,
    })
}

fn load_vision<B: Backend>(ld: &Loader<'_, B>, config: &Qwen2VlConfig) -> Result<VisionTower<B>> {
    let vc = &config.vision;
    let e = vc.embed_dim;
    // Conv3d [embed, C, T, P, P] with kernel = stride is a Linear over the flattened (C, T, P, P) row.
    let conv_shape = [e, vc.in_channels, vc.temporal_patch_size, vc.patch_size, vc.patch_size];
    let conv = ld.values("visual.patch_embed.proj.weight", &conv_shape)?;
    let patch_embed = ld.linear_from(conv, "visual.patch_embed.proj", vc.patch_dim(), e, false)?;
    let (kind, mlp) = (vc.kind, vc.mlp_dim());
    let blocks = (0..vc.depth)
        .map(|j| {
            let p = format!("visual.blocks.{j}");
            let mlp = match kind {
                VisionKind::Qwen2Vl => VisionMlp::QuickGelu(QuickGeluMlp {
                    fc1: ld.linear(&format!("{p}.mlp.fc1"), e, mlp, true)?,
                    fc2: ld.linear(&format!("{p}.mlp.fc2"), mlp, e, true)?,
                }),
                VisionKind::Qwen25Vl => VisionMlp::SwiGlu(SwiGluMlp {
                    gate_proj: ld.linear(&format!("{p}.mlp.gate_proj"), e, mlp, true)?,
                    up_proj: ld.linear(&format!("{p}.mlp.up_proj"), e, mlp, true)?,
                    down_proj: ld.linear(&format!("{p}.mlp.down_proj"), mlp, e, true)?,
                }),
            };
            Ok(VisionBlock {
                norm1: vision_norm(ld, kind, &format!("{p}.norm1"), e)?,
                qkv: ld.linear(&format!("{p}.attn.qkv"), e, 3 * e, true)?,
                proj: ld.linear(&format!("{p}.attn.proj"), e, e, true)?,
                norm2: vision_norm(ld, kind, &format!("{p}.norm2"), e)?,
                mlp,
                num_heads: vc.num_heads,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let area = vc.spatial_merge_size * vc.spatial_merge_size;
    let merged = e * area;
    let merger = PatchMerger {
        ln_q: vision_norm(ld, kind, "visual.merger.ln_q", e)?,
        // `mlp` is nn.Sequential(Linear, GELU, Linear): indices 0 and 2.
        fc1: ld.linear("visual.merger.mlp.0", merged, merged, true)?,
        fc2: ld.linear("visual.merger.mlp.2", merged, vc.hidden_size, true)?,
        merge_area: area,
    };
    Ok(VisionTower {
        patch_embed,
        blocks,
        merger,
        spatial_merge_size: vc.spatial_merge_size,
        rope_theta: vc.rope_theta,
        head_dim: vc.head_dim(),
        window_tokens: vc.window_tokens().unwrap_or(0),
        fullatt_block_indexes: vc.fullatt_block_indexes.clone(),
    })
}

/// The vision norms: LayerNorm in Qwen2-VL, RMSNorm (weight only) in Qwen2.5-VL; eps 1e-6 in both.
fn vision_norm<B: Backend>(ld: &Loader<'_, B>, kind: VisionKind, prefix: &str, d: usize) -> Result<VisionNorm<B>> {
    Ok(match kind {
        VisionKind::Qwen2Vl => VisionNorm::Layer(ld.layer_norm(prefix, d, 1e-6)?),
        VisionKind::Qwen25Vl => VisionNorm::Rms(ld.rms_norm(prefix, d, 1e-6)?),
    })
}
