//! The Idefics3 vision encoder (SigLIP with NaViT-style position ids) and its pixel-shuffle connector.
//!
//! Key characteristics:
//! - patch embedding: a Conv2d with bias whose kernel equals its stride, i.e. a Linear over each
//!   patch flattened as `(channel, y, x)`; patches in row-major order;
//! - learned position embeddings for a `(image_size / patch)²` grid. A tile with `h × w` valid patches
//!   (from the pixel attention mask) maps patch `(i, j)` to bucket `(⌊i/h⌋, ⌊j/w⌋)` of that grid,
//!   computed in f32 and bucketised exactly as transformers does ([`position_ids`]); padded patches get
//!   position 0 and are masked out as attention keys;
//! - pre-LN encoder layers (LayerNorm with biases, attention with biased q/k/v/out projections,
//!   bidirectional, MLP with tanh-approximated GELU), then `post_layernorm`;
//! - connector: pixel shuffle by `scale_factor` (each `scale × scale` block of patches is concatenated
//!   into one vector, in transformers' order) and a bias-free Linear to the text hidden size.
//!
//! Reference: transformers `models/idefics3/modeling_idefics3.py` (`Idefics3VisionEmbeddings`,
//! `Idefics3VisionTransformer`, `Idefics3Connector`), checked against `tests/fixtures/idefics3_tiny`.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu_approximate, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::config::{Idefics3Config, Idefics3VisionConfig};
use crate::{Result, VlmError};

/// Self-attention with biased projections.
#[derive(Module, Debug)]
pub struct SiglipAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub num_heads: usize,
}

/// One pre-LN encoder layer.
#[derive(Module, Debug)]
pub struct SiglipEncoderLayer<B: Backend> {
    pub layer_norm1: LayerNorm<B>,
    pub self_attn: SiglipAttention<B>,
    pub layer_norm2: LayerNorm<B>,
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

/// Patch + position embeddings, encoder layers and the final LayerNorm.
#[derive(Module, Debug)]
pub struct SiglipVision<B: Backend> {
    /// Conv2d as a Linear `[channels·patch², hidden]` with bias.
    pub patch_embedding: Linear<B>,
    /// `[(image_size / patch)², hidden]`.
    pub position_embedding: Embedding<B>,
    pub layers: Vec<SiglipEncoderLayer<B>>,
    pub post_layernorm: LayerNorm<B>,
    pub patch_size: usize,
    pub num_channels: usize,
    pub patches_per_side: usize,
}

/// Pixel shuffle and the modality projection.
#[derive(Module, Debug)]
pub struct Connector<B: Backend> {
    /// `modality_projection.proj`: `[hidden_vision·scale², hidden_text]`, no bias.
    pub proj: Linear<B>,
    pub scale_factor: usize,
}

/// Intermediate outputs, for parity tests.
#[derive(Debug, Clone)]
pub struct VisionOutputs<B: Backend> {
    /// `[N, patches, hidden]` patch + position embeddings.
    pub embeddings: Tensor<B, 3>,
    /// `[N, patches, hidden]` after `post_layernorm`.
    pub last_hidden_state: Tensor<B, 3>,
}

impl Idefics3VisionConfig {
    /// A randomly initialised encoder (for shapes and tests; real weights come from the loader).
    pub fn init<B: Backend>(&self, device: &B::Device) -> SiglipVision<B> {
        let e = self.hidden_size;
        let ln = || LayerNormConfig::new(e).with_epsilon(self.layer_norm_eps).init(device);
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        let side = self.patches_per_side();
        SiglipVision {
            patch_embedding: lin(self.patch_dim(), e),
            position_embedding: EmbeddingConfig::new(side * side, e).init(device),
            layers: (0..self.num_hidden_layers)
                .map(|_| SiglipEncoderLayer {
                    layer_norm1: ln(),
                    self_attn: SiglipAttention {
                        q_proj: lin(e, e),
                        k_proj: lin(e, e),
                        v_proj: lin(e, e),
                        out_proj: lin(e, e),
                        num_heads: self.num_attention_heads,
                    },
                    layer_norm2: ln(),
                    fc1: lin(e, self.intermediate_size),
                    fc2: lin(self.intermediate_size, e),
                })
                .collect(),
            post_layernorm: ln(),
            patch_size: self.patch_size,
            num_channels: self.num_channels,
            patches_per_side: side,
        }
    }
}

impl Idefics3Config {
    /// A randomly initialised connector.
    pub fn init_connector<B: Backend>(&self, device: &B::Device) -> Connector<B> {
        let s2 = self.scale_factor * self.scale_factor;
        Connector {
            proj: LinearConfig::new(self.vision.hidden_size * s2, self.text.hidden_size).with_bias(false).init(device),
            scale_factor: self.scale_factor,
        }
    }
}

/// Position ids of one tile of `rows × cols` patches whose valid region is `valid_rows × valid_cols`
/// (a top-left rectangle, as the processor pads at the bottom and right), on a grid of `side × side`
/// learned positions.
///
/// As transformers computes it: boundaries `torch.arange(1/side, 1.0, 1/side)` in f32, fractional
/// coordinates `i · f32(1 / valid)` clamped to `1 - 1e-6`, and `bucketize(right=True)`. Full tiles
/// therefore do not always get the plain range: for some `side` (19, 25, …) a coordinate lands an ulp
/// below its boundary and repeats the previous bucket, and this reproduces that.
pub fn position_ids(rows: usize, cols: usize, valid_rows: usize, valid_cols: usize, side: usize) -> Vec<i64> {
    let boundaries = arange_boundaries(side);
    let buckets = |n: usize, valid: usize| -> Vec<i64> {
        let step = 1.0f32 / valid.max(1) as f32;
        (0..n)
            .map(|i| {
                let frac = (i as f32 * step).min(1.0f32 - 1e-6);
                boundaries.iter().filter(|&&b| b <= frac).count() as i64
            })
            .collect()
    };
    let (bh, bw) = (buckets(rows, valid_rows), buckets(cols, valid_cols));
    let mut ids = Vec::with_capacity(rows * cols);
    for (i, h) in bh.iter().enumerate() {
        for (j, w) in bw.iter().enumerate() {
            let valid = i < valid_rows && j < valid_cols;
            ids.push(if valid { h * side as i64 + w } else { 0 });
        }
    }
    ids
}

/// `torch.arange(1/n, 1.0, 1/n)` in f32 as torch's CPU kernel produces it: the length is
/// `ceil((1 - 1/n) / (1/n))`; blocks of 16 elements are written as two vectors of 8, each element
/// `f32(f64(f32(start + step·k)) + j·step)` from the vector's first index `k`; the rest one by one as
/// `f32(start + step·i)`. Rounding differs from the exact `i/n` by an ulp at places, and those ulps
/// decide buckets for full tiles.
fn arange_boundaries(n: usize) -> Vec<f32> {
    let step = 1.0 / n as f64;
    let len = ((1.0 - step) / step).ceil().max(0.0) as usize;
    let vectorised = len / 16 * 16;
    (0..len)
        .map(|i| {
            if i < vectorised {
                let k = i / 8 * 8;
                let base = (step + step * k as f64) as f32;
                (f64::from(base) + step * (i - k) as f64) as f32
            } else {
                (step + step * i as f64) as f32
            }
        })
        .collect()
}

impl<B: Backend> SiglipVision<B> {
    /// Last hidden states of every tile.
    ///
    /// # Shapes
    /// - pixel_values: `[N, channels, H, W]` with H, W multiples of the patch size
    /// - valid: per tile, the `(rows, cols)` of valid patches (top-left), or `None` for full tiles
    /// - output: `[N, (H/p)·(W/p), hidden]`
    pub fn forward(&self, pixel_values: Tensor<B, 4>, valid: Option<&[(usize, usize)]>) -> Result<VisionOutputs<B>> {
        let [n, c, h, w] = pixel_values.dims();
        let p = self.patch_size;
        if c != self.num_channels || h % p != 0 || w % p != 0 || h == 0 || w == 0 {
            return Err(VlmError::Input(format!(
                "pixel_values are [{n}, {c}, {h}, {w}]; expected [N, {}, H, W] with H and W multiples of {p}",
                self.num_channels
            )));
        }
        let (rows, cols) = (h / p, w / p);
        let s = rows * cols;
        let device = pixel_values.device();
        let valid: Vec<(usize, usize)> = match valid {
            Some(v) if v.len() != n => {
                return Err(VlmError::Input(format!("{} patch masks for {n} tiles", v.len())));
            }
            Some(v) => v.to_vec(),
            None => vec![(rows, cols); n],
        };
        // [N, C, rows, p, cols, p] → [N, rows, cols, C, p, p] → [N, S, C·p·p]
        let patches =
            pixel_values.reshape([n, c, rows, p, cols, p]).permute([0, 2, 4, 1, 3, 5]).reshape([n, s, c * p * p]);
        let x = self.patch_embedding.forward(patches); // [N, S, E]
        let e = x.dims()[2];
        let mut ids = Vec::with_capacity(n * s);
        for &(vr, vc) in &valid {
            ids.extend(position_ids(rows, cols, vr.min(rows), vc.min(cols), self.patches_per_side));
        }
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n * s]), &device);
        let pos = self.position_embedding.weight.val().select(0, ids).reshape([n, s, e]); // [N, S, E]
        let embeddings = x + pos;

        // Padded patches are masked out as keys (transformers' bidirectional mask).
        let key_mask = if valid.iter().all(|&(vr, vc)| vr >= rows && vc >= cols) {
            None
        } else {
            let mut masked = Vec::with_capacity(n * s);
            for &(vr, vc) in &valid {
                masked.extend((0..s).map(|k| k / cols >= vr || k % cols >= vc));
            }
            Some(Tensor::<B, 1, Bool>::from_data(TensorData::new(masked, [n * s]), &device).reshape([n, 1, 1, s]))
        };
        let mut hidden = embeddings.clone();
        for layer in &self.layers {
            hidden = layer.forward(hidden, key_mask.clone());
        }
        let last_hidden_state = self.post_layernorm.forward(hidden);
        Ok(VisionOutputs { embeddings, last_hidden_state })
    }
}

impl<B: Backend> SiglipEncoderLayer<B> {
    /// # Shapes: x `[N, S, E]`, key_mask `[N, 1, 1, S]` (true = masked) → `[N, S, E]`.
    pub fn forward(&self, x: Tensor<B, 3>, key_mask: Option<Tensor<B, 4, Bool>>) -> Tensor<B, 3> {
        let h = self.self_attn.forward(self.layer_norm1.forward(x.clone()), key_mask);
        let x = x + h;
        let h = gelu_approximate(self.fc1.forward(self.layer_norm2.forward(x.clone())));
        x + self.fc2.forward(h)
    }
}

impl<B: Backend> SiglipAttention<B> {
    /// # Shapes: x `[N, S, E]` → `[N, S, E]`.
    pub fn forward(&self, x: Tensor<B, 3>, key_mask: Option<Tensor<B, 4, Bool>>) -> Tensor<B, 3> {
        let [n, s, e] = x.dims();
        let (h, hd) = (self.num_heads, e / self.num_heads);
        let split = |t: Tensor<B, 3>| t.reshape([n, s, h, hd]).swap_dims(1, 2); // [N, H, S, hd]
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let mut scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt()); // [N, H, S, S]
        if let Some(mask) = key_mask {
            // transformers adds finfo.min; filling with it gives the same softmax.
            scores = scores.mask_fill(mask.expand([n, h, s, s]), f32::MIN);
        }
        let out = softmax(scores, 3).matmul(v); // [N, H, S, hd]
        self.out_proj.forward(out.swap_dims(1, 2).reshape([n, s, e]))
    }
}

impl<B: Backend> Connector<B> {
    /// # Shapes: `[N, S, E]` with S a square whose side divides by `scale` → `[N·S/scale², hidden_text]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Result<Tensor<B, 2>> {
        let [n, s, e] = x.dims();
        let side = (s as f64).sqrt().round() as usize;
        let f = self.scale_factor;
        if side * side != s || side % f != 0 {
            return Err(VlmError::Input(format!(
                "pixel shuffle needs square tiles whose side in patches divides by {f}; got {s} patches"
            )));
        }
        // transformers' pixel_shuffle: [N, h, w/f, E·f] → swap → [N, w/f, h/f, E·f²] → swap → flatten.
        let x = x.reshape([n, side, side / f, e * f]).swap_dims(1, 2); // [N, w/f, h, E·f]
        let x = x.reshape([n, side / f, side / f, e * f * f]).swap_dims(1, 2); // [N, h/f, w/f, E·f²]
        let x = x.reshape([n * s / (f * f), e * f * f]);
        Ok(self.proj.forward(x))
    }
}
