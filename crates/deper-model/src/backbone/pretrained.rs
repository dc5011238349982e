//! Loading Hugging Face DINOv3 ViT checkpoints (`DINOv3ViTModel`, transformers 5.24.0 layout).
//!
//! [`load_pretrained`] reads `config.json` and `model.safetensors` (or a sharded index) with
//! `deper-weights`, renames keys with [`KEY_RENAMES`], and builds a [`Dinov3`] directly from the
//! stored tensors. Every tensor is shape-checked against the config; a missing or mis-shaped
//! tensor is an error that names the key and both shapes.

use std::path::Path;

use burn::prelude::*;
use deper_weights::Checkpoint;

use super::config::{Activation, Dinov3Config};
use super::loader::{key_prefix, model_folder, Loader};
use super::vit::{Dinov3, Dinov3Attention, Dinov3Layer, Dinov3Mlp};
use super::BackboneError;

/// Port module path → Hugging Face key, `{i}` being the layer index (hub layout, no `model.` prefix).
/// Linear weights are stored `[out, in]` by PyTorch and transposed to burn's `[in, out]` on load.
pub const KEY_RENAMES: &[(&str, &str)] = &[
    // CLS token `[1, 1, D]`, unchanged.
    ("cls_token", "embeddings.cls_token"),
    // Register tokens `[1, R, D]`, unchanged (absent when R = 0).
    ("register_tokens", "embeddings.register_tokens"),
    // Patch Conv2d `[D, C, p, p]` → Linear weight `[C·p·p, D]` (flatten `(c, ky, kx)`, transpose);
    // its bias `[D]` is the Linear's.
    ("patch_embed", "embeddings.patch_embeddings"),
    // Pre-attention LayerNorm: HF `weight`/`bias` are burn `gamma`/`beta`.
    ("layers.{i}.norm1", "layer.{i}.norm1"),
    // Attention projections keep their names; `k_proj` has no bias unless `key_bias`.
    ("layers.{i}.attention.q_proj", "layer.{i}.attention.q_proj"),
    ("layers.{i}.attention.k_proj", "layer.{i}.attention.k_proj"),
    ("layers.{i}.attention.v_proj", "layer.{i}.attention.v_proj"),
    ("layers.{i}.attention.o_proj", "layer.{i}.attention.o_proj"),
    // LayerScale after attention: HF `layer_scale1.lambda1` is a bare `[D]` parameter here.
    ("layers.{i}.layer_scale1", "layer.{i}.layer_scale1.lambda1"),
    // Pre-MLP LayerNorm.
    ("layers.{i}.norm2", "layer.{i}.norm2"),
    // MLP projections; `gate_proj` only with `use_gated_mlp`.
    ("layers.{i}.mlp.gate_proj", "layer.{i}.mlp.gate_proj"),
    ("layers.{i}.mlp.up_proj", "layer.{i}.mlp.up_proj"),
    ("layers.{i}.mlp.down_proj", "layer.{i}.mlp.down_proj"),
    // LayerScale after the MLP.
    ("layers.{i}.layer_scale2", "layer.{i}.layer_scale2.lambda1"),
    // Final LayerNorm.
    ("norm", "norm"),
    // `embeddings.mask_token` has no counterpart: it is used only for masked pre-training.
];

/// The HF key for a port path of [`KEY_RENAMES`], with `{i}` replaced by `layer` and the
/// checkpoint's prefix (see [`detect_prefix`]) prepended.
fn hf_key(port: &str, layer: usize, prefix: &str) -> String {
    let hf = KEY_RENAMES.iter().find(|(p, _)| *p == port).map_or(port, |(_, hf)| hf);
    format!("{prefix}{}", hf.replace("{i}", &layer.to_string()))
}

/// Quirk: hub files (and `save_pretrained`) store bare keys (`layer.0…`, `embeddings…`), while a
/// raw `state_dict()` of transformers 5.x, or a checkpoint of a model wrapping the backbone, puts
/// them under a prefix such as `model.`. Finds the prefix in front of `embeddings.cls_token`.
fn detect_prefix(ck: &Checkpoint) -> String {
    key_prefix(ck, "embeddings.cls_token")
}

/// Builds a [`Dinov3`] from an open checkpoint and its config.
pub fn from_checkpoint<B: Backend>(
    config: &Dinov3Config,
    ck: &Checkpoint,
    device: &B::Device,
) -> Result<Dinov3<B>, BackboneError> {
    config.validate()?;
    let l = Loader::<B> { ck, device };
    let prefix = detect_prefix(ck);
    let key = |port: &str, layer: usize| hf_key(port, layer, &prefix);
    let (d, inter, eps) = (config.hidden_size, config.intermediate_size, config.layer_norm_eps);
    let (c, p) = (config.num_channels, config.patch_size);
    let silu = config.activation()? == Activation::Silu;

    let patch_embed = l.patch_conv(&key("patch_embed", 0), c, d, p)?;
    let cls_token = l.param(&key("cls_token", 0), [1, 1, d])?;
    let r = config.num_register_tokens;
    let register_tokens = if r > 0 { Some(l.param(&key("register_tokens", 0), [1, r, d])?) } else { None };

    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let k = |port: &str| key(port, i);
        layers.push(Dinov3Layer {
            norm1: l.layer_norm(&k("layers.{i}.norm1"), d, eps)?,
            attention: Dinov3Attention {
                q_proj: l.linear(&k("layers.{i}.attention.q_proj"), d, d, config.query_bias)?,
                k_proj: l.linear(&k("layers.{i}.attention.k_proj"), d, d, config.key_bias)?,
                v_proj: l.linear(&k("layers.{i}.attention.v_proj"), d, d, config.value_bias)?,
                o_proj: l.linear(&k("layers.{i}.attention.o_proj"), d, d, config.proj_bias)?,
                num_heads: config.num_attention_heads,
            },
            layer_scale1: l.param(&k("layers.{i}.layer_scale1"), [d])?,
            norm2: l.layer_norm(&k("layers.{i}.norm2"), d, eps)?,
            mlp: Dinov3Mlp {
                gate_proj: if config.use_gated_mlp {
                    Some(l.linear(&k("layers.{i}.mlp.gate_proj"), d, inter, config.mlp_bias)?)
                } else {
                    None
                },
                up_proj: l.linear(&k("layers.{i}.mlp.up_proj"), d, inter, config.mlp_bias)?,
                down_proj: l.linear(&k("layers.{i}.mlp.down_proj"), inter, d, config.mlp_bias)?,
                silu,
            },
            layer_scale2: l.param(&k("layers.{i}.layer_scale2"), [d])?,
        });
    }
    let norm = l.layer_norm(&key("norm", 0), d, eps)?;
    Ok(Dinov3 {
        patch_embed,
        cls_token,
        register_tokens,
        layers,
        norm,
        patch_size: p,
        num_channels: c,
        num_heads: config.num_attention_heads,
        rope_theta: config.rope_theta,
    })
}

/// Loads a DINOv3 ViT from a Hugging Face model folder (holding `config.json` and
/// `model.safetensors` or `model.safetensors.index.json`), or from a `.safetensors` / index file
/// with `config.json` next to it.
///
/// Errors name the file and, for tensors, the key and the expected and found shapes; a
/// `config.json` of another model (`model_type` other than `"dinov3_vit"`) is rejected.
pub fn load_pretrained<B: Backend>(path: impl AsRef<Path>, device: &B::Device) -> Result<Dinov3<B>, BackboneError> {
    let path = path.as_ref();
    let config = Dinov3Config::from_json_file(&model_folder(path).join("config.json"))?;
    let ck = Checkpoint::open(path)?;
    from_checkpoint(&config, &ck, device)
}
