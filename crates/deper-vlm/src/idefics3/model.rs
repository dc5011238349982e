//! Idefics3 for conditional generation (SmolVLM), with DEPER's persona-token injection.
//!
//! Key characteristics:
//! - every tile goes through the vision encoder and the connector; tiles whose pixels are all zero
//!   are dropped first (transformers' padding images); the features (`image_seq_len` per tile, tiles
//!   in order) replace, in order, the embeddings at `<image>` positions;
//! - the language model is Llama: the crate's decoder ([`crate::decoder::TextModel`]) without biases,
//!   with plain 1-D rotary positions (all three M-RoPE components equal to the token index, which is
//!   exactly Llama's RoPE), GQA, RMSNorm, SwiGLU, tied or untied head;
//! - persona injection as Qwen2-VL ([`crate::persona`]): the input embedding at each persona-token position of the
//!   prompt is **replaced** by the given vector; generated tokens use their ordinary embeddings;
//! - generation: prefill into a preallocated [`KvCache`], then one token per step at position
//!   `cache.len()`, seeded sampler, stop tokens, max new tokens and a streaming callback.
//!
//! Reference: transformers `Idefics3ForConditionalGeneration` (`modeling_idefics3.py`), checked against
//! `tests/fixtures/idefics3_tiny`.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::config::Idefics3Config;
use super::vision::{Connector, SiglipVision, VisionOutputs};
use crate::cache::{KvCache, LayerCache};
use crate::decoder::{text_positions, TextModel};
use crate::generation::{
    check_cache_fits, check_context, check_prompt, sample_loop, start_generation, Generated, GenerationConfig,
};
use crate::persona::{assemble_embeds, Persona};
use crate::{Result, VlmError};

/// The whole model.
#[derive(Module, Debug)]
pub struct Idefics3<B: Backend> {
    pub vision: SiglipVision<B>,
    pub connector: Connector<B>,
    pub text: TextModel<B>,
    pub image_token_id: usize,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub hidden_size: usize,
}

/// Images of one prompt as the processor returns them.
#[derive(Debug, Clone)]
pub struct Idefics3Images<B: Backend> {
    /// `[N, channels, H, W]`: every tile of every image, in prompt order.
    pub pixel_values: Tensor<B, 4>,
    /// `[N, H, W]` row-major, `true` where a pixel is real (not padding); `None`: all real.
    pub pixel_attention_mask: Option<Vec<bool>>,
}

/// One prompt: ids with `<image>` runs already expanded, its tiles, and an optional persona.
#[derive(Debug, Clone)]
pub struct Idefics3Input<B: Backend> {
    pub input_ids: Vec<u32>,
    pub images: Option<Idefics3Images<B>>,
    pub persona: Option<Persona<B>>,
}

impl Idefics3Config {
    /// A randomly initialised model (for shapes and tests; real weights come from the loader).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Idefics3<B> {
        let t = &self.text;
        let text_config = self.text_config();
        let mut text = text_config.init(device);
        // Llama has no q/k/v biases.
        for layer in &mut text.layers {
            layer.self_attn.q_proj.bias = None;
            layer.self_attn.k_proj.bias = None;
            layer.self_attn.v_proj.bias = None;
        }
        Idefics3 {
            vision: self.vision.init(device),
            connector: self.init_connector(device),
            text,
            image_token_id: self.image_token_id as usize,
            max_position_embeddings: t.max_position_embeddings,
            vocab_size: t.vocab_size,
            hidden_size: t.hidden_size,
        }
    }
}

impl<B: Backend> Idefics3<B> {
    fn device(&self) -> B::Device {
        self.text.embed_tokens.weight.device()
    }

    /// Vision encoder outputs of the tiles that are not all-zero padding.
    pub fn vision_outputs(&self, images: &Idefics3Images<B>) -> Result<VisionOutputs<B>> {
        let [n, _, h, w] = images.pixel_values.dims();
        let p = self.vision.patch_size;
        let device = self.device();
        if let Some(mask) = &images.pixel_attention_mask {
            if mask.len() != n * h * w {
                return Err(VlmError::Input(format!(
                    "pixel_attention_mask has {} values; pixel_values need [{n}, {h}, {w}] = {}",
                    mask.len(),
                    n * h * w
                )));
            }
        }
        // transformers drops tiles whose pixels are all exactly zero (padding images of a batch).
        let flat = images.pixel_values.clone().reshape([n, images.pixel_values.dims()[1] * h * w]);
        let peak = flat.abs().max_dim(1).into_data().convert::<f32>().to_vec::<f32>().map_err(read_err)?;
        let real: Vec<usize> = (0..n).filter(|&i| peak[i] != 0.0).collect();
        if real.is_empty() {
            return Err(VlmError::Input("every tile of pixel_values is all zeros".into()));
        }
        let pixels = if real.len() == n {
            images.pixel_values.clone()
        } else {
            let index = Tensor::<B, 1, Int>::from_data(
                TensorData::new(real.iter().map(|&i| i as i64).collect::<Vec<_>>(), [real.len()]),
                &device,
            );
            images.pixel_values.clone().select(0, index)
        };
        let valid = match &images.pixel_attention_mask {
            Some(mask) => Some(
                real.iter()
                    .map(|&i| valid_patches(&mask[i * h * w..(i + 1) * h * w], h, w, p, i))
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => None,
        };
        self.vision.forward(pixels, valid.as_deref())
    }

    /// Image features, one row per `<image>` token.
    ///
    /// # Shapes
    /// - pixel_values `[N, channels, H, W]` → `[N_real · (H/p)·(W/p) / scale², hidden]`
    pub fn image_features(&self, images: &Idefics3Images<B>) -> Result<Tensor<B, 2>> {
        let out = self.vision_outputs(images)?;
        self.connector.forward(out.last_hidden_state)
    }

    /// Input embeddings with image features and persona rows in place.
    ///
    /// # Shapes
    /// - output: `[1, L, hidden]`
    pub fn inputs_embeds(&self, input: &Idefics3Input<B>) -> Result<Tensor<B, 3>> {
        let ids = &input.input_ids;
        check_prompt(ids, self.vocab_size, self.max_position_embeddings)?;
        let features = match &input.images {
            Some(images) => Some(self.image_features(images)?), // [n, D]
            None => None,
        };
        let image_id = self.image_token_id as u32;
        assemble_embeds(&self.text, ids, image_id, features, input.persona.as_ref(), &self.device())
    }

    /// The decoder over `embeds` at positions `start..start + L`, appending to `caches` when given.
    fn decode(&self, embeds: Tensor<B, 3>, start: usize, caches: Option<&mut [LayerCache<B>]>) -> Result<Tensor<B, 3>> {
        let len = embeds.dims()[1];
        let rope = self.text.rope(&text_positions(start as i64, len), &self.device());
        self.text.forward_hidden(embeds, &rope, caches)
    }

    /// Logits of every position. # Shapes: output `[1, L, vocab]`.
    pub fn forward(&self, input: &Idefics3Input<B>) -> Result<Tensor<B, 3>> {
        let embeds = self.inputs_embeds(input)?;
        let hidden = self.decode(embeds, 0, None)?;
        Ok(self.text.logits(hidden))
    }

    /// A KV cache sized for `max_len` positions.
    pub fn new_cache(&self, max_len: usize) -> KvCache<B> {
        self.text.new_cache(1, max_len)
    }

    /// Resets `cache`, runs the prompt through it and returns the last position's logits `[1, vocab]`.
    pub fn prefill(&self, input: &Idefics3Input<B>, cache: &mut KvCache<B>) -> Result<Tensor<B, 2>> {
        cache.reset();
        let len = input.input_ids.len();
        check_cache_fits(len, cache)?;
        let embeds = self.inputs_embeds(input)?;
        let hidden = self.decode(embeds, 0, Some(&mut cache.layers))?; // [1, L, D]
        let last = hidden.narrow(1, len - 1, 1);
        Ok(self.text.logits(last).reshape([1, self.vocab_size]))
    }

    /// Feeds one token after what `cache` holds; returns its logits `[1, vocab]`.
    pub fn decode_step(&self, token: u32, cache: &mut KvCache<B>) -> Result<Tensor<B, 2>> {
        if cache.len() >= self.max_position_embeddings {
            return Err(VlmError::Input(format!(
                "sequence reached the context of {} positions",
                self.max_position_embeddings
            )));
        }
        if token as usize >= self.vocab_size {
            return Err(VlmError::Input(format!("token id {token} is outside the vocabulary of {}", self.vocab_size)));
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![i64::from(token)], [1, 1]), &self.device());
        let embeds = self.text.embed(ids); // [1, 1, D]
        let start = cache.len();
        let hidden = self.decode(embeds, start, Some(&mut cache.layers))?;
        Ok(self.text.logits(hidden).reshape([1, self.vocab_size]))
    }

    /// Generates with a fresh cache sized for the prompt and `max_new_tokens`.
    /// `on_token` sees every new id as it is chosen; returning `false` stops generation.
    pub fn generate(
        &self,
        input: &Idefics3Input<B>,
        config: &GenerationConfig,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generated> {
        let needed = input.input_ids.len() + config.max_new_tokens;
        check_context(needed, self.max_position_embeddings)?;
        let mut cache = self.new_cache(needed);
        self.generate_with_cache(input, config, &mut cache, on_token)
    }

    /// Generates into a caller-owned cache (reset first), so memory is reused between requests.
    pub fn generate_with_cache(
        &self,
        input: &Idefics3Input<B>,
        config: &GenerationConfig,
        cache: &mut KvCache<B>,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generated> {
        if let Some(nothing) = start_generation(&input.input_ids, config, self.max_position_embeddings, cache)? {
            return Ok(nothing);
        }
        let logits = self.prefill(input, cache)?;
        sample_loop(&input.input_ids, config, logits, &mut |token| self.decode_step(token, cache), on_token)
    }
}

fn read_err(e: burn::tensor::DataError) -> VlmError {
    VlmError::Input(format!("reading a tensor: {e:?}"))
}

/// Valid patch rectangle `(rows, cols)` of one tile from its pixel mask `[H, W]`.
///
/// A patch is valid when any of its pixels is (transformers' unfold + sum > 0). The processor pads at
/// the bottom and right, so valid patches form a top-left rectangle; any other shape is an error.
fn valid_patches(mask: &[bool], h: usize, w: usize, p: usize, tile: usize) -> Result<(usize, usize)> {
    let (rows, cols) = (h / p, w / p);
    let patch_valid = |r: usize, c: usize| {
        (0..p).any(|y| mask[(r * p + y) * w + c * p..(r * p + y) * w + (c + 1) * p].iter().any(|&v| v))
    };
    let valid_rows = (0..rows).take_while(|&r| patch_valid(r, 0)).count();
    let valid_cols = (0..cols).take_while(|&c| patch_valid(0, c)).count();
    for r in 0..rows {
        for c in 0..cols {
            if patch_valid(r, c) != (r < valid_rows && c < valid_cols) {
                return Err(VlmError::Input(format!(
                    "pixel_attention_mask of tile {tile}: valid patches do not form a top-left rectangle \
                     (patch row {r}, column {c})"
                )));
            }
        }
    }
    if valid_rows == 0 || valid_cols == 0 {
        return Err(VlmError::Input(format!("pixel_attention_mask of tile {tile} marks no pixel as valid")));
    }
    Ok((valid_rows, valid_cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_patches_reads_the_top_left_rectangle() {
        // 4×4 pixels, patch 2: valid region 3 rows × 2 columns of pixels → 2 × 1 patches.
        let mut mask = vec![false; 16];
        for y in 0..3 {
            for x in 0..2 {
                mask[y * 4 + x] = true;
            }
        }
        assert_eq!(valid_patches(&mask, 4, 4, 2, 0).unwrap(), (2, 1));
        mask[15] = true; // a valid pixel in the bottom-right patch breaks the rectangle
        assert!(valid_patches(&mask, 4, 4, 2, 0).is_err());
        assert!(valid_patches(&[false; 16], 4, 4, 2, 0).is_err());
    }
}
