//! The Qwen2-VL and Qwen2.5-VL vision towers: a ViT over 14×14×2 patches with 2-D rotary positions
//! and a 2×2 merger.
//!
//! Key characteristics (both families):
//! - patch embedding is a bias-free Conv3d whose kernel equals its stride, so it is a Linear over the
//!   1176-wide `pixel_values` rows (channel, t, y, x);
//! - pre-norm blocks (eps 1e-6), fused qkv laid out `[3, heads, head_dim]`;
//! - axial 2-D RoPE: half the rotary frequencies follow the patch row, half the column, in
//!   rotate-half style; rows come in 2×2 merge-block order (see [`rot_pos_ids`]);
//! - attention never crosses image frames;
//! - the merger normalises each patch, concatenates the 4 patches of a 2×2 block, then
//!   Linear – exact (erf) GELU – Linear to the text hidden size.
//!
//! Where they differ ([`VisionKind`]):
//! - Qwen2-VL: LayerNorm, fc1 – QuickGELU – fc2 MLP, full attention over each frame in every block;
//! - Qwen2.5-VL: RMSNorm (blocks and merger), SwiGLU MLP with biases, and **window attention**: merged
//!   tokens are regrouped into windows of `window_size / merge / patch` merged tokens per side (see
//!   [`window_index`]); blocks in `fullatt_block_indexes` attend over the whole frame, the others only
//!   within their window; the merger output is put back into processor order afterwards.
//!
//! References: transformers `models/qwen2_vl/modeling_qwen2_vl.py` (`Qwen2VisionTransformerPretrainedModel`),
//! `models/qwen2_5_vl/modeling_qwen2_5_vl.py` (`Qwen2_5_VisionTransformerPretrainedModel`) and
//! `vision_utils.get_vision_window_index`.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::config::{VisionConfig, VisionKind};
use crate::cpu::{linear, silu_mul};
use crate::decoder::apply_rotary;
use crate::{Result, VlmError};

/// LayerNorm (Qwen2-VL) or RMSNorm (Qwen2.5-VL), eps 1e-6.
#[derive(Module, Debug)]
pub enum VisionNorm<B: Backend> {
    Layer(LayerNorm<B>),
    Rms(RmsNorm<B>),
}

impl<B: Backend> VisionNorm<B> {
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::Layer(n) => n.forward(x),
            Self::Rms(n) => n.forward(x),
        }
    }
}

/// Qwen2-VL block MLP: `fc2(quick_gelu(fc1(x)))`.
#[derive(Module, Debug)]
pub struct QuickGeluMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

/// Qwen2.5-VL block MLP: `down(silu(gate(x)) · up(x))`, all three with biases.
#[derive(Module, Debug)]
pub struct SwiGluMlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

/// The feed-forward of a vision block.
// One per block, so the size difference of the variants does not matter; burn's Module derive needs
// the variants unboxed.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum VisionMlp<B: Backend> {
    QuickGelu(QuickGeluMlp<B>),
    SwiGlu(SwiGluMlp<B>),
}

impl<B: Backend> VisionMlp<B> {
    /// # Shapes
    /// - x: `[N, embed]` → output `[N, embed]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::QuickGelu(m) => {
                let h = linear(&m.fc1, x); // [N, mlp]
                linear(&m.fc2, crate::cpu::quick_gelu(h))
            }
            Self::SwiGlu(m) => linear(&m.down_proj, silu_mul(linear(&m.gate_proj, x.clone()), linear(&m.up_proj, x))),
        }
    }
}

/// One pre-norm ViT block.
#[derive(Module, Debug)]
pub struct VisionBlock<B: Backend> {
    pub norm1: VisionNorm<B>,
    /// Fused q, k, v: `[embed, 3·embed]`.
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    pub norm2: VisionNorm<B>,
    pub mlp: VisionMlp<B>,
    pub num_heads: usize,
}

/// Norm, 2×2 concat, Linear – GELU – Linear.
#[derive(Module, Debug)]
pub struct PatchMerger<B: Backend> {
    pub ln_q: VisionNorm<B>,
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    /// Patches merged into one token (`spatial_merge_size²`).
    pub merge_area: usize,
}

/// The whole tower.
#[derive(Module, Debug)]
pub struct VisionTower<B: Backend> {
    /// Conv3d as a bias-free Linear `[patch_dim, embed]`.
    pub patch_embed: Linear<B>,
    pub blocks: Vec<VisionBlock<B>>,
    pub merger: PatchMerger<B>,
    pub spatial_merge_size: usize,
    pub rope_theta: f64,
    pub head_dim: usize,
    /// Window edge in merged tokens; 0 = no window attention (Qwen2-VL).
    pub window_tokens: usize,
    /// Blocks that attend over whole frames when `window_tokens > 0`.
    pub fullatt_block_indexes: Vec<usize>,
}

/// Intermediate outputs, for parity tests.
#[derive(Debug, Clone)]
pub struct VisionOutputs<B: Backend> {
    /// `[N, embed]` after the patch embedding, in `pixel_values` row order.
    pub patch_embed: Tensor<B, 2>,
    /// `[N, embed]` after the last block. With window attention the rows are in window order (as
    /// transformers' `last_hidden_state`): merged token `window_index[k]` holds rows `4k..4k+4`.
    pub blocks_out: Tensor<B, 2>,
    /// `[N / merge², hidden]` image features, one per image token, in prompt order.
    pub merged: Tensor<B, 2>,
}

impl VisionConfig {
    /// A randomly initialised tower (for shapes and tests; real weights come from `load_pretrained`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisionTower<B> {
        let e = self.embed_dim;
        let norm = || match self.kind {
            VisionKind::Qwen2Vl => VisionNorm::Layer(LayerNormConfig::new(e).with_epsilon(1e-6).init(device)),
            VisionKind::Qwen25Vl => VisionNorm::Rms(RmsNormConfig::new(e).with_epsilon(1e-6).init(device)),
        };
        let mlp = || match self.kind {
            VisionKind::Qwen2Vl => VisionMlp::QuickGelu(QuickGeluMlp {
                fc1: LinearConfig::new(e, self.mlp_dim()).init(device),
                fc2: LinearConfig::new(self.mlp_dim(), e).init(device),
            }),
            VisionKind::Qwen25Vl => VisionMlp::SwiGlu(SwiGluMlp {
                gate_proj: LinearConfig::new(e, self.mlp_dim()).init(device),
                up_proj: LinearConfig::new(e, self.mlp_dim()).init(device),
                down_proj: LinearConfig::new(self.mlp_dim(), e).init(device),
            }),
        };
        let merged = e * self.spatial_merge_size * self.spatial_merge_size;
        VisionTower {
            patch_embed: LinearConfig::new(self.patch_dim(), e).with_bias(false).init(device),
            blocks: (0..self.depth)
                .map(|_| VisionBlock {
                    norm1: norm(),
                    qkv: LinearConfig::new(e, 3 * e).init(device),
                    proj: LinearConfig::new(e, e).init(device),
                    norm2: norm(),
                    mlp: mlp(),
                    num_heads: self.num_heads,
                })
                .collect(),
            merger: PatchMerger {
                ln_q: norm(),
                fc1: LinearConfig::new(merged, merged).init(device),
                fc2: LinearConfig::new(merged, self.hidden_size).init(device),
                merge_area: self.spatial_merge_size * self.spatial_merge_size,
            },
            spatial_merge_size: self.spatial_merge_size,
            rope_theta: self.rope_theta,
            head_dim: self.head_dim(),
            window_tokens: self.window_tokens().unwrap_or(0),
            fullatt_block_indexes: self.fullatt_block_indexes.clone(),
        }
    }
}

/// `(row, column)` patch coordinates in `pixel_values` row order: per image, per frame, 2×2 merge
/// blocks in row-major order, and within a block `(mh, mw)` row-major.
pub fn rot_pos_ids(grid_thw: &[[usize; 3]], merge: usize) -> Vec<[usize; 2]> {
    let mut ids = Vec::new();
    for &[t, h, w] in grid_thw {
        for _ in 0..t {
            for bh in 0..h / merge {
                for bw in 0..w / merge {
                    for mh in 0..merge {
                        for mw in 0..merge {
                            ids.push([bh * merge + mh, bw * merge + mw]);
                        }
                    }
                }
            }
        }
    }
    ids
}

/// Checks `grid_thw` against `pixel_values` rows and the merge size.
pub fn check_grid(grid_thw: &[[usize; 3]], rows: usize, merge: usize) -> Result<()> {
    let mut total = 0;
    for &[t, h, w] in grid_thw {
        if t == 0 || h == 0 || w == 0 || h % merge != 0 || w % merge != 0 {
            return Err(VlmError::Input(format!(
                "image_grid_thw entry [{t}, {h}, {w}] must be positive with h and w multiples of {merge}"
            )));
        }
        total += t * h * w;
    }
    if total != rows {
        return Err(VlmError::Input(format!(
            "image_grid_thw {grid_thw:?} describes {total} patches but pixel_values has {rows} rows"
        )));
    }
    Ok(())
}

/// Qwen2.5-VL window order (`get_vision_window_index`).
///
/// Returns `(window_index, windows)`: `window_index[k]` is the merged token (counted in processor order:
/// per image, per frame, llm-grid row-major) that comes k-th in window order, and `windows` lists each
/// window's `(first merged token, merged tokens)` in that order. Windows tile each frame's llm grid
/// (`h / merge × w / merge`) in squares of `window` merged tokens, row-major; the last row and column of
/// windows may be smaller.
pub fn window_index(grid_thw: &[[usize; 3]], merge: usize, window: usize) -> (Vec<usize>, Vec<(usize, usize)>) {
    let window = window.max(1); // a zero edge cannot tile; the config rejects it, this keeps the function total
    let mut index = Vec::new();
    let mut windows = Vec::new();
    let mut offset = 0;
    for &[t, h, w] in grid_thw {
        let (lh, lw) = (h / merge, w / merge);
        for frame in 0..t {
            let base = offset + frame * lh * lw;
            for r0 in (0..lh).step_by(window) {
                for c0 in (0..lw).step_by(window) {
                    let start = index.len();
                    for r in r0..(r0 + window).min(lh) {
                        index.extend((c0..(c0 + window).min(lw)).map(|c| base + r * lw + c));
                    }
                    windows.push((start, index.len() - start));
                }
            }
        }
        offset += t * lh * lw;
    }
    (index, windows)
}

impl<B: Backend> VisionBlock<B> {
    /// `segments` are `(first row, rows)` ranges that attend among themselves (frames or windows).
    ///
    /// # Shapes
    /// - x: `[N, embed]`; cos, sin: `[N, 1, head_dim]`
    /// - output: `[N, embed]`
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        cos: Tensor<B, 3>,
        sin: Tensor<B, 3>,
        segments: &[(usize, usize)],
    ) -> Tensor<B, 2> {
        let [n, e] = x.dims();
        let heads = self.num_heads;
        let hd = e / heads;
        let h = self.norm1.forward(x.clone());
        let qkv = linear(&self.qkv, h).reshape([n, 3, heads, hd]); // [N, 3, H, hd]
        let part = |i: usize| qkv.clone().narrow(1, i, 1).reshape([n, heads, hd]); // [N, H, hd]
        let scale = 1.0 / (hd as f64).sqrt();
        let attn = cpu_attention(part(0), part(1), part(2), &cos, &sin, segments, scale as f32).unwrap_or_else(|| {
            let q = apply_rotary(part(0), cos.clone(), sin.clone()).swap_dims(0, 1); // [H, N, hd]
            let k = apply_rotary(part(1), cos, sin).swap_dims(0, 1); // [H, N, hd]
            let v = part(2).swap_dims(0, 1); // [H, N, hd]
            let outs: Vec<Tensor<B, 3>> = segments
                .iter()
                .map(|&(start, len)| {
                    let qs = q.clone().narrow(1, start, len);
                    let ks = k.clone().narrow(1, start, len);
                    let vs = v.clone().narrow(1, start, len);
                    let scores = qs.matmul(ks.swap_dims(1, 2)) * scale; // [H, n, n]
                    softmax(scores, 2).matmul(vs) // [H, n, hd]
                })
                .collect();
            Tensor::cat(outs, 1).swap_dims(0, 1).reshape([n, e]) // [N, E]
        });
        let x = x + linear(&self.proj, attn);
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// The block's rotary and attention on the CPU backend ([`crate::cpu::rotary`], [`crate::cpu::attention`]
/// per segment); `None` where those do not apply.
///
/// # Shapes
/// - q, k, v: `[N, H, hd]`; cos, sin: `[N, 1, hd]`
/// - output: `[N, H · hd]`
fn cpu_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    cos: &Tensor<B, 3>,
    sin: &Tensor<B, 3>,
    segments: &[(usize, usize)],
    scale: f32,
) -> Option<Tensor<B, 2>> {
    let [n, heads, hd] = q.dims();
    let heads_first = |t: Tensor<B, 3>| t.swap_dims(0, 1).unsqueeze_dim::<4>(0); // [1, H, N, hd]
    let (cos, sin) = (cos.clone().reshape([1, 1, n, hd]), sin.clone().reshape([1, 1, n, hd]));
    let q = crate::cpu::rotary(&heads_first(q), &cos, &sin)?;
    let k = crate::cpu::rotary(&heads_first(k), &cos, &sin)?;
    let v = heads_first(v);
    let mut outs = Vec::with_capacity(segments.len());
    for &(start, len) in segments {
        let part = |t: &Tensor<B, 4>| t.clone().narrow(2, start, len);
        outs.push(crate::cpu::attention(&part(&q), &part(&k), &part(&v), crate::cpu::KeyRange::All, scale)?);
    }
    Some(Tensor::cat(outs, 1).reshape([n, heads * hd]))
}

impl<B: Backend> PatchMerger<B> {
    /// # Shapes
    /// - x: `[N, embed]` → output `[N / merge², hidden]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, e] = x.dims();
        let x = self.ln_q.forward(x).reshape([n / self.merge_area, e * self.merge_area]);
        linear(&self.fc2, gelu(linear(&self.fc1, x)))
    }
}

impl<B: Backend> VisionTower<B> {
    /// Image features, one row per image token.
    ///
    /// # Shapes
    /// - pixel_values: `[N, patch_dim]` with `N = Σ t·h·w` over `grid_thw`
    /// - output: `[N / merge², hidden]`
    pub fn forward(&self, pixel_values: Tensor<B, 2>, grid_thw: &[[usize; 3]]) -> Result<Tensor<B, 2>> {
        Ok(self.forward_with_intermediates(pixel_values, grid_thw)?.merged)
    }

    /// Like [`Self::forward`], also returning the patch embedding and the last block's output.
    pub fn forward_with_intermediates(
        &self,
        pixel_values: Tensor<B, 2>,
        grid_thw: &[[usize; 3]],
    ) -> Result<VisionOutputs<B>> {
        let [rows, width] = pixel_values.dims();
        let [expected_width, _] = self.patch_embed.weight.dims();
        if width != expected_width {
            return Err(VlmError::Input(format!(
                "pixel_values rows are {width} wide, the model expects {expected_width}"
            )));
        }
        check_grid(grid_thw, rows, self.spatial_merge_size)?;
        let device = pixel_values.device();
        let patch_embed = linear(&self.patch_embed, pixel_values); // [N, E]
        let mut ids = rot_pos_ids(grid_thw, self.spatial_merge_size);

        // Each frame of each image is its own attention segment (`cu_seqlens`).
        let mut frames = Vec::new();
        let mut start = 0;
        for &[t, h, w] in grid_thw {
            for _ in 0..t {
                frames.push((start, h * w));
                start += h * w;
            }
        }
        let area = self.merger.merge_area;
        // Qwen2.5-VL: regroup rows by window (a frame's rows stay contiguous, so `frames` still holds).
        let windowed = (self.window_tokens > 0).then(|| {
            let (order, windows) = window_index(grid_thw, self.spatial_merge_size, self.window_tokens);
            let rows: Vec<usize> = order.iter().flat_map(|&m| (0..area).map(move |j| m * area + j)).collect();
            let segments: Vec<(usize, usize)> = windows.iter().map(|&(s, n)| (s * area, n * area)).collect();
            (order, rows, segments)
        });
        let mut x = patch_embed.clone();
        if let Some((_, rows, _)) = &windowed {
            ids = rows.iter().map(|&r| ids[r]).collect();
            x = x.select(0, index_tensor(rows, &device));
        }
        let (cos, sin) = self.rotary(&ids, &device); // [N, 1, hd]
        for (j, block) in self.blocks.iter().enumerate() {
            let segments = match &windowed {
                Some((_, _, windows)) if !self.fullatt_block_indexes.contains(&j) => windows,
                _ => &frames,
            };
            x = block.forward(x, cos.clone(), sin.clone(), segments);
        }
        let mut merged = self.merger.forward(x.clone()); // [N / area, D]
        if let Some((order, _, _)) = &windowed {
            // Back to processor order: token m sits at the position k where order[k] = m.
            let mut inverse = vec![0; order.len()];
            for (k, &m) in order.iter().enumerate() {
                inverse[m] = k;
            }
            merged = merged.select(0, index_tensor(&inverse, &device));
        }
        Ok(VisionOutputs { patch_embed, blocks_out: x, merged })
    }

    /// cos and sin of the 2-D rotary angles of `(row, column)` patch coordinates, `[N, 1, head_dim]` each.
    fn rotary(&self, ids: &[[usize; 2]], device: &B::Device) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let hd = self.head_dim;
        let dim = hd / 2; // rotary dim of one axis pair
        let inv_freq: Vec<f32> =
            (0..dim / 2).map(|k| (1.0 / self.rope_theta.powf((2 * k) as f64 / dim as f64)) as f32).collect();
        let n = ids.len();
        let mut cos = Vec::with_capacity(n * hd);
        let mut sin = Vec::with_capacity(n * hd);
        for &[r, c] in ids {
            let f: Vec<f32> =
                inv_freq.iter().map(|&f| r as f32 * f).chain(inv_freq.iter().map(|&f| c as f32 * f)).collect();
            for _ in 0..2 {
                cos.extend(f.iter().map(|a| a.cos()));
                sin.extend(f.iter().map(|a| a.sin()));
            }
        }
        (
            Tensor::from_data(TensorData::new(cos, [n, 1, hd]), device),
            Tensor::from_data(TensorData::new(sin, [n, 1, hd]), device),
        )
    }
}

fn index_tensor<B: Backend>(index: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = index.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [index.len()]), device)
}
