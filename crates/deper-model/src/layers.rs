//! Post-LN residual attention blocks shared by the DEPER encoder, extractor and decoder.
//!
//! These follow the `SelfAttentionLayer`, `CrossAttentionLayer` and `FFNLayer` of the authors'
//! code (Xue et al., CVPR 2026, `src/model_utils.py` at commit 1526bed of
//! cvlab-stonybrook/Personalized-Image-Description), used there with `normalize_before=False`:
//! `x ← LN(x + Dropout(Attn(x, …)))` and `x ← LN(x + Dropout(W₂·Dropout(ReLU(W₁·x))))`,
//! the post-LN form of PyTorch's `nn.TransformerDecoderLayer`. The FFN width equals `d_model`
//! there (`dim_feedforward=D`); here it is a config field with that default.
//!
//! Attention is burn's [`MultiHeadAttention`]; its padding mask is `true` for padded keys.

use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;

/// Config of a post-LN residual attention block (self- or cross-attention).
#[derive(Config, Debug)]
pub struct AttentionBlockConfig {
    /// Width of the tokens.
    pub d_model: usize,
    /// Number of attention heads.
    pub n_heads: usize,
    /// Dropout on the attention scores and on the residual branch.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// `x ← LN(x + Dropout(MHA(q = x, k = v = memory)))`; self-attention when `memory` is `x`.
#[derive(Module, Debug)]
pub struct AttentionBlock<B: Backend> {
    attn: MultiHeadAttention<B>,
    norm: LayerNorm<B>,
    dropout: Dropout,
}

impl AttentionBlockConfig {
    /// Builds the block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> AttentionBlock<B> {
        AttentionBlock {
            attn: MultiHeadAttentionConfig::new(self.d_model, self.n_heads).with_dropout(self.dropout).init(device),
            norm: LayerNormConfig::new(self.d_model).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl<B: Backend> AttentionBlock<B> {
    /// Self-attention over `x` with an optional key padding mask.
    ///
    /// # Shapes
    /// - `x`: `[batch, len, d_model]`
    /// - `pad`: `[batch, len]`, `true` = padded key
    /// - output: `[batch, len, d_model]`
    pub fn forward_self(&self, x: Tensor<B, 3>, pad: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        self.forward_cross(x.clone(), x, pad)
    }

    /// Cross-attention from `x` to `memory` with an optional key padding mask on `memory`.
    ///
    /// # Shapes
    /// - `x`: `[batch, len_q, d_model]`
    /// - `memory`: `[batch, len_k, d_model]`
    /// - `pad`: `[batch, len_k]`, `true` = padded key
    /// - output: `[batch, len_q, d_model]`
    pub fn forward_cross(
        &self,
        x: Tensor<B, 3>,
        memory: Tensor<B, 3>,
        pad: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        let mut input = MhaInput::new(x.clone(), memory.clone(), memory);
        if let Some(pad) = pad {
            input = input.mask_pad(pad);
        }
        let attended = self.attn.forward(input).context; // [batch, len_q, d_model]
        self.norm.forward(x + self.dropout.forward(attended))
    }
}

/// Config of a post-LN feed-forward block.
#[derive(Config, Debug)]
pub struct FfnBlockConfig {
    /// Width of the tokens.
    pub d_model: usize,
    /// Hidden width (the authors use `d_model`).
    pub d_ff: usize,
    /// Dropout inside and after the FFN.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// `x ← LN(x + Dropout(W₂·Dropout(ReLU(W₁·x))))`.
#[derive(Module, Debug)]
pub struct FfnBlock<B: Backend> {
    linear1: Linear<B>,
    linear2: Linear<B>,
    activation: Relu,
    norm: LayerNorm<B>,
    dropout: Dropout,
}

impl FfnBlockConfig {
    /// Builds the block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> FfnBlock<B> {
        FfnBlock {
            linear1: LinearConfig::new(self.d_model, self.d_ff).init(device),
            linear2: LinearConfig::new(self.d_ff, self.d_model).init(device),
            activation: Relu::new(),
            norm: LayerNormConfig::new(self.d_model).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl<B: Backend> FfnBlock<B> {
    /// # Shapes
    /// - `x`: `[batch, len, d_model]`
    /// - output: `[batch, len, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.activation.forward(self.linear1.forward(x.clone())); // [batch, len, d_ff]
        let h = self.linear2.forward(self.dropout.forward(h)); // [batch, len, d_model]
        self.norm.forward(x + self.dropout.forward(h))
    }
}

/// Sets the rows of `x` where `pad` is `true` to zero, as the authors do after each encoder
/// sub-block so padded tokens carry nothing.
///
/// # Shapes
/// - `x`: `[batch, len, d_model]`, `pad`: `[batch, len]`
pub fn zero_padded<B: Backend>(x: Tensor<B, 3>, pad: &Tensor<B, 2, Bool>) -> Tensor<B, 3> {
    let [batch, len, d] = x.dims();
    let mask = pad.clone().reshape([batch, len, 1]).expand([batch, len, d]);
    x.mask_fill(mask, 0.0)
}

/// A `[batch, len]` mask holding `value` everywhere, e.g. "no padding" for the image patches.
pub fn uniform_mask<B: Backend>(batch: usize, len: usize, value: bool, device: &B::Device) -> Tensor<B, 2, Bool> {
    Tensor::from_data(TensorData::new(vec![value; batch * len], [batch, len]), device)
}

/// Interleaved sinusoidal encoding of scalar positions: dimension `2i` holds
/// `sin(p·ω_i)`, `2i+1` holds `cos(p·ω_i)`, `ω_i = 10000^(−2i/dim)` (Vaswani et al.;
/// the layout of the authors' `PositionalEncoding1D` and `get_duration_positional_encoding`).
///
/// # Shapes
/// - `pos`: `[batch, len]`
/// - output: `[batch, len, dim]` (`dim` even)
pub fn sinusoidal<B: Backend>(pos: Tensor<B, 2>, dim: usize) -> Tensor<B, 3> {
    let [batch, len] = pos.dims();
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half).map(|i| (-(10000f64.ln()) * (2 * i) as f64 / dim as f64).exp() as f32).collect();
    let freqs = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), &pos.device()).reshape([1, 1, half]);
    let angles = pos.reshape([batch, len, 1]) * freqs; // [batch, len, half]
    Tensor::stack::<4>(vec![angles.clone().sin(), angles.cos()], 3).reshape([batch, len, dim])
}
