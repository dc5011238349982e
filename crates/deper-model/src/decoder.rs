//! Non-autoregressive trajectory decoder of DEPER (Xue et al., CVPR 2026, arXiv 2512.06662).
//!
//! All 30 steps are decoded at once. Queries are learned step embeddings plus `z_scan` (the
//! mean of its tokens when the extractor has several scan queries); each of the `n_layers`
//! layers applies, in order (post-LN blocks):
//! 1. non-causal self-attention over the steps,
//! 2. cross-attention to `z_scan` as a memory (one token in the authors' code),
//! 3. cross-attention to the context `[V; L]` (caption padding masked),
//! 4. FiLM from the subject embedding: `x ← x·(1 + γ) + β`, `(γ, β) = tanh(Linear(LN(z_s)))`
//!    with one `(γ, β)` pair per layer from a single `LN → Linear(D, 2·layers·D)` adapter,
//! 5. an FFN.
//!
//! A `Linear(D, 5)` head gives four box logits and a validity logit per step. The box is
//! `sigmoid` of the first four, sorted per axis (`x1 = min`, `x2 = max` of the two predicted x
//! coordinates, likewise y), so `0 ≤ x1 ≤ x2 ≤ 1` and `0 ≤ y1 ≤ y2 ≤ 1`; the validity logit is
//! kept for BCE-with-logits. This follows `_decoder_parallel` and `_outputs_and_loss` in the
//! authors' `src/model.py` (commit 1526bed), without their 1e-6 minimum box size.

use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use crate::layers::{uniform_mask, AttentionBlock, AttentionBlockConfig, FfnBlock, FfnBlockConfig};

/// Config of [`TrajectoryDecoder`].
#[derive(Config, Debug)]
pub struct TrajectoryDecoderConfig {
    /// Token width.
    #[config(default = 384)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Decoder layers.
    #[config(default = 4)]
    pub n_layers: usize,
    /// FFN hidden width (the authors use `d_model`).
    #[config(default = 384)]
    pub d_ff: usize,
    /// Steps decoded (the paper's 30).
    #[config(default = 30)]
    pub n_steps: usize,
    /// Dropout.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// One decoder layer (FiLM parameters come from the decoder's shared adapter).
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    self_attn: AttentionBlock<B>,
    latent_attn: AttentionBlock<B>,
    context_attn: AttentionBlock<B>,
    ffn: FfnBlock<B>,
}

/// The decoder; see the module docs.
#[derive(Module, Debug)]
pub struct TrajectoryDecoder<B: Backend> {
    step_queries: Embedding<B>,
    layers: Vec<DecoderLayer<B>>,
    film_norm: LayerNorm<B>,
    film: Linear<B>,
    head: Linear<B>,
}

impl TrajectoryDecoderConfig {
    /// Builds the decoder.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TrajectoryDecoder<B> {
        let d = self.d_model;
        let attn = AttentionBlockConfig::new(d, self.n_heads).with_dropout(self.dropout);
        let layers = (0..self.n_layers)
            .map(|_| DecoderLayer {
                self_attn: attn.init(device),
                latent_attn: attn.init(device),
                context_attn: attn.init(device),
                ffn: FfnBlockConfig::new(d, self.d_ff).with_dropout(self.dropout).init(device),
            })
            .collect();
        TrajectoryDecoder {
            step_queries: EmbeddingConfig::new(self.n_steps, d).init(device),
            layers,
            film_norm: LayerNormConfig::new(d).init(device),
            film: LinearConfig::new(d, 2 * self.n_layers * d).init(device),
            head: LinearConfig::new(d, 5).init(device),
        }
    }
}

/// Decoded trajectory.
#[derive(Debug, Clone)]
pub struct DecodedTrajectory<B: Backend> {
    /// `[batch, n_steps, 4]`: `x1, y1, x2, y2` in `[0, 1]`, `x1 ≤ x2`, `y1 ≤ y2`.
    pub boxes: Tensor<B, 3>,
    /// `[batch, n_steps]`: validity logits (`sigmoid` gives the probability).
    pub valid_logits: Tensor<B, 2>,
}

impl<B: Backend> TrajectoryDecoder<B> {
    /// # Shapes
    /// - `z_s`: `[batch, d]`, `z_scan`: `[batch, n_scan, d]`
    /// - `context`: `[batch, len, d]` (`[V; L]`), `context_mask`: `[batch, len]` (`true` = valid)
    /// - outputs: boxes `[batch, n_steps, 4]`, validity logits `[batch, n_steps]`
    pub fn forward(
        &self,
        z_s: Tensor<B, 2>,
        z_scan: Tensor<B, 3>,
        context: Tensor<B, 3>,
        context_mask: Tensor<B, 2, Bool>,
    ) -> DecodedTrajectory<B> {
        let [batch, d] = z_s.dims();
        let [n_steps, _] = self.step_queries.weight.dims();
        let n_layers = self.layers.len();
        let device = z_s.device();

        let [_, n_scan, _] = z_scan.dims();
        let latent = z_scan; // [batch, n_scan, d]
        let latent_pad = uniform_mask::<B>(batch, n_scan, false, &device); // [batch, n_scan]
        let context_pad = context_mask.bool_not(); // [batch, len]
        let film = self.film.forward(self.film_norm.forward(z_s)).tanh().reshape([batch, 2, n_layers, d]);

        // Exact for one scan token (a mean over one element), so the authors' form is unchanged.
        let mut x = self.step_queries.weight.val().reshape([1, n_steps, d]) + latent.clone().mean_dim(1); // [batch, n_steps, d]
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.self_attn.forward_self(x, None);
            x = layer.latent_attn.forward_cross(x, latent.clone(), Some(latent_pad.clone()));
            x = layer.context_attn.forward_cross(x, context.clone(), Some(context_pad.clone()));
            let gamma = film.clone().slice([0..batch, 0..1, i..i + 1, 0..d]).reshape([batch, 1, d]);
            let beta = film.clone().slice([0..batch, 1..2, i..i + 1, 0..d]).reshape([batch, 1, d]);
            x = x * gamma.add_scalar(1.0) + beta; // [batch, n_steps, d]
            x = layer.ffn.forward(x);
        }

        let out = self.head.forward(x); // [batch, n_steps, 5]
        let coords = sigmoid(out.clone().slice_dim(2, 0..4)); // [batch, n_steps, 4]
        let (xa, ya) = (coords.clone().slice_dim(2, 0..1), coords.clone().slice_dim(2, 1..2));
        let (xb, yb) = (coords.clone().slice_dim(2, 2..3), coords.slice_dim(2, 3..4));
        let boxes = Tensor::cat(
            vec![xa.clone().min_pair(xb.clone()), ya.clone().min_pair(yb.clone()), xa.max_pair(xb), ya.max_pair(yb)],
            2,
        );
        let valid_logits = out.slice_dim(2, 4..5).reshape([batch, n_steps]);
        DecodedTrajectory { boxes, valid_logits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestBackend = burn::backend::NdArray;

    #[test]
    fn boxes_are_ordered_and_inside_the_unit_square() {
        let device = Default::default();
        let dec = TrajectoryDecoderConfig::new()
            .with_d_model(32)
            .with_n_heads(2)
            .with_d_ff(32)
            .with_n_layers(2)
            .init(&device);
        let dist = burn::tensor::Distribution::Normal(0.0, 3.0);
        let z_s = Tensor::<TestBackend, 2>::random([3, 32], dist, &device);
        let z_scan = Tensor::<TestBackend, 3>::random([3, 2, 32], dist, &device);
        let ctx = Tensor::<TestBackend, 3>::random([3, 20, 32], dist, &device);
        let mask = Tensor::<TestBackend, 2, Bool>::from_data(
            TensorData::new((0..60).map(|i| i % 20 < 17).collect::<Vec<_>>(), [3, 20]),
            &device,
        );
        let out = dec.forward(z_s, z_scan, ctx, mask);
        assert_eq!(out.boxes.dims(), [3, 30, 4]);
        assert_eq!(out.valid_logits.dims(), [3, 30]);
        let b: Vec<f32> = out.boxes.into_data().to_vec().unwrap();
        for bx in b.chunks(4) {
            assert!(bx.iter().all(|v| (0.0..=1.0).contains(v)), "{bx:?}");
            assert!(bx[0] <= bx[2] && bx[1] <= bx[3], "{bx:?}");
        }
    }
}
