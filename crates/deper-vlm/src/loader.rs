//! Reading Hugging Face safetensors checkpoints into burn modules, shared by every model family:
//! key renaming, typed builders (Linear, LayerNorm, RMSNorm) and the decoder both families share.
//!
//! Weights come through `deper-weights` (memory-mapped; bf16, f16 and f32 converted to f32). Modules are
//! built directly from the tensors, so no random initialisation is paid; every tensor is shape-checked
//! and a missing or wrong one is reported by key and expected shape. PyTorch Linear weights are
//! `[out, in]` and are transposed to burn's `[in, out]`.
//!
//! Reference: tracel-ai/models `llama-burn/src/pretrained.rs`; transformers `modeling_qwen2.py` /
//! `modeling_llama.py` for the decoder's key names.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use deper_weights::Checkpoint;

use crate::decoder::{Attention, DecoderLayer, Mlp, TextConfig, TextModel};
use crate::{Result, VlmError};

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
        resolve_key(self.ckpt, self.renames, key)
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
}

/// The stored key for hub key `key` in `ckpt`: the key itself, else the first `(hub prefix,
/// alternative prefix)` rename of `renames` that the checkpoint holds, else `key` unchanged (a
/// read then names the hub key).
pub(crate) fn resolve_key(ckpt: &Checkpoint, renames: &[(&str, &str)], key: &str) -> String {
    if ckpt.contains(key) {
        return key.to_string();
    }
    for (hub, alt) in renames {
        if let Some(rest) = key.strip_prefix(hub) {
            let candidate = format!("{alt}{rest}");
            if ckpt.contains(&candidate) {
                return candidate;
            }
        }
    }
    key.to_string()
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

/// The decoder under `{root}.layers`, `{root}.embed_tokens`, `{root}.norm` and `lm_head` (hub names):
/// Qwen2 with q/k/v biases, Llama without. `head_dim` is given because Llama configs may state it.
pub(crate) fn load_text_model<B: Backend>(
    ld: &Loader<'_, B>,
    root: &str,
    tc: &TextConfig,
    head_dim: usize,
    qkv_bias: bool,
) -> Result<TextModel<B>> {
    let (d, eps) = (tc.hidden_size, tc.rms_norm_eps);
    let shape = DecoderShape {
        hidden: d,
        heads: tc.num_attention_heads,
        kv_heads: tc.num_key_value_heads,
        head_dim,
        intermediate: tc.intermediate_size,
        eps,
    };
    let layers = load_decoder_layers(ld, &format!("{root}.layers"), tc.num_hidden_layers, &shape, qkv_bias)?;
    let embed = ld.tensor(&format!("{root}.embed_tokens.weight"), [tc.vocab_size, d])?;
    Ok(TextModel {
        embed_tokens: Embedding { weight: Param::from_tensor(embed) },
        layers,
        norm: ld.rms_norm(&format!("{root}.norm"), d, eps)?,
        lm_head: lm_head(ld, tc)?,
        rope_theta: tc.rope_theta,
        mrope_section: tc.mrope_section.clone(),
        head_dim,
    })
}

/// Sizes of a Qwen2/Llama decoder layer.
struct DecoderShape {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    eps: f64,
}

/// `count` pre-norm decoder layers under `{root}.{i}` (hub names), with or without q/k/v biases.
fn load_decoder_layers<B: Backend>(
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

/// Tied-embedding quirk: real Qwen2-VL-2B (and SmolVLM) checkpoints have no `lm_head.weight` and
/// reuse `embed_tokens`. With `tie_word_embeddings: true` the head is always the embeddings, as in
/// transformers (a stored `lm_head.weight` is ignored); with `false` a missing head is an error naming
/// the key.
fn lm_head<B: Backend>(ld: &Loader<'_, B>, tc: &TextConfig) -> Result<Option<Linear<B>>> {
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
