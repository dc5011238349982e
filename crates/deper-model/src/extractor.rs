//! Subject-embedding extractor of DEPER (Xue et al., CVPR 2026, arXiv 2512.06662).
//!
//! From `Z_dual` it draws two vectors:
//! - `z_s`, the subject embedding: `n_subject_queries` learned queries cross-attend `Z_dual`
//!   (masked); attention pooling over the queries (score = mean over channels of `tanh`,
//!   softmax over the queries) gives one vector; then `LN → Linear → GELU → Linear`.
//! - `z_scan`, the scanpath latent: one more learned query, the same cross-attention form and
//!   its own `LN → Linear → GELU → Linear`. With `n_scan_queries > 1` (a departure from the
//!   authors' code, off by default) there are that many scan queries and `z_scan` is a set of
//!   tokens, each through the same head: one query's attention picks out about one token per head,
//!   so a single `z_scan` carries only a few of a trajectory's steps (`examples/scan_capacity.rs`).
//!
//! A linear classifier maps `z_s` to subject logits. This follows `ScanAutoEncoder` in the
//! authors' `src/model.py` (commit 1526bed): `subj_query_tokens`, `pool_subj_cross`,
//! `z_subj_mlp`, `scan_query_token`, `pool_scan_cross`, `z_scan_mlp`, `classifier`.

use burn::module::{Initializer, Param};
use burn::nn::{Gelu, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::layers::{AttentionBlock, AttentionBlockConfig};

/// Config of [`SubjectExtractor`].
#[derive(Config, Debug)]
pub struct SubjectExtractorConfig {
    /// Token width.
    #[config(default = 384)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Subjects the classifier knows.
    pub num_subjects: usize,
    /// Learned queries pooled into `z_s` (the authors' `num_subj_tokens`, default 1).
    #[config(default = 1)]
    pub n_subject_queries: usize,
    /// Learned queries whose outputs form `z_scan` (1 in the authors' code).
    #[config(default = 1)]
    pub n_scan_queries: usize,
    /// Dropout.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// `LN → Linear → GELU → Linear`.
#[derive(Module, Debug)]
pub struct ProjectionHead<B: Backend> {
    norm: LayerNorm<B>,
    linear1: Linear<B>,
    activation: Gelu,
    linear2: Linear<B>,
}

impl<B: Backend> ProjectionHead<B> {
    fn new(d: usize, device: &B::Device) -> Self {
        Self {
            norm: LayerNormConfig::new(d).init(device),
            linear1: LinearConfig::new(d, d).init(device),
            activation: Gelu::new(),
            linear2: LinearConfig::new(d, d).init(device),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, d]`, output: `[batch, d]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear2.forward(self.activation.forward(self.linear1.forward(self.norm.forward(x))))
    }
}

/// The extractor; see the module docs.
#[derive(Module, Debug)]
pub struct SubjectExtractor<B: Backend> {
    /// `[n_subject_queries, d]`.
    subject_queries: Param<Tensor<B, 2>>,
    /// `[n_scan_queries, d]`.
    scan_query: Param<Tensor<B, 2>>,
    subject_attn: AttentionBlock<B>,
    scan_attn: AttentionBlock<B>,
    subject_head: ProjectionHead<B>,
    scan_head: ProjectionHead<B>,
    classifier: Linear<B>,
}

impl SubjectExtractorConfig {
    /// Builds the extractor; queries start from N(0, 1) like the authors' `torch.randn`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SubjectExtractor<B> {
        let d = self.d_model;
        let normal = Initializer::Normal { mean: 0.0, std: 1.0 };
        let attn = AttentionBlockConfig::new(d, self.n_heads).with_dropout(self.dropout);
        SubjectExtractor {
            subject_queries: normal.init([self.n_subject_queries, d], device),
            scan_query: normal.init([self.n_scan_queries, d], device),
            subject_attn: attn.init(device),
            scan_attn: attn.init(device),
            subject_head: ProjectionHead::new(d, device),
            scan_head: ProjectionHead::new(d, device),
            classifier: LinearConfig::new(d, self.num_subjects).init(device),
        }
    }
}

/// What the extractor produces.
#[derive(Debug, Clone)]
pub struct SubjectLatents<B: Backend> {
    /// `[batch, d]`.
    pub z_s: Tensor<B, 2>,
    /// `[batch, n_scan_queries, d]`.
    pub z_scan: Tensor<B, 3>,
    /// `[batch, num_subjects]`.
    pub subject_logits: Tensor<B, 2>,
}

impl<B: Backend> SubjectExtractor<B> {
    /// # Shapes
    /// - `z_dual`: `[batch, len, d]`, `mask`: `[batch, len]` (`true` = valid)
    /// - outputs: `z_s` `[batch, d]`, `z_scan` `[batch, n_scan_queries, d]`, `subject_logits`
    ///   `[batch, num_subjects]`
    pub fn forward(&self, z_dual: Tensor<B, 3>, mask: Tensor<B, 2, Bool>) -> SubjectLatents<B> {
        let [batch, _, d] = z_dual.dims();
        let pad = mask.bool_not(); // [batch, len]

        let [n_q, _] = self.subject_queries.dims();
        let queries = self.subject_queries.val().reshape([1, n_q, d]).expand([batch, n_q, d]);
        let pooled = self.subject_attn.forward_cross(queries, z_dual.clone(), Some(pad.clone())); // [batch, n_q, d]
        let scores = softmax(pooled.clone().tanh().mean_dim(2), 1); // [batch, n_q, 1]
        let z_s = (pooled * scores).sum_dim(1).reshape([batch, d]); // [batch, d]
        let z_s = self.subject_head.forward(z_s);

        let [n_scan, _] = self.scan_query.dims();
        let queries = self.scan_query.val().reshape([1, n_scan, d]).expand([batch, n_scan, d]);
        let z_scan = self.scan_attn.forward_cross(queries, z_dual, Some(pad)); // [batch, n_scan, d]
        let z_scan = self.scan_head.forward(z_scan.reshape([batch * n_scan, d])).reshape([batch, n_scan, d]);

        let subject_logits = self.classifier.forward(z_s.clone()); // [batch, num_subjects]
        SubjectLatents { z_s, z_scan, subject_logits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestBackend = burn::backend::NdArray;

    #[test]
    fn latents_have_expected_shapes() {
        let device = Default::default();
        for n_q in [1, 3] {
            let ext = SubjectExtractorConfig::new(5)
                .with_d_model(32)
                .with_n_heads(2)
                .with_n_subject_queries(n_q)
                .init::<TestBackend>(&device);
            let z = Tensor::<TestBackend, 3>::random([2, 9, 32], burn::tensor::Distribution::Default, &device);
            let mask = Tensor::<TestBackend, 2, Bool>::from_data(
                TensorData::new((0..18).map(|i| i % 9 < 6).collect::<Vec<_>>(), [2, 9]),
                &device,
            );
            let out = ext.forward(z, mask);
            assert_eq!(out.z_s.dims(), [2, 32]);
            assert_eq!(out.z_scan.dims(), [2, 1, 32]);
            assert_eq!(out.subject_logits.dims(), [2, 5]);
        }
    }
}
