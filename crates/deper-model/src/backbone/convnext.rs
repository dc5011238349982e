//! The DINOv3 ConvNeXt image backbone.
//!
//! A port of HF `DINOv3ConvNextModel` (transformers 5.24.0,
//! `models/dinov3_convnext/modeling_dinov3_convnext.py`) for inference:
//!
//! - four stages; stage 0 opens with the stem `Conv2d(C, C₀, kernel 4, stride 4)` then a LayerNorm,
//!   every later stage with a downsampling LayerNorm then `Conv2d(Cᵢ₋₁, Cᵢ, kernel 2, stride 2)`.
//!   Both convolutions have kernel = stride, so each is applied as a matrix product ([`PatchConv`])
//!   over flattened non-overlapping patches (same arithmetic; rows or columns beyond a multiple of the patch are
//!   dropped, as the strided convolution does);
//! - blocks `x += γ ⊙ pw₂(GELU(pw₁(LN(dw₇ₓ₇(x)))))`: a depthwise 7×7 convolution (padding 3, bias), a
//!   LayerNorm over channels, the two pointwise Linears (4× expansion), exact-erf GELU, layer scale `γ`;
//! - activations stay channels-first `[b, c, h, w]` throughout (HF's "implementation 1" of the block,
//!   equivalent to its channels-last one): the LayerNorms normalise over dimension 1 and the pointwise
//!   Linears are one matrix product `W · x` per image over `[b, c, h·w]`, which keeps the depthwise
//!   convolution free of permutes and makes every product one large GEMM (a channels-last Linear on
//!   `[b, h, w, c]` is `b·h` small GEMMs on burn's NdArray backend, each packing the weight again:
//!   written that way the whole model ran 1.7× slower on the CPU at 448²);
//! - `last_hidden_state` = `layer_norm(cat([mean of the final grid], grid tokens row-major]))`: the
//!   pooled token is the spatial mean of the **un-normalised** last stage, and the final LayerNorm is
//!   applied to it and to every grid token. There are no register tokens, so
//!   `last_hidden_state[:, 1:]` are the spatial tokens, `(H/32)·(W/32)` of them.
//!
//! Drop-path (stochastic depth) is training-only and left out.

use burn::module::{Initializer, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{gelu, silu};

use super::config::Activation;
use super::convnext_config::{Dinov3ConvNextConfig, DEPTHWISE_KERNEL, DOWNSAMPLE_PATCH, STEM_PATCH};

/// Output of [`Dinov3ConvNext::forward_with_stages`].
#[derive(Debug, Clone)]
pub struct Dinov3ConvNextOutput<B: Backend> {
    /// `[batch, 1 + gh·gw, D]`, after the final norm.
    pub last_hidden_state: Tensor<B, 3>,
    /// The output of each stage, `[batch, Cᵢ, hᵢ, wᵢ]` (HF's `hidden_states[i + 1]`).
    pub stages: Vec<Tensor<B, 4>>,
    /// Token grid `(gh, gw)` of the last stage.
    pub grid: (usize, usize),
}

/// LayerNorm over the channels of a channels-first tensor (HF `DINOv3ConvNextLayerNorm`).
#[derive(Module, Debug)]
pub struct ChannelNorm<B: Backend> {
    /// `[C]`
    pub gamma: Param<Tensor<B, 1>>,
    /// `[C]`
    pub beta: Param<Tensor<B, 1>>,
    pub epsilon: f64,
}

impl<B: Backend> ChannelNorm<B> {
    fn new(c: usize, epsilon: f64, device: &B::Device) -> Self {
        let gamma = Param::from_tensor(Tensor::ones([c], device));
        Self { gamma, beta: Param::from_tensor(Tensor::zeros([c], device)), epsilon }
    }

    /// # Shapes
    /// - `x`: `[batch, C, h, w]`
    /// - output: `[batch, C, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let c = self.gamma.dims()[0];
        let centered = x.clone() - x.mean_dim(1); // [b, C, h, w]
        let var = (centered.clone() * centered.clone()).mean_dim(1); // [b, 1, h, w], biased
        let normed = centered / (var + self.epsilon).sqrt();
        normed * self.gamma.val().reshape([1, c, 1, 1]) + self.beta.val().reshape([1, c, 1, 1])
    }
}

/// A per-position Linear on channels-first activations (a 1×1 convolution): `W · x + b`.
#[derive(Module, Debug)]
pub struct Pointwise<B: Backend> {
    /// `[out, in]`, PyTorch's Linear layout.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Pointwise<B> {
    fn new(d_in: usize, d_out: usize, device: &B::Device) -> Self {
        // torch.nn.Linear's default init (Kaiming-uniform with a = √5).
        let init = Initializer::KaimingUniform { gain: 1.0 / 3f64.sqrt(), fan_out_only: false };
        Self {
            weight: init.init_with([d_out, d_in], Some(d_in), Some(d_out), device),
            bias: init.init_with([d_out], Some(d_in), Some(d_out), device),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, in, n]`
    /// - output: `[batch, out, n]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let d_out = self.bias.dims()[0];
        self.weight.val().unsqueeze::<3>().matmul(x) + self.bias.val().reshape([1, d_out, 1])
    }
}

/// A convolution with kernel = stride = `patch_size`, as a [`Pointwise`] over `(c, ky, kx)`-flattened
/// patches (the order of PyTorch's `[D, C, p, p]` weight, viewed as `[D, C·p·p]`).
#[derive(Module, Debug)]
pub struct PatchConv<B: Backend> {
    /// `[D, C·p·p]`
    pub proj: Pointwise<B>,
    pub patch_size: usize,
}

impl<B: Backend> PatchConv<B> {
    /// # Shapes
    /// - `x`: `[batch, C, h, w]`
    /// - output: `[batch, D, h/p, w/p]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let x = if gh * p != h || gw * p != w { x.slice([0..b, 0..c, 0..gh * p, 0..gw * p]) } else { x };
        let patches = x
            .reshape([b, c, gh, p, gw, p]) // [b, c, gh, ky, gw, kx]
            .permute([0, 1, 3, 5, 2, 4]) // [b, c, ky, kx, gh, gw]
            .reshape([b, c * p * p, gh * gw]); // [b, c·p·p, N]
        let d = self.proj.bias.dims()[0];
        self.proj.forward(patches).reshape([b, d, gh, gw]) // [b, D, gh, gw]
    }
}

/// One ConvNeXt block (`DINOv3ConvNextLayer`).
#[derive(Module, Debug)]
pub struct ConvNextLayer<B: Backend> {
    /// Depthwise `Conv2d(C, C, 7, padding 3, groups C)`, weight `[C, 1, 7, 7]`.
    pub depthwise_conv: Conv2d<B>,
    pub layer_norm: ChannelNorm<B>,
    /// `C → 4C`
    pub pointwise_conv1: Pointwise<B>,
    /// `4C → C`
    pub pointwise_conv2: Pointwise<B>,
    /// Layer scale `γ`, `[C]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// `true`: SiLU; `false`: exact GELU.
    pub silu: bool,
}

impl<B: Backend> ConvNextLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, C, h, w]`
    /// - output: `[batch, C, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let y = self.layer_norm.forward(self.depthwise_conv.forward(x.clone())); // [b, C, h, w]
        let y = self.pointwise_conv1.forward(y.reshape([b, c, h * w])); // [b, 4C, h·w]
        let y = if self.silu { silu(y) } else { gelu(y) };
        let y = self.pointwise_conv2.forward(y) * self.gamma.val().reshape([1, c, 1]); // [b, C, h·w]
        x + y.reshape([b, c, h, w])
    }
}

/// One stage (`DINOv3ConvNextStage`): downsampling, then the blocks.
#[derive(Module, Debug)]
pub struct ConvNextStage<B: Backend> {
    /// LayerNorm before the downsampling convolution (stages 1..; `None` for the stem).
    pub pre_norm: Option<ChannelNorm<B>>,
    /// The stem (4×4, stride 4) or downsampling (2×2, stride 2) convolution.
    pub conv: PatchConv<B>,
    /// LayerNorm after the stem convolution (stage 0 only).
    pub post_norm: Option<ChannelNorm<B>>,
    pub layers: Vec<ConvNextLayer<B>>,
}

impl<B: Backend> ConvNextStage<B> {
    /// # Shapes
    /// - `x`: `[batch, Cᵢ₋₁, h, w]`
    /// - output: `[batch, Cᵢ, h/p, w/p]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = match &self.pre_norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        let mut x = self.conv.forward(x); // [b, Cᵢ, h/p, w/p]
        if let Some(norm) = &self.post_norm {
            x = norm.forward(x);
        }
        for layer in &self.layers {
            x = layer.forward(x);
        }
        x
    }
}

/// DINOv3 ConvNeXt (`DINOv3ConvNextModel`), inference only.
#[derive(Module, Debug)]
pub struct Dinov3ConvNext<B: Backend> {
    pub stages: Vec<ConvNextStage<B>>,
    /// Final LayerNorm over the pooled token and the grid tokens.
    pub layer_norm: LayerNorm<B>,
    pub num_channels: usize,
}

impl Dinov3ConvNextConfig {
    /// A randomly initialised model (layer scale set to `layer_scale_init_value`); load real weights
    /// with [`super::convnext_pretrained::load_pretrained`].
    ///
    /// # Panics
    /// If the config is invalid (see [`Dinov3ConvNextConfig::validate`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Dinov3ConvNext<B> {
        if let Err(e) = self.validate() {
            panic!("invalid DINOv3 ConvNeXt config: {e}");
        }
        let eps = self.layer_norm_eps;
        let silu = self.activation().map(|a| a == Activation::Silu).unwrap_or(false);
        let layer = |d: usize| ConvNextLayer {
            depthwise_conv: depthwise_conv_config(d).init(device),
            layer_norm: ChannelNorm::new(d, eps, device),
            pointwise_conv1: Pointwise::new(d, 4 * d, device),
            pointwise_conv2: Pointwise::new(4 * d, d, device),
            gamma: Param::from_tensor(Tensor::full([d], self.layer_scale_init_value, device)),
            silu,
        };
        let stages = self
            .hidden_sizes
            .iter()
            .zip(&self.depths)
            .enumerate()
            .map(|(s, (&d, &depth))| {
                let (c, p) =
                    if s == 0 { (self.num_channels, STEM_PATCH) } else { (self.hidden_sizes[s - 1], DOWNSAMPLE_PATCH) };
                ConvNextStage {
                    pre_norm: (s > 0).then(|| ChannelNorm::new(c, eps, device)),
                    conv: PatchConv { proj: Pointwise::new(c * p * p, d, device), patch_size: p },
                    post_norm: (s == 0).then(|| ChannelNorm::new(d, eps, device)),
                    layers: (0..depth).map(|_| layer(d)).collect(),
                }
            })
            .collect();
        let layer_norm = LayerNormConfig::new(self.hidden_size()).with_epsilon(eps).init(device);
        Dinov3ConvNext { stages, layer_norm, num_channels: self.num_channels }
    }
}

/// The depthwise 7×7 convolution of a block of width `d`.
pub(crate) fn depthwise_conv_config(d: usize) -> Conv2dConfig {
    let pad = DEPTHWISE_KERNEL / 2;
    Conv2dConfig::new([d, d], [DEPTHWISE_KERNEL, DEPTHWISE_KERNEL])
        .with_groups(d)
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
}

impl<B: Backend> Dinov3ConvNext<B> {
    /// Token width `D` (the last stage's width).
    pub fn hidden_size(&self) -> usize {
        self.layer_norm.gamma.dims()[0]
    }

    /// Token grid `(gh, gw)` for an `h × w` input (each strided convolution floors).
    pub fn grid(&self, h: usize, w: usize) -> (usize, usize) {
        self.stages.iter().fold((h, w), |(h, w), s| (h / s.conv.patch_size, w / s.conv.patch_size))
    }

    /// Full forward pass returning every stage's output.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, C, H, W]` (normalised as by [`super::preprocess`])
    /// - `last_hidden_state`: `[batch, 1 + gh·gw, D]`; `stages[i]`: `[batch, Cᵢ, hᵢ, wᵢ]`
    pub fn forward_with_stages(&self, pixels: Tensor<B, 4>) -> Dinov3ConvNextOutput<B> {
        let mut x = pixels;
        let mut stages = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            x = stage.forward(x); // [b, Cᵢ, hᵢ, wᵢ]
            stages.push(x.clone());
        }
        let [_, _, gh, gw] = x.dims();
        Dinov3ConvNextOutput { last_hidden_state: self.tokens(x), stages, grid: (gh, gw) }
    }

    /// `last_hidden_state`.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, C, H, W]`
    /// - output: `[batch, 1 + gh·gw, D]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let mut x = pixels;
        for stage in &self.stages {
            x = stage.forward(x); // [b, Cᵢ, hᵢ, wᵢ]
        }
        self.tokens(x)
    }

    /// `[pooled, grid…]` after the final norm, from the last stage's output.
    ///
    /// # Shapes
    /// - `x`: `[batch, D, gh, gw]`
    /// - output: `[batch, 1 + gh·gw, D]`
    fn tokens(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, d, gh, gw] = x.dims();
        let grid = x.reshape([b, d, gh * gw]); // [b, D, N], row-major over (y, x)
        let pooled = grid.clone().mean_dim(2); // [b, D, 1]: AdaptiveAvgPool2d(1) before the norm
        let tokens = Tensor::cat(vec![pooled, grid], 2).swap_dims(1, 2); // [b, 1 + N, D]
        self.layer_norm.forward(tokens)
    }

    /// Normalised grid tokens as a grid (the pooled token dropped).
    ///
    /// # Shapes
    /// - `pixels`: `[batch, C, H, W]`
    /// - output: `[batch, gh, gw, D]`, `[b, y, x, c]`
    pub fn patch_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = pixels.dims();
        let (gh, gw) = self.grid(h, w);
        let out = self.forward(pixels); // [b, 1 + N, D]
        let [b, t, d] = out.dims();
        out.slice([0..b, 1..t, 0..d]).reshape([b, gh, gw, d]) // [b, gh, gw, D]
    }
}
