//! Loading Hugging Face DINOv3 ConvNeXt checkpoints (`DINOv3ConvNextModel`, transformers 5.24.0 layout).
//!
//! [`load_pretrained`] reads `config.json` and `model.safetensors` (or a sharded index) with
//! `deper-weights`, renames keys with [`KEY_RENAMES`], and builds a [`Dinov3ConvNext`] directly from
//! the stored tensors. Every tensor is shape-checked against the config; a missing or mis-shaped
//! tensor is an error that names the key and both shapes.

use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use deper_weights::Checkpoint;

use super::config::Activation;
use super::convnext::{
    depthwise_conv_config, ChannelNorm, ConvNextLayer, ConvNextStage, Dinov3ConvNext, PatchConv, Pointwise,
};
use super::convnext_config::{Dinov3ConvNextConfig, DEPTHWISE_KERNEL, DOWNSAMPLE_PATCH, STEM_PATCH};
use super::loader::{key_prefix, model_folder, Loader};
use super::BackboneError;

/// Port module path → Hugging Face key, `{s}` being the stage and `{i}` the block index (hub layout,
/// as `save_pretrained` writes it). The port works channels-first, so Linear weights keep PyTorch's
/// `[out, in]` layout ([`Pointwise`] computes `W · x`); LayerNorm `weight`/`bias` are `gamma`/`beta`.
pub const KEY_RENAMES: &[(&str, &str)] = &[
    // Stem Conv2d `[C₀, C, 4, 4]` → PatchConv weight `[C₀, C·16]` (flatten `(c, ky, kx)`), bias `[C₀]`.
    ("stages.0.conv", "stages.0.downsample_layers.0"),
    // Stem LayerNorm over channels (HF `channels_first`), a ChannelNorm.
    ("stages.0.post_norm", "stages.0.downsample_layers.1"),
    // Downsampling LayerNorm of stages 1.. (before the convolution; again over channels).
    ("stages.{s}.pre_norm", "stages.{s}.downsample_layers.0"),
    // Downsampling Conv2d `[Cₛ, Cₛ₋₁, 2, 2]` → PatchConv weight `[Cₛ, Cₛ₋₁·4]`.
    ("stages.{s}.conv", "stages.{s}.downsample_layers.1"),
    // Depthwise Conv2d `[Cₛ, 1, 7, 7]` and bias, unchanged (burn's grouped Conv2d has the same layout).
    ("stages.{s}.layers.{i}.depthwise_conv", "stages.{s}.layers.{i}.depthwise_conv"),
    // Block LayerNorm over channels (HF applies it channels-last: the same normalisation).
    ("stages.{s}.layers.{i}.layer_norm", "stages.{s}.layers.{i}.layer_norm"),
    // Pointwise Linears `[4C, C]` and `[C, 4C]`, unchanged (HF names them convs: they act as 1×1 ones).
    ("stages.{s}.layers.{i}.pointwise_conv1", "stages.{s}.layers.{i}.pointwise_conv1"),
    ("stages.{s}.layers.{i}.pointwise_conv2", "stages.{s}.layers.{i}.pointwise_conv2"),
    // Layer scale `[C]`, a bare parameter.
    ("stages.{s}.layers.{i}.gamma", "stages.{s}.layers.{i}.gamma"),
    // Final LayerNorm over the tokens (outside the encoder: see `Prefixes`).
    ("layer_norm", "layer_norm"),
];

/// The HF key for a port path of [`KEY_RENAMES`], with `{s}` and `{i}` replaced.
fn hf_key(port: &str, stage: usize, layer: usize) -> String {
    let hf = KEY_RENAMES.iter().find(|(p, _)| *p == port).map_or(port, |(_, hf)| hf);
    hf.replace("{s}", &stage.to_string()).replace("{i}", &layer.to_string())
}

/// Where the encoder's keys (`stages.…`) and the final norm's (`layer_norm.…`) start.
struct Prefixes {
    stages: String,
    norm: String,
}

/// Quirk: hub files (and `save_pretrained`) store bare keys (`stages.0…`, `layer_norm…`), but
/// transformers 5.x holds the encoder in an attribute named `model`, so a raw `state_dict()` has
/// `model.stages.0…` beside a bare `layer_norm…` (`conversion_mapping.py` renames on load and save);
/// a model wrapping the backbone adds its own prefix in front of both. The stage prefix is whatever
/// precedes the stem convolution's key; the norm prefix is the same one, or that one minus `model.`.
fn detect_prefixes(ck: &Checkpoint) -> Prefixes {
    let stages = key_prefix(ck, "stages.0.downsample_layers.0.weight");
    let norm = match stages.strip_suffix("model.") {
        Some(outer) if !ck.contains(&format!("{stages}layer_norm.weight")) => outer.to_string(),
        _ => stages.clone(),
    };
    Prefixes { stages, norm }
}

/// A PyTorch `Linear(d_in, d_out)` at `{key}.weight` / `{key}.bias`, kept `[out, in]`.
fn pointwise<B: Backend>(l: &Loader<B>, key: &str, d_in: usize, d_out: usize) -> Result<Pointwise<B>, BackboneError> {
    Ok(Pointwise {
        weight: l.param(&format!("{key}.weight"), [d_out, d_in])?,
        bias: l.param(&format!("{key}.bias"), [d_out])?,
    })
}

/// A PyTorch `Conv2d(c, d, kernel p, stride p)` at `{key}`: the weight `[d, c, p, p]` is row-major over
/// `(c, ky, kx)` per output channel, so it is viewed as `[d, c·p·p]`.
fn patch_conv<B: Backend>(
    l: &Loader<B>,
    key: &str,
    c: usize,
    d: usize,
    p: usize,
) -> Result<PatchConv<B>, BackboneError> {
    let weight = l.tensor(&format!("{key}.weight"), [d, c, p, p])?.reshape([d, c * p * p]);
    let proj = Pointwise { weight: Param::from_tensor(weight), bias: l.param(&format!("{key}.bias"), [d])? };
    Ok(PatchConv { proj, patch_size: p })
}

/// A PyTorch LayerNorm over channels at `{key}.weight` / `{key}.bias`.
fn channel_norm<B: Backend>(l: &Loader<B>, key: &str, c: usize, epsilon: f64) -> Result<ChannelNorm<B>, BackboneError> {
    Ok(ChannelNorm {
        gamma: l.param(&format!("{key}.weight"), [c])?,
        beta: l.param(&format!("{key}.bias"), [c])?,
        epsilon,
    })
}

/// Builds a [`Dinov3ConvNext`] from an open checkpoint and its config.
pub fn from_checkpoint<B: Backend>(
    config: &Dinov3ConvNextConfig,
    ck: &Checkpoint,
    device: &B::Device,
) -> Result<Dinov3ConvNext<B>, BackboneError> {
    config.validate()?;
    let l = Loader::<B> { ck, device };
    let prefixes = detect_prefixes(ck);
    let key = |port: &str, s: usize, i: usize| format!("{}{}", prefixes.stages, hf_key(port, s, i));
    let eps = config.layer_norm_eps;
    let silu = config.activation()? == Activation::Silu;

    let mut stages = Vec::with_capacity(config.num_stages());
    for (s, (&d, &depth)) in config.hidden_sizes.iter().zip(&config.depths).enumerate() {
        let (pre_norm, conv, post_norm) = if s == 0 {
            let conv = patch_conv(&l, &key("stages.0.conv", 0, 0), config.num_channels, d, STEM_PATCH)?;
            (None, conv, Some(channel_norm(&l, &key("stages.0.post_norm", 0, 0), d, eps)?))
        } else {
            let c = config.hidden_sizes[s - 1];
            let norm = channel_norm(&l, &key("stages.{s}.pre_norm", s, 0), c, eps)?;
            (Some(norm), patch_conv(&l, &key("stages.{s}.conv", s, 0), c, d, DOWNSAMPLE_PATCH)?, None)
        };
        let mut layers = Vec::with_capacity(depth);
        for i in 0..depth {
            let k = |port: &str| key(port, s, i);
            let mut depthwise_conv = depthwise_conv_config(d).init(device);
            let dw = k("stages.{s}.layers.{i}.depthwise_conv");
            depthwise_conv.weight = l.param(&format!("{dw}.weight"), [d, 1, DEPTHWISE_KERNEL, DEPTHWISE_KERNEL])?;
            depthwise_conv.bias = Some(l.param(&format!("{dw}.bias"), [d])?);
            layers.push(ConvNextLayer {
                depthwise_conv,
                layer_norm: channel_norm(&l, &k("stages.{s}.layers.{i}.layer_norm"), d, eps)?,
                pointwise_conv1: pointwise(&l, &k("stages.{s}.layers.{i}.pointwise_conv1"), d, 4 * d)?,
                pointwise_conv2: pointwise(&l, &k("stages.{s}.layers.{i}.pointwise_conv2"), 4 * d, d)?,
                gamma: l.param::<1>(&k("stages.{s}.layers.{i}.gamma"), [d])?,
                silu,
            });
        }
        stages.push(ConvNextStage { pre_norm, conv, post_norm, layers });
    }
    let norm_key = format!("{}{}", prefixes.norm, hf_key("layer_norm", 0, 0));
    let layer_norm = l.layer_norm(&norm_key, config.hidden_size(), eps)?;
    Ok(Dinov3ConvNext { stages, layer_norm, num_channels: config.num_channels })
}

/// Loads a DINOv3 ConvNeXt from a Hugging Face model folder (holding `config.json` and
/// `model.safetensors` or `model.safetensors.index.json`), or from a `.safetensors` / index file
/// with `config.json` next to it.
///
/// Errors name the file and, for tensors, the key and the expected and found shapes; a
/// `config.json` of another model (`model_type` other than `"dinov3_convnext"`) is rejected.
pub fn load_pretrained<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<Dinov3ConvNext<B>, BackboneError> {
    let path = path.as_ref();
    let config = Dinov3ConvNextConfig::from_json_file(&model_folder(path).join("config.json"))?;
    let ck = Checkpoint::open(path)?;
    from_checkpoint(&config, &ck, device)
}
