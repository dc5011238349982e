//! Loading Hugging Face Qwen2-VL and Qwen2.5-VL checkpoints.
//!
//! [`load_pretrained`] reads `config.json` (either layout) and the weights from `model.safetensors` or a
//! sharded `model.safetensors.index.json` through `deper-weights` (memory-mapped; bf16, f16 and f32 are
//! converted to f32). Modules are built directly from the tensors, so no random initialisation is paid.
//! Every tensor is shape-checked and a missing or wrong one is reported by key and expected shape.
//!
//! Key names: the hub layout is the canonical one; [`KEY_RENAMES`] lists the other prefixes seen in the
//! wild, tried in order when the hub key is absent. Both families use the same prefixes; the vision
//! blocks differ by name (Qwen2-VL `norm{1,2}.{weight,bias}`, `mlp.fc{1,2}`; Qwen2.5-VL RMSNorm
//! `norm{1,2}.weight`, `mlp.{gate,up,down}_proj` with biases, `merger.ln_q.weight` only), chosen by
//! `vision_config`'s [`VisionKind`]. PyTorch Linear weights are `[out, in]` and are
//! transposed to burn's `[in, out]`; the Conv3d patch embedding is flattened to a Linear.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use deper_weights::Checkpoint;
use std::path::Path;

use crate::config::{Qwen2VlConfig, VisionKind};
use crate::model::Qwen2Vl;
use crate::text::{Attention, DecoderLayer, Mlp, TextModel};
use crate::vision::{PatchMerger, QuickGeluMlp, SwiGluMlp, VisionBlock, VisionMlp, VisionNorm, VisionTower};
use crate::{Result, VlmError};

/// `(hub prefix, alternative prefix)`: when `hub prefix…` is missing, `alternative prefix…` is tried.
/// The same table serves Qwen2-VL and Qwen2.5-VL (transformers moved both the same way).
pub const KEY_RENAMES: &[(&str, &str)] = &[
    // transformers ≥ 4.52 in-memory layout (and checkpoints saved without the save-time mapping):
    // the language model moved under `model.language_model`.
    ("model.", "model.language_model."),
    // … and the vision tower under `model.visual`.
    ("visual.", "model.visual."),
    // Bare `Qwen2VLModel` checkpoints (no `ForConditionalGeneration` wrapper) drop the `model.` prefix.
    ("model.", "language_model."),
    // The LM head has stayed `lm_head.` everywhere; listed for completeness of the 5.x layout.
    ("lm_head.", "model.lm_head."),
];

/// A checkpoint with key renaming and typed builders.
/// Reads hub keys from a checkpoint into burn modules; shared by every model family, each with its
/// own rename table.
pub(crate) struct Loader<'a, B: Backend> {
    pub ckpt: &'a Checkpoint,
    pub device: &'a B::Device,
    /// `(hub prefix, alternative prefix)` pairs tried when a hub key is absent.
    pub renames: &'static [(&'static str, &'static str)],
}

impl<B: Backend> Loader<'_, B> {
    /// The stored key for a hub key (first match in the rename table).
    pub fn resolve(&self, key: &str) -> String {
        if self.ckpt.contains(key) {
            return key.to_string();
        }
        for (hub, alt) in self.renames {
            if let Some(rest) = key.strip_prefix(hub) {
                let candidate = format!("{alt}{rest}");
                if self.ckpt.contains(&candidate) {
                    return candidate;
                }
            }
        }
        key.to_string() // missing: the read below names the hub key and the expected shape
    }

    pub fn values(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(self.ckpt.f32(&self.resolve(key), shape)?)
    }

    pub fn tensor<const D: usize>(&self, key: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let values = self.values(key, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), self.device))
    }

    /// A PyTorch `[out, in]` weight as burn `[in, out]`, with an optional `.bias`.
    pub fn linear(&self, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>> {
        let w = self.values(&format!("{prefix}.weight"), &[d_out, d_in])?;
        self.linear_from(w, prefix, d_in, d_out, bias)
    }

    /// [`Self::linear`] from a weight already read (any trailing layout flattened to `d_in`).
    pub fn linear_from(&self, w: Vec<f32>, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>> {
        let weight = Tensor::from_data(TensorData::new(transpose(&w, d_out, d_in), [d_in, d_out]), self.device);
        let bias = if bias { Some(Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [d_out])?)) } else { None };
        Ok(Linear { weight: Param::from_tensor(weight), bias })
    }

    pub fn layer_norm(&self, prefix: &str, d: usize, eps: f64) -> Result<LayerNorm<B>> {
        // `epsilon` is private in burn: build through the config, then set the parameters.
        let mut norm = LayerNormConfig::new(d).with_epsilon(eps).init(self.device);
        norm.gamma = Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d])?);
        norm.beta = Some(Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [d])?));
        Ok(norm)
    }

    pub fn rms_norm(&self, prefix: &str, d: usize, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNorm { gamma: Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d])?), epsilon: eps })
    }

    /// The vision norms: LayerNorm in Qwen2-VL, RMSNorm (weight only) in Qwen2.5-VL; eps 1e-6 in both.
    fn vision_norm(&self, kind: VisionKind, prefix: &str, d: usize) -> Result<VisionNorm<B>> {
        Ok(match kind {
            VisionKind::Qwen2Vl => VisionNorm::Layer(self.layer_norm(prefix, d, 1e-6)?),
            VisionKind::Qwen25Vl => VisionNorm::Rms(self.rms_norm(prefix, d, 1e-6)?),
        })
    }
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = w[r * cols + c];
        }
    }
    out
}

/// Loads `config.json` and the weights from a Hugging Face model folder.
pub fn load_pretrained<B: Backend>(dir: &Path, device: &B::Device) -> Result<Qwen2Vl<B>> {
    let config = Qwen2VlConfig::from_path(dir)?;
    let ckpt = Checkpoint::open(dir)?;
    load_weights(&config, &ckpt, device)
}

/// Builds the model of `config` from an opened checkpoint.
pub fn load_weights<B: Backend>(config: &Qwen2VlConfig, ckpt: &Checkpoint, device: &B::Device) -> Result<Qwen2Vl<B>> {
    let ld = Loader::<B> { ckpt, device, renames: KEY_RENAMES };
    Ok(Qwen2Vl {
        visual: load_vision(&ld, config)?,
        model: load_text(&ld, config)?,
        image_token_id: config.tokens.image_token_id as usize,
        max_position_embeddings: config.text.max_position_embeddings,
        vocab_size: config.text.vocab_size,
        hidden_size: config.text.hidden_size,
    })
}

fn load_vision<B: Backend>(ld: &Loader<'_, B>, config: &Qwen2VlConfig) -> Result<VisionTower<B>> {
    let vc = &config.vision;
    let e = vc.embed_dim;
    // Conv3d [embed, C, T, P, P] with kernel = stride is a Linear over the flattened (C, T, P, P) row.
    let conv_shape = [e, vc.in_channels, vc.temporal_patch_size, vc.patch_size, vc.patch_size];
    let conv = ld.values("visual.patch_embed.proj.weight", &conv_shape)?;
    let patch_embed = ld.linear_from(conv, "visual.patch_embed.proj", vc.patch_dim(), e, false)?;
    let (kind, mlp) = (vc.kind, vc.mlp_dim());
    let blocks = (0..vc.depth)
        .map(|j| {
            let p = format!("visual.blocks.{j}");
            let mlp = match kind {
                VisionKind::Qwen2Vl => VisionMlp::QuickGelu(QuickGeluMlp {
                    fc1: ld.linear(&format!("{p}.mlp.fc1"), e, mlp, true)?,
                    fc2: ld.linear(&format!("{p}.mlp.fc2"), mlp, e, true)?,
                }),
                VisionKind::Qwen25Vl => VisionMlp::SwiGlu(SwiGluMlp {
                    gate_proj: ld.linear(&format!("{p}.mlp.gate_proj"), e, mlp, true)?,
                    up_proj: ld.linear(&format!("{p}.mlp.up_proj"), e, mlp, true)?,
                    down_proj: ld.linear(&format!("{p}.mlp.down_proj"), mlp, e, true)?,
                }),
            };
            Ok(VisionBlock {
                norm1: ld.vision_norm(kind, &format!("{p}.norm1"), e)?,
                qkv: ld.linear(&format!("{p}.attn.qkv"), e, 3 * e, true)?,
                proj: ld.linear(&format!("{p}.attn.proj"), e, e, true)?,
                norm2: ld.vision_norm(kind, &format!("{p}.norm2"), e)?,
                mlp,
                num_heads: vc.num_heads,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let area = vc.spatial_merge_size * vc.spatial_merge_size;
    let merged = e * area;
    let merger = PatchMerger {
        ln_q: ld.vision_norm(kind, "visual.merger.ln_q", e)?,
        // `mlp` is nn.Sequential(Linear, GELU, Linear): indices 0 and 2.
        fc1: ld.linear("visual.merger.mlp.0", merged, merged, true)?,
        fc2: ld.linear("visual.merger.mlp.2", merged, vc.hidden_size, true)?,
        merge_area: area,
    };
    Ok(VisionTower {
        patch_embed,
        blocks,
        merger,
        spatial_merge_size: vc.spatial_merge_size,
        rope_theta: vc.rope_theta,
        head_dim: vc.head_dim(),
        window_tokens: vc.window_tokens().unwrap_or(0),
        fullatt_block_indexes: vc.fullatt_block_indexes.clone(),
    })
}

fn load_text<B: Backend>(ld: &Loader<'_, B>, config: &Qwen2VlConfig) -> Result<TextModel<B>> {
    let tc = &config.text;
    let (d, hd, eps) = (tc.hidden_size, tc.head_dim(), tc.rms_norm_eps);
    let shape = DecoderShape {
        hidden: d,
        heads: tc.num_attention_heads,
        kv_heads: tc.num_key_value_heads,
        head_dim: hd,
        intermediate: tc.intermediate_size,
        eps,
    };
    // Qwen2 has q/k/v biases.
    let layers = load_decoder_layers(ld, "model.layers", tc.num_hidden_layers, &shape, true)?;
    let embed = ld.tensor("model.embed_tokens.weight", [tc.vocab_size, d])?;
    Ok(TextModel {
        embed_tokens: Embedding { weight: Param::from_tensor(embed) },
        layers,
        norm: ld.rms_norm("model.norm", d, eps)?,
        lm_head: lm_head(ld, config)?,
        rope_theta: tc.rope_theta,
        mrope_section: tc.mrope_section.clone(),
        head_dim: hd,
    })
}

/// Sizes of a Qwen2/Llama decoder layer.
pub(crate) struct DecoderShape {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub eps: f64,
}

/// `count` pre-norm decoder layers under `{root}.{i}` (hub names), with or without q/k/v biases.
pub(crate) fn load_decoder_layers<B: Backend>(
    ld: &Loader<'_, B>,
    root: &str,
    count: usize,
    shape: &DecoderShape,
    qkv_bias: bool,
) -> Result<Vec<DecoderLayer<B>>> {
    let DecoderShape { hidden: d, heads, kv_heads, head_dim: hd, intermediate, eps } = *shape;
    let (q_out, kv_out) = (heads * hd, kv_heads * hd);
    (0..count)
        .map(|i| {
            let p = format!("{root}.{i}");
            Ok(DecoderLayer {
                input_layernorm: ld.rms_norm(&format!("{p}.input_layernorm"), d, eps)?,
                self_attn: Attention {
                    q_proj: ld.linear(&format!("{p}.self_attn.q_proj"), d, q_out, qkv_bias)?,
                    k_proj: ld.linear(&format!("{p}.self_attn.k_proj"), d, kv_out, qkv_bias)?,
                    v_proj: ld.linear(&format!("{p}.self_attn.v_proj"), d, kv_out, qkv_bias)?,
                    o_proj: ld.linear(&format!("{p}.self_attn.o_proj"), q_out, d, false)?,
                    num_heads: heads,
                    num_kv_heads: kv_heads,
                    head_dim: hd,
                },
                post_attention_layernorm: ld.rms_norm(&format!("{p}.post_attention_layernorm"), d, eps)?,
                mlp: Mlp {
                    gate_proj: ld.linear(&format!("{p}.mlp.gate_proj"), d, intermediate, false)?,
                    up_proj: ld.linear(&format!("{p}.mlp.up_proj"), d, intermediate, false)?,
                    down_proj: ld.linear(&format!("{p}.mlp.down_proj"), intermediate, d, false)?,
                },
                cpu_panels: None,
            })
        })
        .collect()
}

/// Tied-embedding quirk: real Qwen2-VL-2B checkpoints have no `lm_head.weight` and reuse
/// `embed_tokens`. With `tie_word_embeddings: true` the head is always the embeddings, as in
/// transformers (a stored `lm_head.weight` is ignored); with `false` a missing head is an error naming
/// the key.
fn lm_head<B: Backend>(ld: &Loader<'_, B>, config: &Qwen2VlConfig) -> Result<Option<Linear<B>>> {
    let tc = &config.text;
    if tc.tie_word_embeddings {
        return Ok(None);
    }
    if !ld.ckpt.contains(&ld.resolve("lm_head.weight")) {
        return Err(VlmError::Weights(deper_weights::WeightsError::Missing {
            key: "lm_head.weight".into(),
            expected: vec![tc.vocab_size, tc.hidden_size],
            checkpoint: "the checkpoint (tie_word_embeddings is false)".into(),
        }));
    }
    Ok(Some(ld.linear("lm_head", tc.hidden_size, tc.vocab_size, false)?))
}
