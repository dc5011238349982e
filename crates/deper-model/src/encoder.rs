//! The dual-context encoder of DEPER (Xue et al., CVPR 2026, arXiv 2512.06662).
//!
//! Two token streams, trajectory tokens `T` and caption tokens `L`, are refined against the
//! shared image context `V` and each other; the output is `Z_dual = [T′; L′]`.
//! Every sub-block is a post-LN residual block (as in the authors' `src/model.py` at commit
//! 1526bed, `normalize_before=False`), and padded tokens are zeroed after the cross-attention
//! and the FFN, as there.
//!
//! Three orders of the same blocks ([`EncoderForm`]):
//! - [`EncoderForm::Interleaved`] (the paper, default): per layer
//!   `T ← FFN(Cross(Self(T), [V; L]))`, then `L ← FFN(Cross(Self(L), [V; T]))` with the `T`
//!   just updated in that layer.
//! - [`EncoderForm::Sequential`] (the authors' released code): the trajectory stream runs all
//!   layers against `[V; L]` (the caption tokens as they enter the encoder), then the caption
//!   stream runs all layers against `[V; T]` where `T` is the trajectory tokens **as they
//!   entered the encoder** — the code builds that context before refining `T`.
//! - [`EncoderForm::SequentialRefined`]: as `Sequential`, but the caption stream attends to the
//!   refined `T′`.
//!
//! With no trajectory (the `--no-trajectory` ablation, [`DualEncoder::forward_caption_only`])
//! the caption stream attends to `V` alone and `Z_dual = L′`.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::layers::{uniform_mask, zero_padded, AttentionBlock, AttentionBlockConfig, FfnBlock, FfnBlockConfig};

/// Order of the two streams' layers; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EncoderForm {
    /// The paper's interleaved layers.
    #[default]
    Interleaved,
    /// The authors' released code: trajectory stream first, caption stream against the
    /// unrefined trajectory tokens.
    Sequential,
    /// Trajectory stream first, caption stream against the refined trajectory tokens.
    SequentialRefined,
}

/// Config of [`DualEncoder`].
#[derive(Config, Debug)]
pub struct DualEncoderConfig {
    /// Token width.
    #[config(default = 384)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Layers per stream.
    #[config(default = 2)]
    pub n_layers: usize,
    /// FFN hidden width (the authors use `d_model`).
    #[config(default = 384)]
    pub d_ff: usize,
    /// Dropout.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Order of the layers.
    #[config(default = "EncoderForm::Interleaved")]
    pub form: EncoderForm,
}

/// One stream's layer: self-attention, cross-attention, FFN.
#[derive(Module, Debug)]
pub struct StreamLayer<B: Backend> {
    self_attn: AttentionBlock<B>,
    cross_attn: AttentionBlock<B>,
    ffn: FfnBlock<B>,
}

impl<B: Backend> StreamLayer<B> {
    /// `x ← FFN(Cross(Self(x), memory))`, padded rows of `x` zeroed.
    ///
    /// # Shapes
    /// - `x`: `[batch, len, d]`, `pad`: `[batch, len]` (`true` = padded)
    /// - `memory`: `[batch, len_m, d]`, `memory_pad`: `[batch, len_m]`
    /// - output: `[batch, len, d]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        pad: &Tensor<B, 2, Bool>,
        memory: Tensor<B, 3>,
        memory_pad: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        let x = self.self_attn.forward_self(x, Some(pad.clone())); // [batch, len, d]
        let x = zero_padded(self.cross_attn.forward_cross(x, memory, Some(memory_pad)), pad);
        zero_padded(self.ffn.forward(x), pad)
    }
}

/// The dual-context encoder; see the module docs.
#[derive(Module, Debug)]
pub struct DualEncoder<B: Backend> {
    traj_layers: Vec<StreamLayer<B>>,
    caption_layers: Vec<StreamLayer<B>>,
    #[module(skip)]
    form: EncoderForm,
}

impl DualEncoderConfig {
    fn layer<B: Backend>(&self, device: &B::Device) -> StreamLayer<B> {
        let attn = AttentionBlockConfig::new(self.d_model, self.n_heads).with_dropout(self.dropout);
        StreamLayer {
            self_attn: attn.init(device),
            cross_attn: attn.init(device),
            ffn: FfnBlockConfig::new(self.d_model, self.d_ff).with_dropout(self.dropout).init(device),
        }
    }

    /// Builds the encoder with both streams.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DualEncoder<B> {
        DualEncoder {
            traj_layers: (0..self.n_layers).map(|_| self.layer(device)).collect(),
            caption_layers: (0..self.n_layers).map(|_| self.layer(device)).collect(),
            form: self.form,
        }
    }

    /// Builds the caption stream only (the no-trajectory ablation).
    pub fn init_caption_only<B: Backend>(&self, device: &B::Device) -> DualEncoder<B> {
        DualEncoder {
            traj_layers: Vec::new(),
            caption_layers: (0..self.n_layers).map(|_| self.layer(device)).collect(),
            form: self.form,
        }
    }
}

/// `Z_dual` with its mask.
#[derive(Debug, Clone)]
pub struct DualContext<B: Backend> {
    /// `[batch, len, d]`: `[T′; L′]`, or `L′` without a trajectory.
    pub tokens: Tensor<B, 3>,
    /// `[batch, len]`, `true` = valid token.
    pub mask: Tensor<B, 2, Bool>,
}

impl<B: Backend> DualEncoder<B> {
    /// Runs both streams.
    ///
    /// # Shapes
    /// - `image`: `[batch, n_patches, d]` (never masked)
    /// - `traj`: `[batch, steps, d]`, `traj_mask`: `[batch, steps]` (`true` = valid)
    /// - `caption`: `[batch, len_c, d]`, `caption_mask`: `[batch, len_c]` (`true` = valid)
    /// - output: `Z_dual` `[batch, steps + len_c, d]` with its mask
    pub fn forward(
        &self,
        image: Tensor<B, 3>,
        traj: Tensor<B, 3>,
        traj_mask: Tensor<B, 2, Bool>,
        caption: Tensor<B, 3>,
        caption_mask: Tensor<B, 2, Bool>,
    ) -> DualContext<B> {
        let [batch, n_patches, _] = image.dims();
        let image_pad = uniform_mask::<B>(batch, n_patches, false, &image.device()); // [batch, n_patches]
        let traj_pad = traj_mask.clone().bool_not(); // [batch, steps]
        let caption_pad = caption_mask.clone().bool_not(); // [batch, len_c]
                                                           // Context for one stream: [V; other stream] and its padding mask.
        let context = |other: &Tensor<B, 3>, other_pad: &Tensor<B, 2, Bool>| {
            (
                Tensor::cat(vec![image.clone(), other.clone()], 1),
                Tensor::cat(vec![image_pad.clone(), other_pad.clone()], 1),
            )
        };

        let (mut t, mut l) = (traj, caption);
        match self.form {
            EncoderForm::Interleaved => {
                for (tl, cl) in self.traj_layers.iter().zip(&self.caption_layers) {
                    let (mem, mem_pad) = context(&l, &caption_pad);
                    t = tl.forward(t, &traj_pad, mem, mem_pad); // [batch, steps, d]
                    let (mem, mem_pad) = context(&t, &traj_pad);
                    l = cl.forward(l, &caption_pad, mem, mem_pad); // [batch, len_c, d]
                }
            }
            EncoderForm::Sequential | EncoderForm::SequentialRefined => {
                let t_in = t.clone();
                let (mem, mem_pad) = context(&l, &caption_pad);
                for layer in &self.traj_layers {
                    t = layer.forward(t, &traj_pad, mem.clone(), mem_pad.clone());
                    // [batch, steps, d]
                }
                let t_ctx = if self.form == EncoderForm::Sequential { t_in } else { t.clone() };
                let (mem, mem_pad) = context(&t_ctx, &traj_pad);
                for layer in &self.caption_layers {
                    l = layer.forward(l, &caption_pad, mem.clone(), mem_pad.clone());
                    // [batch, len_c, d]
                }
            }
        }
        DualContext { tokens: Tensor::cat(vec![t, l], 1), mask: Tensor::cat(vec![traj_mask, caption_mask], 1) }
    }

    /// The no-trajectory ablation: the caption stream attends to `V` only; `Z_dual = L′`.
    ///
    /// # Shapes
    /// - `image`: `[batch, n_patches, d]`
    /// - `caption`: `[batch, len_c, d]`, `caption_mask`: `[batch, len_c]` (`true` = valid)
    /// - output: `[batch, len_c, d]` with its mask
    pub fn forward_caption_only(
        &self,
        image: Tensor<B, 3>,
        caption: Tensor<B, 3>,
        caption_mask: Tensor<B, 2, Bool>,
    ) -> DualContext<B> {
        let [batch, n_patches, _] = image.dims();
        let image_pad = uniform_mask::<B>(batch, n_patches, false, &image.device());
        let caption_pad = caption_mask.clone().bool_not();
        let mut l = caption;
        for layer in &self.caption_layers {
            l = layer.forward(l, &caption_pad, image.clone(), image_pad.clone());
            // [batch, len_c, d]
        }
        DualContext { tokens: l, mask: caption_mask }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestBackend = burn::backend::NdArray;

    fn mask(valid: &[usize], len: usize) -> Tensor<TestBackend, 2, Bool> {
        let data: Vec<bool> = valid.iter().flat_map(|&n| (0..len).map(move |i| i < n)).collect();
        Tensor::from_data(TensorData::new(data, [valid.len(), len]), &Default::default())
    }

    #[test]
    fn every_form_outputs_z_dual_shape_and_zeroes_padding() {
        let device = Default::default();
        for form in [EncoderForm::Interleaved, EncoderForm::Sequential, EncoderForm::SequentialRefined] {
            let enc =
                DualEncoderConfig::new().with_d_model(32).with_n_heads(2).with_d_ff(32).with_form(form).init(&device);
            let image = Tensor::<TestBackend, 3>::random([2, 16, 32], burn::tensor::Distribution::Default, &device);
            let traj = Tensor::<TestBackend, 3>::random([2, 5, 32], burn::tensor::Distribution::Default, &device);
            let cap = Tensor::<TestBackend, 3>::random([2, 7, 32], burn::tensor::Distribution::Default, &device);
            let out = enc.forward(image, traj, mask(&[5, 3], 5), cap, mask(&[7, 2], 7));
            assert_eq!(out.tokens.dims(), [2, 12, 32], "{form:?}");
            assert_eq!(out.mask.dims(), [2, 12]);
            // Sample 1: trajectory steps 3..5 and caption tokens 2..7 are padding.
            let padded = out.tokens.clone().slice([1..2, 3..5, 0..32]).abs().sum().into_scalar();
            assert_eq!(padded, 0.0);
            let padded = out.tokens.clone().slice([1..2, 7..12, 0..32]).abs().sum().into_scalar();
            assert_eq!(padded, 0.0);
        }
    }

    #[test]
    fn caption_only_outputs_caption_shape() {
        let device = Default::default();
        let enc = DualEncoderConfig::new().with_d_model(32).with_n_heads(2).with_d_ff(32).init_caption_only(&device);
        let image = Tensor::<TestBackend, 3>::ones([2, 16, 32], &device);
        let cap = Tensor::<TestBackend, 3>::ones([2, 7, 32], &device);
        let out = enc.forward_caption_only(image, cap, mask(&[7, 2], 7));
        assert_eq!(out.tokens.dims(), [2, 7, 32]);
        assert_eq!(out.mask.dims(), [2, 7]);
    }
}
