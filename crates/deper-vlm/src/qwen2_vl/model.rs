//! Qwen2-VL for conditional generation, with DEPER's persona-token injection.
//!
//! Key characteristics:
//! - the vision tower's features replace, in order, the embeddings at `<|image_pad|>` positions
//!   (`masked_scatter`); each run of image tokens is one `image_grid_thw` entry;
//! - persona injection: the input embedding at each persona-token position is **replaced** by a given
//!   vector (the DEPER adapter output); positions stay text-like; only the prompt is affected, generated
//!   tokens always use their ordinary embeddings;
//! - M-RoPE positions from [`super::mrope::rope_index`]; generated token `n` gets `(p, p, p)` with
//!   `p = L + n + rope_delta`;
//! - generation: prefill into a preallocated [`KvCache`], then one token per step, seeded sampler,
//!   stop tokens, max new tokens, and a streaming callback that can stop early;
//! - batched generation ([`Qwen2Vl::generate_batch_with`]): prompts left-padded to one length with a
//!   padding mask, per-row positions, one forward pass per step for all rows.
//!
//! Reference: transformers `Qwen2VLForConditionalGeneration` (`modeling_qwen2_vl.py`), checked against
//! `tests/fixtures/qwen2_vl_tiny`.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::config::Qwen2VlConfig;
use super::mrope::rope_index;
use super::vision::VisionTower;
use crate::cache::KvCache;
use crate::decoder::{text_positions, Rope, TextModel};
use crate::generation::{
    check_cache_fits, check_context, check_prompt, logits_to_vec, sample_loop, start_generation, stop_reason,
    Generated, GenerationConfig, StopReason,
};
use crate::persona::{assemble_embeds, Persona};
use crate::sampling::Sampler;
use crate::{Result, VlmError};

/// The whole model.
#[derive(Module, Debug)]
pub struct Qwen2Vl<B: Backend> {
    pub visual: VisionTower<B>,
    pub model: TextModel<B>,
    pub image_token_id: usize,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub hidden_size: usize,
}

/// One prompt: ids with image pads already expanded, its images, and an optional persona.
#[derive(Debug, Clone)]
pub struct MultimodalInput<B: Backend> {
    pub input_ids: Vec<u32>,
    /// `[N, 1176]`, or `None` for a text-only prompt.
    pub pixel_values: Option<Tensor<B, 2>>,
    /// `(t, h, w)` per image, in 14-px patches.
    pub image_grid_thw: Vec<[usize; 3]>,
    pub persona: Option<Persona<B>>,
}

impl Qwen2VlConfig {
    /// A randomly initialised model (for shapes and tests; real weights come from `load_pretrained`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Qwen2Vl<B> {
        Qwen2Vl {
            visual: self.vision.init(device),
            model: self.text.init(device),
            image_token_id: self.tokens.image_token_id as usize,
            max_position_embeddings: self.text.max_position_embeddings,
            vocab_size: self.text.vocab_size,
            hidden_size: self.text.hidden_size,
        }
    }
}

impl<B: Backend> Qwen2Vl<B> {
    fn device(&self) -> B::Device {
        self.model.embed_tokens.weight.device()
    }

    /// Input embeddings with image features and persona rows in place, the M-RoPE positions and
    /// `rope_delta`.
    ///
    /// # Shapes
    /// - output embeddings: `[1, L, hidden]`; positions `[3][L]`
    pub fn inputs_embeds(&self, input: &MultimodalInput<B>) -> Result<(Tensor<B, 3>, [Vec<i64>; 3], i64)> {
        let ids = &input.input_ids;
        check_prompt(ids, self.vocab_size, self.max_position_embeddings)?;
        let device = self.device();
        let image_id = self.image_token_id as u32;
        let merge = self.visual.spatial_merge_size;
        let (positions, delta) = rope_index(ids, image_id, &input.image_grid_thw, merge)?;

        let features = match &input.pixel_values {
            Some(pixels) => Some(self.visual.forward(pixels.clone(), &input.image_grid_thw)?), // [n, D]
            None => None,
        };
        let embeds = assemble_embeds(&self.model, ids, image_id, features, input.persona.as_ref(), &device)?;
        Ok((embeds, positions, delta))
    }

    /// Logits of every position.
    ///
    /// # Shapes
    /// - input_ids: L ids (image pads expanded); pixel_values `[N, patch_dim]`; grid_thw one per image;
    ///   persona embeddings `[K, hidden]` with K token ids
    /// - output: `[1, L, vocab]`
    pub fn forward(
        &self,
        input_ids: &[u32],
        pixel_values: Option<Tensor<B, 2>>,
        grid_thw: &[[usize; 3]],
        persona: Option<Persona<B>>,
    ) -> Result<Tensor<B, 3>> {
        let input =
            MultimodalInput { input_ids: input_ids.to_vec(), pixel_values, image_grid_thw: grid_thw.to_vec(), persona };
        self.forward_input(&input)
    }

    /// [`Self::forward`] on a [`MultimodalInput`].
    pub fn forward_input(&self, input: &MultimodalInput<B>) -> Result<Tensor<B, 3>> {
        let (embeds, positions, _) = self.inputs_embeds(input)?;
        let rope = self.model.rope(&positions, &self.device());
        let hidden = self.model.forward_hidden(embeds, &rope, None)?;
        Ok(self.model.logits(hidden))
    }

    /// A KV cache sized for `max_len` positions.
    pub fn new_cache(&self, max_len: usize) -> KvCache<B> {
        self.model.new_cache(1, max_len)
    }

    /// Resets `cache`, runs the prompt through it and returns the last position's logits `[1, vocab]`
    /// and `rope_delta`.
    pub fn prefill(&self, input: &MultimodalInput<B>, cache: &mut KvCache<B>) -> Result<(Tensor<B, 2>, i64)> {
        cache.reset();
        let (embeds, positions, delta) = self.inputs_embeds(input)?;
        let len = input.input_ids.len();
        check_cache_fits(len, cache)?;
        let rope = self.model.rope(&positions, &self.device());
        let hidden = self.model.forward_hidden(embeds, &rope, Some(&mut cache.layers))?; // [1, L, D]
        let last = hidden.narrow(1, len - 1, 1);
        Ok((self.model.logits(last).reshape([1, self.vocab_size]), delta))
    }

    /// Feeds one token after what `cache` holds; returns its logits `[1, vocab]`.
    pub fn decode_step(&self, token: u32, rope_delta: i64, cache: &mut KvCache<B>) -> Result<Tensor<B, 2>> {
        let device = self.device();
        let position = cache.len() as i64 + rope_delta;
        if cache.len() >= self.max_position_embeddings {
            return Err(VlmError::Input(format!(
                "sequence reached the context of {} positions",
                self.max_position_embeddings
            )));
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![i64::from(token)], [1, 1]), &device);
        let embeds = self.model.embed(ids); // [1, 1, D]
        let rope = self.model.rope(&text_positions(position, 1), &device);
        let hidden = self.model.forward_hidden(embeds, &rope, Some(&mut cache.layers))?;
        Ok(self.model.logits(hidden).reshape([1, self.vocab_size]))
    }

    /// Generates with a fresh cache sized for the prompt and `max_new_tokens`.
    /// `on_token` sees every new id as it is chosen; returning `false` stops generation.
    pub fn generate(
        &self,
        input: &MultimodalInput<B>,
        config: &GenerationConfig,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generated> {
        let needed = input.input_ids.len() + config.max_new_tokens;
        self.check_context(needed)?;
        let mut cache = self.new_cache(needed);
        self.generate_with_cache(input, config, &mut cache, on_token)
    }

    /// A KV cache for `batch` rows of `max_len` positions each.
    pub fn new_batch_cache(&self, batch: usize, max_len: usize) -> KvCache<B> {
        self.model.new_cache(batch, max_len)
    }

    /// Generates several prompts together with one configuration; see [`Self::generate_batch_with`].
    pub fn generate_batch(&self, inputs: &[MultimodalInput<B>], config: &GenerationConfig) -> Result<Vec<Generated>> {
        let configs = vec![config.clone(); inputs.len()];
        self.generate_batch_with(inputs, &configs, &mut |_, _| true)
    }

    /// Generates several prompts as one batch: every forward pass runs all unfinished rows at once.
    ///
    /// Prompts of different lengths are left-padded to the longest; padded key positions are masked
    /// for the real queries (padded queries only see padding, so nothing becomes NaN), and every row
    /// keeps its own M-RoPE positions and `rope_delta`, so a row's tokens are those [`Self::generate`]
    /// gives for it alone (up to float rounding in the reductions). Each row has its own generation
    /// config (length, sampler, stop tokens); a finished row rides along until every row is done and
    /// its outputs are ignored. `on_token(row, id)` streams; returning `false` ends that row only.
    pub fn generate_batch_with(
        &self,
        inputs: &[MultimodalInput<B>],
        configs: &[GenerationConfig],
        on_token: &mut dyn FnMut(usize, u32) -> bool,
    ) -> Result<Vec<Generated>> {
        if configs.len() != inputs.len() {
            return Err(VlmError::Input(format!("{} prompts but {} generation configs", inputs.len(), configs.len())));
        }
        for (input, config) in inputs.iter().zip(configs) {
            self.check_context(input.input_ids.len() + config.max_new_tokens)?;
        }
        let rows = inputs.len();
        let mut results: Vec<Generated> = inputs
            .iter()
            .map(|i| Generated {
                prompt_ids: i.input_ids.clone(),
                generated_ids: Vec::new(),
                stop: StopReason::MaxNewTokens,
            })
            .collect();
        let mut active: Vec<bool> = configs.iter().map(|c| c.max_new_tokens > 0).collect();
        if !active.contains(&true) {
            return Ok(results);
        }
        let device = self.device();
        let prepared = inputs.iter().map(|i| self.inputs_embeds(i)).collect::<Result<Vec<_>>>()?;
        let longest = inputs.iter().map(|i| i.input_ids.len()).max().unwrap_or(0);
        let pads: Vec<usize> = inputs.iter().map(|i| longest - i.input_ids.len()).collect();
        let most_new = configs.iter().map(|c| c.max_new_tokens).max().unwrap_or(0);

        // Prefill: left-padded embeddings, per-row positions (padding at position 0, never seen).
        let mut embeds = Vec::with_capacity(rows);
        let mut positions = Vec::with_capacity(rows);
        let mut deltas = Vec::with_capacity(rows);
        for ((e, p, delta), &pad) in prepared.into_iter().zip(&pads) {
            let padded =
                if pad == 0 { e } else { Tensor::cat(vec![Tensor::zeros([1, pad, self.hidden_size], &device), e], 1) };
            embeds.push(padded);
            positions.push(p.map(|row| std::iter::repeat_n(0, pad).chain(row).collect::<Vec<i64>>()));
            deltas.push(delta);
        }
        let embeds = Tensor::cat(embeds, 0); // [b, Lmax, D]
        let rope = self.model.rope_rows(&positions, &device);
        let mut hidden_mask = Vec::with_capacity(rows * longest * longest);
        for &pad in &pads {
            for i in 0..longest {
                hidden_mask.extend((0..longest).map(|j| j > i || (i >= pad && j < pad)));
            }
        }
        let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(hidden_mask, [rows, 1, longest, longest]), &device);
        let mut cache = self.new_batch_cache(rows, longest + most_new);
        let hidden = self.model.forward_hidden_masked(embeds, &rope, Some(&mut cache.layers), Some(&mask))?;
        let mut logits = self.model.logits(hidden.narrow(1, longest - 1, 1)).reshape([rows, self.vocab_size]);

        let mut samplers: Vec<Sampler> = configs.iter().map(|c| Sampler::new(c.sampling.clone())).collect();
        let mut sequences: Vec<Vec<u32>> = inputs.iter().map(|i| i.input_ids.clone()).collect();
        loop {
            let values = logits_to_vec(logits)?;
            let mut step = vec![0u32; rows];
            for r in 0..rows {
                if !active[r] {
                    continue;
                }
                let row = &values[r * self.vocab_size..(r + 1) * self.vocab_size];
                let token = samplers[r].next_token(row, &sequences[r]);
                sequences[r].push(token);
                results[r].generated_ids.push(token);
                step[r] = token;
                let keep_going = on_token(r, token);
                if let Some(stop) = stop_reason(&configs[r], token, keep_going, results[r].generated_ids.len()) {
                    results[r].stop = stop;
                    active[r] = false;
                }
            }
            if !active.contains(&true) {
                return Ok(results);
            }
            // One decode step for every row; row r's new token sits at its own sequence index.
            let held = cache.len();
            let positions: Vec<i64> = (0..rows).map(|r| (held - pads[r]) as i64 + deltas[r]).collect();
            let rope = self.model.rope(&[positions.clone(), positions.clone(), positions], &device);
            let hd = rope.cos.dims()[3];
            let rope = Rope { cos: rope.cos.reshape([rows, 1, 1, hd]), sin: rope.sin.reshape([rows, 1, 1, hd]) };
            let mut step_mask = Vec::with_capacity(rows * (held + 1));
            for &pad in &pads {
                step_mask.extend((0..=held).map(|j| j < pad));
            }
            let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(step_mask, [rows, 1, 1, held + 1]), &device);
            let ids = Tensor::<B, 2, Int>::from_data(
                TensorData::new(step.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), [rows, 1]),
                &device,
            );
            let hidden =
                self.model.forward_hidden_masked(self.model.embed(ids), &rope, Some(&mut cache.layers), Some(&mask))?;
            logits = self.model.logits(hidden).reshape([rows, self.vocab_size]);
        }
    }

    fn check_context(&self, needed: usize) -> Result<()> {
        check_context(needed, self.max_position_embeddings)
    }

    /// Generates into a caller-owned cache (reset first), so memory is reused between requests.
    pub fn generate_with_cache(
        &self,
        input: &MultimodalInput<B>,
        config: &GenerationConfig,
        cache: &mut KvCache<B>,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generated> {
        if let Some(nothing) = start_generation(&input.input_ids, config, self.max_position_embeddings, cache)? {
            return Ok(nothing);
        }
        let (logits, delta) = self.prefill(input, cache)?;
        sample_loop(&input.input_ids, config, logits, &mut |token| self.decode_step(token, delta, cache), on_token)
    }
}
