//! The DINOv3 ViT image backbone.
//!
//! A port of HF `DINOv3ViTModel` (transformers 5.24.0, `models/dinov3_vit/modeling_dinov3_vit.py`)
//! for inference:
//!
//! - patch embedding: the `Conv2d(C, D, kernel p, stride p)` is applied as a [`Linear`] over each
//!   flattened `C·p·p` patch (same arithmetic, no im2col); pixels beyond a multiple of `p` are
//!   dropped, as the strided convolution does;
//! - token order `[CLS, registers…, patches…]`, patches row-major; **no absolute position
//!   embedding**, positions enter only through the 2-D RoPE ([`super::rope`]) on the patch tokens;
//! - pre-LN layers `x += λ₁ ⊙ o(Attn(RoPE(q), RoPE(k), v))`, `x += λ₂ ⊙ MLP(LN₂(x))` with
//!   LayerScale, `k_proj` usually without bias, exact-erf GELU MLP or the gated (SwiGLU) MLP;
//! - a final LayerNorm over all tokens gives `last_hidden_state`.
//!
//! `mask_token`, drop-path and the RoPE coordinate augmentations are training-only and left out.

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, silu, softmax};
use burn::tensor::Distribution;

use super::config::{Activation, Dinov3Config};
use super::rope::Rope;

/// Output of [`Dinov3::forward_with_hidden_states`].
#[derive(Debug, Clone)]
pub struct Dinov3Output<B: Backend> {
    /// `[batch, 1 + R + N, D]`, after the final norm.
    pub last_hidden_state: Tensor<B, 3>,
    /// `hidden_states[0]` is the embedding output, `hidden_states[i + 1]` the output of layer `i`
    /// (before the final norm), as HF's `output_hidden_states`; each `[batch, 1 + R + N, D]`.
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// Patch grid `(gh, gw)`.
    pub grid: (usize, usize),
}

/// Multi-head self-attention with RoPE on the patch tokens.
#[derive(Module, Debug)]
pub struct Dinov3Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub num_heads: usize,
}

impl<B: Backend> Dinov3Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, tokens, D]`
    /// - output: `[batch, tokens, D]`
    pub fn forward(&self, x: Tensor<B, 3>, rope: &Rope<B>, num_prefix: usize) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let (h, hd) = (self.num_heads, d / self.num_heads);
        let heads = |y: Tensor<B, 3>| y.reshape([b, t, h, hd]).swap_dims(1, 2); // [b, h, t, hd]
        let q = rope.apply(heads(self.q_proj.forward(x.clone())), num_prefix); // [b, h, t, hd]
        let k = rope.apply(heads(self.k_proj.forward(x.clone())), num_prefix); // [b, h, t, hd]
        let v = heads(self.v_proj.forward(x)); // [b, h, t, hd]
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt()); // [b, h, t, t]
        let context = softmax(scores, 3).matmul(v); // [b, h, t, hd]
        self.o_proj.forward(context.swap_dims(1, 2).reshape([b, t, d])) // [b, t, D]
    }
}

/// The MLP: `down(act(up(x)))`, or `down(act(gate(x)) * up(x))` when gated.
#[derive(Module, Debug)]
pub struct Dinov3Mlp<B: Backend> {
    /// Present only for the gated (SwiGLU) variant.
    pub gate_proj: Option<Linear<B>>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
    /// `true`: SiLU; `false`: exact GELU.
    pub silu: bool,
}

impl<B: Backend> Dinov3Mlp<B> {
    fn act(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.silu {
            silu(x)
        } else {
            gelu(x)
        }
    }

    /// # Shapes
    /// - `x`: `[batch, tokens, D]`
    /// - output: `[batch, tokens, D]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = match &self.gate_proj {
            Some(gate) => self.act(gate.forward(x.clone())) * self.up_proj.forward(x), // [b, t, I]
            None => self.act(self.up_proj.forward(x)),                                 // [b, t, I]
        };
        self.down_proj.forward(hidden) // [b, t, D]
    }
}

/// One pre-LN transformer layer with LayerScale.
#[derive(Module, Debug)]
pub struct Dinov3Layer<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attention: Dinov3Attention<B>,
    /// LayerScale `λ₁`, `[D]`.
    pub layer_scale1: Param<Tensor<B, 1>>,
    pub norm2: LayerNorm<B>,
    pub mlp: Dinov3Mlp<B>,
    /// LayerScale `λ₂`, `[D]`.
    pub layer_scale2: Param<Tensor<B, 1>>,
}

impl<B: Backend> Dinov3Layer<B> {
    /// # Shapes
    /// - `x`: `[batch, tokens, D]`
    /// - output: `[batch, tokens, D]`
    pub fn forward(&self, x: Tensor<B, 3>, rope: &Rope<B>, num_prefix: usize) -> Tensor<B, 3> {
        let attn = self.attention.forward(self.norm1.forward(x.clone()), rope, num_prefix); // [b, t, D]
        let x = x + attn * self.layer_scale1.val().unsqueeze::<3>(); // [b, t, D]
        let mlp = self.mlp.forward(self.norm2.forward(x.clone())); // [b, t, D]
        x + mlp * self.layer_scale2.val().unsqueeze::<3>()
    }
}

/// DINOv3 ViT (`DINOv3ViTModel`), inference only.
#[derive(Module, Debug)]
pub struct Dinov3<B: Backend> {
    /// The patch-embedding convolution as a Linear `[C·p·p, D]` over `(c, ky, kx)`-flattened patches.
    pub patch_embed: Linear<B>,
    /// `[1, 1, D]`
    pub cls_token: Param<Tensor<B, 3>>,
    /// `[1, R, D]`; `None` when the config has no registers.
    pub register_tokens: Option<Param<Tensor<B, 3>>>,
    pub layers: Vec<Dinov3Layer<B>>,
    /// Final LayerNorm.
    pub norm: LayerNorm<B>,
    pub patch_size: usize,
    pub num_channels: usize,
    pub num_heads: usize,
    pub rope_theta: f64,
}

impl Dinov3Config {
    /// A randomly initialised model (LayerScale set to `layerscale_value`); load real weights with
    /// [`super::load_pretrained`].
    ///
    /// # Panics
    /// If the config is invalid (see [`Dinov3Config::validate`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Dinov3<B> {
        if let Err(e) = self.validate() {
            panic!("invalid DINOv3 config: {e}");
        }
        let d = self.hidden_size;
        let linear = |i: usize, o: usize, bias: bool| LinearConfig::new(i, o).with_bias(bias).init(device);
        let norm = || LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps).init(device);
        let scale = || Param::from_tensor(Tensor::full([d], self.layerscale_value, device));
        let token = |n: usize| Param::from_tensor(Tensor::random([1, n, d], Distribution::Normal(0.0, 0.02), device));
        let silu = self.activation().map(|a| a == Activation::Silu).unwrap_or(false);
        let layers = (0..self.num_hidden_layers)
            .map(|_| Dinov3Layer {
                norm1: norm(),
                attention: Dinov3Attention {
                    q_proj: linear(d, d, self.query_bias),
                    k_proj: linear(d, d, self.key_bias),
                    v_proj: linear(d, d, self.value_bias),
                    o_proj: linear(d, d, self.proj_bias),
                    num_heads: self.num_attention_heads,
                },
                layer_scale1: scale(),
                norm2: norm(),
                mlp: Dinov3Mlp {
                    gate_proj: self.use_gated_mlp.then(|| linear(d, self.intermediate_size, self.mlp_bias)),
                    up_proj: linear(d, self.intermediate_size, self.mlp_bias),
                    down_proj: linear(self.intermediate_size, d, self.mlp_bias),
                    silu,
                },
                layer_scale2: scale(),
            })
            .collect();
        Dinov3 {
            patch_embed: linear(self.num_channels * self.patch_size * self.patch_size, d, true),
            cls_token: token(1),
            register_tokens: (self.num_register_tokens > 0).then(|| token(self.num_register_tokens)),
            layers,
            norm: norm(),
            patch_size: self.patch_size,
            num_channels: self.num_channels,
            num_heads: self.num_attention_heads,
            rope_theta: self.rope_theta,
        }
    }
}

impl<B: Backend> Dinov3<B> {
    /// Token width `D`.
    pub fn hidden_size(&self) -> usize {
        self.cls_token.dims()[2]
    }

    /// CLS plus registers.
    pub fn num_prefix_tokens(&self) -> usize {
        1 + self.register_tokens.as_ref().map_or(0, |r| r.dims()[1])
    }

    /// Embedding output: `[CLS, registers, patches]` (HF `DINOv3ViTEmbeddings` without a mask).
    ///
    /// # Shapes
    /// - `pixels`: `[batch, C, H, W]`
    /// - output: `[batch, 1 + R + (H/p)·(W/p), D]`, and the grid `(H/p, W/p)`
    ///
    /// # Panics
    /// If `C` differs from the config's `num_channels` or `H` or `W` is smaller than the patch.
    pub fn embed(&self, pixels: Tensor<B, 4>) -> (Tensor<B, 3>, (usize, usize)) {
        let [b, c, h, w] = pixels.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let d = self.hidden_size();
        let pixels = if gh * p != h || gw * p != w { pixels.slice([0..b, 0..c, 0..gh * p, 0..gw * p]) } else { pixels };
        let patches = pixels
            .reshape([b, c, gh, p, gw, p]) // [b, c, gh, ky, gw, kx]
            .permute([0, 2, 4, 1, 3, 5]) // [b, gh, gw, c, ky, kx]
            .reshape([b, gh * gw, c * p * p]); // [b, N, c·p·p]
        let patches = self.patch_embed.forward(patches); // [b, N, D]
        let mut tokens = vec![self.cls_token.val().expand([b, 1, d])]; // [b, 1, D]
        if let Some(reg) = &self.register_tokens {
            let r = reg.dims()[1];
            tokens.push(reg.val().expand([b, r, d])); // [b, R, D]
        }
        tokens.push(patches);
        (Tensor::cat(tokens, 1), (gh, gw)) // [b, 1 + R + N, D]
    }

    /// Full forward pass returning every hidden state.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, C, H, W]` (normalised as by [`super::preprocess`])
    /// - `last_hidden_state` and each hidden state: `[batch, 1 + R + (H/p)·(W/p), D]`
    pub fn forward_with_hidden_states(&self, pixels: Tensor<B, 4>) -> Dinov3Output<B> {
        let device = pixels.device();
        let (mut x, (gh, gw)) = self.embed(pixels); // [b, T, D]
        let head_dim = self.hidden_size() / self.num_heads;
        let rope = Rope::new(gh, gw, head_dim, self.rope_theta, &device); // [1, 1, N, hd]
        let prefix = self.num_prefix_tokens();
        let mut hidden_states = Vec::with_capacity(self.layers.len() + 1);
        hidden_states.push(x.clone());
        for layer in &self.layers {
            x = layer.forward(x, &rope, prefix); // [b, T, D]
            hidden_states.push(x.clone());
        }
        Dinov3Output { last_hidden_state: self.norm.forward(x), hidden_states, grid: (gh, gw) }
    }

    /// `last_hidden_state`.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, C, H, W]`
    /// - output: `[batch, 1 + R + (H/p)·(W/p), D]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let device = pixels.device();
        let (mut x, (gh, gw)) = self.embed(pixels); // [b, T, D]
        let rope = Rope::new(gh, gw, self.hidden_size() / self.num_heads, self.rope_theta, &device);
        let prefix = self.num_prefix_tokens();
        for layer in &self.layers {
            x = layer.forward(x, &rope, prefix); // [b, T, D]
        }
        self.norm.forward(x) // [b, T, D]
    }

    /// Normalised patch tokens as a grid (CLS and registers dropped).
    ///
    /// # Shapes
    /// - `pixels`: `[batch, C, H, W]`
    /// - output: `[batch, H/p, W/p, D]`, `[b, y, x, c]`
    pub fn patch_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = pixels.dims();
        let (gh, gw) = (h / self.patch_size, w / self.patch_size);
        let out = self.forward(pixels); // [b, T, D]
        let [b, t, d] = out.dims();
        out.slice([0..b, self.num_prefix_tokens()..t, 0..d]).reshape([b, gh, gw, d])
        // [b, gh, gw, D]
    }
}
