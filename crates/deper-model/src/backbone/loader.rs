//! Tensors of an open Hugging Face checkpoint as burn tensors and modules, shared by the DINOv3 ViT
//! ([`super::pretrained`]) and ConvNeXt ([`super::convnext_pretrained`]) loaders.
//!
//! Every read is shape-checked by `deper-weights`: a missing or mis-shaped tensor is an error naming
//! the key and both shapes. PyTorch `Linear` weights `[out, in]` become burn's `[in, out]`.

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use deper_weights::Checkpoint;

use super::BackboneError;

/// Builds tensors from checkpoint entries on `device`.
pub(crate) struct Loader<'a, B: Backend> {
    pub ck: &'a Checkpoint,
    pub device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    pub fn tensor<const D: usize>(&self, key: &str, shape: [usize; D]) -> Result<Tensor<B, D>, BackboneError> {
        let values = self.ck.f32(key, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), self.device))
    }

    pub fn param<const D: usize>(&self, key: &str, shape: [usize; D]) -> Result<Param<Tensor<B, D>>, BackboneError> {
        self.tensor(key, shape).map(Param::from_tensor)
    }

    /// A PyTorch `Linear(d_in, d_out)` at `{key}.weight` / `{key}.bias`.
    pub fn linear(&self, key: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>, BackboneError> {
        let weight = self.tensor(&format!("{key}.weight"), [d_out, d_in])?.transpose(); // [in, out]
        let bias = if bias { Some(self.param(&format!("{key}.bias"), [d_out])?) } else { None };
        Ok(Linear { weight: Param::from_tensor(weight), bias })
    }

    /// A PyTorch `Conv2d(c, d, kernel p, stride p)` with bias at `{key}.weight` / `{key}.bias` as a
    /// [`Linear`] `[c·p·p, d]` over `(c, ky, kx)`-flattened patches: the weight `[d, c, p, p]` is
    /// row-major over `(c, ky, kx)` per output channel, so it is viewed as `[d, c·p·p]` and transposed.
    pub fn patch_conv(&self, key: &str, c: usize, d: usize, p: usize) -> Result<Linear<B>, BackboneError> {
        let conv = self.tensor(&format!("{key}.weight"), [d, c, p, p])?;
        Ok(Linear {
            weight: Param::from_tensor(conv.reshape([d, c * p * p]).transpose()), // [c·p·p, d]
            bias: Some(self.param(&format!("{key}.bias"), [d])?),
        })
    }

    /// A PyTorch `LayerNorm(d)` at `{key}.weight` / `{key}.bias`.
    pub fn layer_norm(&self, key: &str, d: usize, eps: f64) -> Result<LayerNorm<B>, BackboneError> {
        let mut norm = LayerNormConfig::new(d).with_epsilon(eps).init(self.device);
        norm.gamma = self.param(&format!("{key}.weight"), [d])?;
        norm.beta = Some(self.param(&format!("{key}.bias"), [d])?);
        Ok(norm)
    }
}

/// The shortest prefix in front of `key` among the checkpoint's keys (`""` for hub files; e.g.
/// `model.` for a raw transformers `state_dict()` or a wrapping model), `""` when none ends so.
pub(crate) fn key_prefix(ck: &Checkpoint, key: &str) -> String {
    let mut prefixes: Vec<String> =
        ck.keys().into_iter().filter_map(|k| k.strip_suffix(key).map(str::to_string)).collect();
    prefixes.sort_by_key(String::len);
    prefixes.into_iter().next().unwrap_or_default()
}

/// The model folder of `path`: `path` itself, or the folder of a `.safetensors` / index file
/// (where `config.json` lies).
pub(crate) fn model_folder(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.into()
    } else {
        path.parent().unwrap_or(Path::new(".")).into()
    }
}
