//! The decoder-only language model both families share: Qwen2 (Qwen2-VL, Qwen2.5-VL) and Llama
//! (Idefics3 / SmolVLM, the same layers without q/k/v biases), with multimodal rotary positions.
//!
//! Key characteristics:
//! - pre-norm decoder layers: RMSNorm (eps from config, in f32), attention with q/k/v biases and a
//!   bias-free output projection, grouped-query attention (query head `j` uses KV head
//!   `j / (heads / kv_heads)`), causal mask, SwiGLU MLP (`down(silu(gate(h)) · up(h))`);
//! - M-RoPE: every position has three components (t, h, w); rotary frequency `k` takes its angle from
//!   the component its `mrope_section` assigns, rotate-half style; text tokens use (c, c, c), image
//!   tokens of Qwen2-VL sit on the merged patch grid (see [`crate::qwen2_vl::mrope::rope_index`]); Llama's
//!   1-D RoPE is all frequencies on the first component;
//! - a final RMSNorm and the LM head, which is `embed_tokens.weight` transposed when embeddings are tied.
//!
//! Reference: transformers `models/qwen2_vl/modeling_qwen2_vl.py` (`Qwen2VLTextModel`) and
//! `models/llama/modeling_llama.py`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use std::sync::Arc;

use crate::cache::{KvCache, LayerCache};
use crate::cpu::PanelMatrix;
use crate::{Result, VlmError};

/// The decoder: Qwen2 (Qwen2-VL) or Llama (Idefics3, biases removed after `init`).
#[derive(Config, Debug, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[config(default = 32768)]
    pub max_position_embeddings: usize,
    #[config(default = 1e-6)]
    pub rms_norm_eps: f64,
    #[config(default = 1_000_000.0)]
    pub rope_theta: f64,
    /// Frequencies per M-RoPE component (t, h, w); sums to `head_dim / 2`.
    pub mrope_section: Vec<usize>,
    /// No `lm_head.weight`: the head is `embed_tokens.weight` transposed.
    #[config(default = true)]
    pub tie_word_embeddings: bool,
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Self-attention with GQA and q/k/v biases.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// SwiGLU feed-forward.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
    /// The projection weights in panels for the CPU backend ([`TextModel::pack_for_cpu`]); while
    /// set, the `Linear` weights above are empty and these are used instead.
    #[module(skip)]
    pub cpu_panels: Option<Arc<LayerPanels>>,
}

/// A decoder layer's projections as [`PanelMatrix`]es, with their biases: q, k and v side by side in
/// one matrix (`[hidden, (H + 2·KVH)·hd]`), gate and up in another (`[hidden, 2·intermediate]`), so a
/// layer is four products instead of seven (fewer thread hand-offs per decoded token).
#[derive(Debug)]
pub struct LayerPanels {
    pub qkv: PanelMatrix,
    pub o: PanelMatrix,
    pub gate_up: PanelMatrix,
    pub down: PanelMatrix,
}

impl LayerPanels {
    fn all(&self) -> [&PanelMatrix; 4] {
        [&self.qkv, &self.o, &self.gate_up, &self.down]
    }

    /// Packs the `Linear`s side by side along their outputs; `None` off `NdArray<f32>`.
    fn fuse<B: Backend>(parts: &[&Linear<B>]) -> Option<PanelMatrix> {
        let weights: Vec<Tensor<B, 2>> = parts.iter().map(|l| l.weight.val()).collect();
        let packed = PanelMatrix::from_tensor(&Tensor::cat(weights, 1))?;
        if parts.iter().all(|l| l.bias.is_none()) {
            return Some(packed);
        }
        let mut bias = Vec::with_capacity(packed.dims()[1]);
        for l in parts {
            match &l.bias {
                Some(b) => bias.extend(b.val().into_data().convert::<f32>().to_vec::<f32>().ok()?),
                None => bias.extend(std::iter::repeat_n(0.0, l.weight.dims()[1])),
            }
        }
        packed.with_bias(bias)
    }
}

/// Embeddings, decoder layers, final norm and head.
#[derive(Module, Debug)]
pub struct TextModel<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    pub rope_theta: f64,
    pub mrope_section: Vec<usize>,
    pub head_dim: usize,
}

/// cos and sin of the rotary angles for a run of positions, `[1, 1, L, head_dim]` each (or
/// `[b, 1, L, head_dim]` when the rows of a batch sit at different positions).
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
}

impl TextConfig {
    /// A randomly initialised language model (for shapes and tests).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TextModel<B> {
        let (d, hd) = (self.hidden_size, self.head_dim());
        let norm = || RmsNormConfig::new(d).with_epsilon(self.rms_norm_eps).init(device);
        let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        TextModel {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, d).init(device),
            layers: (0..self.num_hidden_layers)
                .map(|_| DecoderLayer {
                    input_layernorm: norm(),
                    self_attn: Attention {
                        q_proj: lin(d, self.num_attention_heads * hd, true),
                        k_proj: lin(d, self.num_key_value_heads * hd, true),
                        v_proj: lin(d, self.num_key_value_heads * hd, true),
                        o_proj: lin(self.num_attention_heads * hd, d, false),
                        num_heads: self.num_attention_heads,
                        num_kv_heads: self.num_key_value_heads,
                        head_dim: hd,
                    },
                    post_attention_layernorm: norm(),
                    mlp: Mlp {
                        gate_proj: lin(d, self.intermediate_size, false),
                        up_proj: lin(d, self.intermediate_size, false),
                        down_proj: lin(self.intermediate_size, d, false),
                    },
                    cpu_panels: None,
                })
                .collect(),
            norm: norm(),
            lm_head: (!self.tie_word_embeddings).then(|| lin(d, self.vocab_size, false)),
            rope_theta: self.rope_theta,
            mrope_section: self.mrope_section.clone(),
            head_dim: hd,
        }
    }
}

impl<B: Backend> TextModel<B> {
    /// A KV cache for `batch` rows of `max_len` positions each, one layer cache per decoder layer.
    pub fn new_cache(&self, batch: usize, max_len: usize) -> KvCache<B> {
        let device = self.embed_tokens.weight.device();
        let layers = self
            .layers
            .iter()
            .map(|l| LayerCache::new(batch, l.self_attn.num_kv_heads, max_len, l.self_attn.head_dim, &device))
            .collect();
        KvCache { layers }
    }

    /// Rotary tables for positions `[3][L]`.
    pub fn rope(&self, positions: &[Vec<i64>; 3], device: &B::Device) -> Rope<B> {
        let hd = self.head_dim;
        let half = hd / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|k| (1.0 / self.rope_theta.powf((2 * k) as f64 / hd as f64)) as f32).collect();
        // Component (t = 0, h = 1, w = 2) of each frequency, from mrope_section.
        let component: Vec<usize> =
            self.mrope_section.iter().enumerate().flat_map(|(c, &n)| std::iter::repeat_n(c, n)).collect();
        let len = positions[0].len();
        let mut cos = Vec::with_capacity(len * hd);
        let mut sin = Vec::with_capacity(len * hd);
        for ((&t, &h), &w) in positions[0].iter().zip(&positions[1]).zip(&positions[2]) {
            let p = [t, h, w];
            let f: Vec<f32> = (0..half).map(|k| p[component[k]] as f32 * inv_freq[k]).collect();
            for _ in 0..2 {
                cos.extend(f.iter().map(|a| a.cos()));
                sin.extend(f.iter().map(|a| a.sin()));
            }
        }
        Rope {
            cos: Tensor::from_data(TensorData::new(cos, [1, 1, len, hd]), device),
            sin: Tensor::from_data(TensorData::new(sin, [1, 1, len, hd]), device),
        }
    }

    /// Rotary tables of a batch whose rows have their own positions, `[b, 1, L, head_dim]`; every row
    /// holds `[3][L]` positions.
    pub fn rope_rows(&self, rows: &[[Vec<i64>; 3]], device: &B::Device) -> Rope<B> {
        let (cos, sin): (Vec<_>, Vec<_>) = rows
            .iter()
            .map(|positions| {
                let r = self.rope(positions, device);
                (r.cos, r.sin)
            })
            .unzip();
        Rope { cos: Tensor::cat(cos, 0), sin: Tensor::cat(sin, 0) }
    }

    /// On the CPU backend (`NdArray<f32>`), stores every decoder layer's projections as
    /// [`LayerPanels`], the layout the matrix kernel reads, and frees the row-major copies (the
    /// `Linear` weights become `[0, out]`, their biases move into the panels). Prefill then skips
    /// re-packing each weight on every call (see [`PanelMatrix`]). For inference: the model computes
    /// the same function, but its `Linear`s are no longer there to read, save or train. Other
    /// backends: unchanged.
    pub fn pack_for_cpu(mut self) -> Self {
        if !crate::cpu::is_cpu_f32::<B>() {
            return self;
        }
        for layer in &mut self.layers {
            if layer.cpu_panels.is_some() {
                continue;
            }
            let (a, m) = (&layer.self_attn, &layer.mlp);
            let packed = (
                LayerPanels::fuse(&[&a.q_proj, &a.k_proj, &a.v_proj]),
                LayerPanels::fuse(&[&a.o_proj]),
                LayerPanels::fuse(&[&m.gate_proj, &m.up_proj]),
                LayerPanels::fuse(&[&m.down_proj]),
            );
            let (Some(qkv), Some(o), Some(gate_up), Some(down)) = packed else {
                continue;
            };
            layer.cpu_panels = Some(Arc::new(LayerPanels { qkv, o, gate_up, down }));
            let (a, m) = (&mut layer.self_attn, &mut layer.mlp);
            for linear in [
                &mut a.q_proj,
                &mut a.k_proj,
                &mut a.v_proj,
                &mut a.o_proj,
                &mut m.gate_proj,
                &mut m.up_proj,
                &mut m.down_proj,
            ] {
                let [_, out] = linear.weight.dims();
                let device = linear.weight.device();
                linear.weight = burn::module::Param::from_tensor(Tensor::zeros([0, out], &device));
                linear.bias = None;
            }
        }
        self
    }

    /// Parameters of the model, counting weights held in panels ([`Self::pack_for_cpu`]).
    pub fn weight_count(&self) -> usize {
        let panels: usize = self
            .layers
            .iter()
            .filter_map(|l| l.cpu_panels.as_ref())
            .map(|p| p.all().iter().map(|m| m.weights()).sum::<usize>())
            .sum();
        self.num_params() + panels
    }

    /// Token embeddings. # Shapes: ids `[b, L]` → `[b, L, hidden]`.
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.embed_tokens.forward(ids)
    }

    /// Runs the decoder layers and the final norm, with the causal mask.
    ///
    /// # Shapes
    /// - x: `[b, L, hidden]` input embeddings; rope tables for these L positions
    /// - caches: one per layer (appended to), or `None` for a full forward
    /// - output: `[b, L, hidden]` after the final norm
    pub fn forward_hidden(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        caches: Option<&mut [LayerCache<B>]>,
    ) -> Result<Tensor<B, 3>> {
        self.forward_hidden_masked(x, rope, caches, None)
    }

    /// [`Self::forward_hidden`] with an explicit attention mask instead of the causal one.
    ///
    /// # Shapes
    /// - mask: `[b, 1, L, T]`, `true` where query `i` must not see key `j` (T = positions in the cache
    ///   after this call, or L without a cache); it must include causality itself
    pub fn forward_hidden_masked(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        mut caches: Option<&mut [LayerCache<B>]>,
        mask: Option<&Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>> {
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let cache = caches.as_mut().map(|c| &mut c[i]);
            x = layer.forward(x, rope, cache, mask)?;
        }
        Ok(self.norm.forward(x))
    }

    /// Like [`Self::forward_hidden`] but returns the hidden state after each layer (before the final norm).
    pub fn forward_layers(&self, x: Tensor<B, 3>, rope: &Rope<B>) -> Result<Vec<Tensor<B, 3>>> {
        let mut out = Vec::with_capacity(self.layers.len());
        let mut x = x;
        for layer in &self.layers {
            x = layer.forward(x, rope, None, None)?;
            out.push(x.clone());
        }
        Ok(out)
    }

    /// LM head. # Shapes: `[1, L, hidden]` → `[1, L, vocab]`.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => linear(head, hidden),
            None => {
                // `W · hᵀ` keeps the big [vocab, hidden] matrix in its stored layout (a transposed view
                // of it would be copied by the CPU backend on every step); only the small result is
                // transposed.
                let [b, l, d] = hidden.dims();
                let w = self.embed_tokens.weight.val(); // [vocab, hidden]
                let vocab = w.dims()[0];
                let rows = hidden.reshape([b * l, d]);
                if let Some(logits) = crate::cpu::rows_times_transposed(&rows, &w) {
                    return logits.reshape([b, l, vocab]);
                }
                let logits_t = w.matmul(rows.transpose()); // [vocab, b·l]
                logits_t.transpose().reshape([b, l, vocab])
            }
        }
    }
}

impl<B: Backend> DecoderLayer<B> {
    /// # Shapes: x `[b, L, hidden]` → `[b, L, hidden]`; mask as in [`TextModel::forward_hidden_masked`].
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<&mut LayerCache<B>>,
        mask: Option<&Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>> {
        let panels = self.cpu_panels.as_deref();
        let h = self.self_attn.forward_with(self.input_layernorm.forward(x.clone()), rope, cache, mask, panels)?;
        let x = x + h;
        let h = self.post_attention_layernorm.forward(x.clone());
        let m = &self.mlp;
        let h = match panels {
            Some(p) => {
                let gate_up = packed(&p.gate_up, h)?;
                let [b, l, width] = gate_up.dims();
                let act = crate::cpu::silu_mul_halves(&gate_up.reshape([b * l, width]))
                    .ok_or_else(|| VlmError::Input("gate/up projection is not on the CPU backend".into()))?;
                packed(&p.down, act.reshape([b, l, width / 2]))?
            }
            None => {
                let act = crate::cpu::silu_mul(linear(&m.gate_proj, h.clone()), linear(&m.up_proj, h));
                linear(&m.down_proj, act)
            }
        };
        Ok(x + h)
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - x: `[b, L, hidden]`; rope tables `[1 or b, 1, L, head_dim]`
    /// - cache: holds `P` earlier positions; the new keys and values are appended
    /// - mask: `[b, 1, L, P + L]`, `true` = hidden; `None` = causal
    /// - output: `[b, L, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<&mut LayerCache<B>>,
        mask: Option<&Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>> {
        self.forward_with(x, rope, cache, mask, None)
    }

    /// [`Self::forward`] with the projection weights from `panels` when given (see
    /// [`TextModel::pack_for_cpu`]).
    pub fn forward_with(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<&mut LayerCache<B>>,
        mask: Option<&Tensor<B, 4, Bool>>,
        panels: Option<&LayerPanels>,
    ) -> Result<Tensor<B, 3>> {
        let [b, l, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (q, k, v) = match panels {
            Some(p) => {
                let qkv = packed(&p.qkv, x)?; // [b, L, (H + 2·KVH)·hd]
                let (q_out, kv_out) = (h * hd, kvh * hd);
                (
                    qkv.clone().narrow(2, 0, q_out),
                    qkv.clone().narrow(2, q_out, kv_out),
                    qkv.narrow(2, q_out + kv_out, kv_out),
                )
            }
            None => (linear(&self.q_proj, x.clone()), linear(&self.k_proj, x.clone()), linear(&self.v_proj, x)),
        };
        let q = q.reshape([b, l, h, hd]).swap_dims(1, 2); // [b, H, L, hd]
        let k = k.reshape([b, l, kvh, hd]).swap_dims(1, 2); // [b, KVH, L, hd]
        let v = v.reshape([b, l, kvh, hd]).swap_dims(1, 2); // [b, KVH, L, hd]
        let o_proj = |out: Tensor<B, 3>| match panels {
            Some(p) => packed(&p.o, out),
            None => Ok(linear(&self.o_proj, out)),
        };
        let rotate = |x: Tensor<B, 4>| match crate::cpu::rotary(&x, &rope.cos, &rope.sin) {
            Some(rotated) => rotated,
            None => apply_rotary(x, rope.cos.clone(), rope.sin.clone()),
        };
        let (q, k) = (rotate(q), rotate(k));
        let (k, v, past) = match cache {
            Some(cache) => {
                let past = cache.len();
                let (k, v) = cache.append(k, v)?; // [b, KVH, P + L, hd]
                (k, v, past)
            }
            None => (k, v, 0),
        };
        let total = past + l;
        let scale = 1.0 / (hd as f64).sqrt();
        if mask.is_none() {
            if let Some(out) = crate::cpu::attention(&q, &k, &v, crate::cpu::KeyRange::Causal { past }, scale as f32) {
                return o_proj(out);
            }
        }
        let rep = h / kvh;
        // Grouped-query attention without copying K and V per query head: the `rep` query heads of
        // KV head g are contiguous in q, so they become one `[rep·L, hd]` block against that head.
        let q = q.reshape([b, kvh, rep * l, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)) * scale; // [b, KVH, rep·L, T]
        let mut scores = scores.reshape([b, h, l, total]); // [b, H, L, T]
        if let Some(mask) = mask {
            if mask.dims() != [b, 1, l, total] {
                return Err(VlmError::Input(format!(
                    "attention mask is {:?}, expected [{b}, 1, {l}, {total}]",
                    mask.dims()
                )));
            }
            scores = scores.mask_fill(mask.clone(), f32::NEG_INFINITY);
        } else if l > 1 {
            // Query i (absolute position past + i) sees keys 0..=past + i.
            let mask = Tensor::<B, 2, Bool>::tril_mask([l, total], past as i64, &scores.device());
            scores = scores.mask_fill(mask.reshape([1, 1, l, total]), f32::NEG_INFINITY);
        }
        let probs = softmax(scores, 3).reshape([b, kvh, rep * l, total]);
        let out = probs.matmul(v).reshape([b, h, l, hd]); // [b, H, L, hd]
        let out = out.swap_dims(1, 2).reshape([b, l, h * hd]); // [b, L, H·hd]
        o_proj(out)
    }
}

/// `Linear` on the rows of `[b, L, in]` as one `[b·L, in]` matrix.
///
/// burn's linear reshapes the weight to the input's rank, and burn-ndarray 0.21's reshape copies, so a
/// 3-D input copies every weight matrix once more per call; a 2-D input skips that copy. On the CPU
/// backend [`crate::cpu::linear`] multiplies the weight in place.
fn linear<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, l, d] = x.dims();
    let y = crate::cpu::linear(layer, x.reshape([b * l, d]));
    let out = y.dims()[1];
    y.reshape([b, l, out])
}

/// A projection held in panels on the rows of `[b, L, in]`.
fn packed<B: Backend>(weight: &PanelMatrix, x: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
    let [b, l, d] = x.dims();
    let [inputs, outputs] = weight.dims();
    let y = crate::cpu::panels_times(&x.reshape([b * l, d]), weight).ok_or_else(|| {
        VlmError::Input(format!("input of width {d} for a packed [{inputs}, {outputs}] projection (CPU backend only)"))
    })?;
    Ok(y.reshape([b, l, outputs]))
}

/// Positions `(p, p, p)` for `n` text tokens starting at `start`.
pub fn text_positions(start: i64, n: usize) -> [Vec<i64>; 3] {
    let p: Vec<i64> = (0..n as i64).map(|i| start + i).collect();
    [p.clone(), p.clone(), p]
}

/// `x·cos + rotate_half(x)·sin` on the last dimension.
pub(crate) fn apply_rotary<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    cos: Tensor<B, D>,
    sin: Tensor<B, D>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let half = dims[D - 1] / 2;
    let x1 = x.clone().narrow(D - 1, 0, half);
    let x2 = x.clone().narrow(D - 1, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], D - 1);
    x * cos + rotated * sin
}
