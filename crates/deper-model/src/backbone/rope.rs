//! 2-D rotary position embedding of DINOv3 ViT.
//!
//! Matches `DINOv3ViTRopePositionEmbedding`, `rotate_half` and `apply_rotary_pos_emb` of HF
//! `DINOv3ViTModel` (transformers 5.24.0, `models/dinov3_vit/modeling_dinov3_vit.py`), in eval mode:
//!
//! - patch-centre coordinates in [-1, 1]: `c = ((i + 0.5) / n) * 2 - 1` (division first, as HF);
//! - `inv_freq[j] = 1 / theta^(4j / head_dim)` for `j < head_dim / 4`;
//! - `angles = 2π · [cy·inv_freq, cx·inv_freq]` (all y-frequencies, then all x), tiled twice to
//!   `head_dim`;
//! - non-interleaved rotation `x·cos + rotate_half(x)·sin`, `rotate_half(x) = [-x₂, x₁]`, applied to
//!   the patch tokens only (CLS and registers pass unrotated).
//!
//! The training-only coordinate augmentations (shift, jitter, rescale) are not implemented.
//! Tables are computed on the host in f32 in the same order of operations as HF.

use burn::prelude::*;

/// `cos` and `sin` tables, each `[gh * gw, head_dim]` (row-major patch order), as plain f32.
pub fn rope_tables(grid_h: usize, grid_w: usize, head_dim: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let quarter = head_dim / 4;
    // torch: 1 / base ** arange(0, 1, 4 / head_dim) in float32.
    let inv_freq: Vec<f32> =
        (0..quarter).map(|j| 1.0 / (theta as f32).powf(j as f32 * (4.0 / head_dim as f32))).collect();
    // torch: arange(0.5, n) / n, then 2c - 1.
    let coord = |i: usize, n: usize| ((i as f32 + 0.5) / n as f32) * 2.0 - 1.0;
    let two_pi = 2.0 * std::f32::consts::PI;
    let n = grid_h * grid_w;
    let mut cos = Vec::with_capacity(n * head_dim);
    let mut sin = Vec::with_capacity(n * head_dim);
    let mut angles = vec![0f32; head_dim / 2];
    for y in 0..grid_h {
        for x in 0..grid_w {
            let (cy, cx) = (coord(y, grid_h), coord(x, grid_w));
            for (j, f) in inv_freq.iter().enumerate() {
                angles[j] = two_pi * cy * f;
                angles[quarter + j] = two_pi * cx * f;
            }
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
    }
    (cos, sin)
}

/// The RoPE tables for one patch grid, on a device.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    /// `[1, 1, gh * gw, head_dim]`
    pub cos: Tensor<B, 4>,
    /// `[1, 1, gh * gw, head_dim]`
    pub sin: Tensor<B, 4>,
}

impl<B: Backend> Rope<B> {
    /// Tables for a `grid_h × grid_w` patch grid.
    pub fn new(grid_h: usize, grid_w: usize, head_dim: usize, theta: f64, device: &B::Device) -> Self {
        let (cos, sin) = rope_tables(grid_h, grid_w, head_dim, theta);
        let shape = [1, 1, grid_h * grid_w, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// Rotates the patch tokens of `x`, leaving the first `num_prefix` tokens untouched.
    ///
    /// # Shapes
    /// - `x`: `[batch, heads, num_prefix + gh * gw, head_dim]`
    /// - output: same
    pub fn apply(&self, x: Tensor<B, 4>, num_prefix: usize) -> Tensor<B, 4> {
        let [b, h, t, d] = x.dims();
        let prefix = x.clone().slice([0..b, 0..h, 0..num_prefix, 0..d]); // [b, h, P, d]
        let patches = x.slice([0..b, 0..h, num_prefix..t, 0..d]); // [b, h, N, d]
        let (first, second) = (patches.clone().narrow(3, 0, d / 2), patches.clone().narrow(3, d / 2, d / 2));
        let rotated = Tensor::cat(vec![-second, first], 3); // [b, h, N, d] = rotate_half(patches)
        let patches = patches * self.cos.clone() + rotated * self.sin.clone(); // [b, h, N, d]
        Tensor::cat(vec![prefix, patches], 2)
    }
}
