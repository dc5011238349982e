//! One Idefics3 / SmolVLM model folder → captions and logits, as the Qwen2-VL pipeline does.
//!
//! [`Idefics3Vlm::caption`] decodes and tiles the image, renders the user turn with the chat template
//! (image before text, generation prompt), expands `<image>` for the tile grid, injects persona
//! vectors, generates with a streaming callback and decodes. [`Idefics3Vlm::forward_file`] is
//! `deper vlm forward`: `input_ids` i64 `[1, L]`, optional `pixel_values` f32 `[N_tiles, 3, H, W]`
//! (or transformers' `[1, N_tiles, 3, H, W]`) with an optional `pixel_attention_mask` `[N_tiles, H, W]`
//! (any integer or bool dtype; 1 = real pixel), optional `persona_embeddings` / `persona_token_ids`
//! → `logits` f32 `[1, L, vocab]`.
//!
//! Reference: transformers `Idefics3Processor` + `Idefics3ForConditionalGeneration.generate`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use deper_weights::Checkpoint;
use std::path::Path;

use super::config::Idefics3Config;
use super::model::{Idefics3, Idefics3Images, Idefics3Input};
use super::preprocess::{expand_image_tokens, Idefics3ImageProcessor};
use super::pretrained::load_weights;
use crate::caption::{caption_of, end_of_turn_ids, read_input_ids, until_end_of_turn, write_logits, Caption};
use crate::generation::GenerationConfig;
use crate::persona::{persona_tensor, read_persona, PersonaVectors};
use crate::tokenizer::{ChatMessage, Qwen2VlTokenizer};
use crate::{Result, VlmError};

/// Model, tokenizer (with chat template) and processor of one folder.
#[derive(Debug)]
pub struct Idefics3Vlm<B: Backend> {
    pub model: Idefics3<B>,
    pub config: Idefics3Config,
    /// The crate's tokenizer + chat template wrapper (it is not Qwen2-specific).
    pub tokenizer: Qwen2VlTokenizer,
    pub processor: Idefics3ImageProcessor,
    /// `<image>` tokens per tile.
    pub image_seq_len: usize,
    /// End-of-turn ids from `generation_config.json` (or `config.json`).
    pub eos_token_ids: Vec<u32>,
    pub device: B::Device,
}

impl<B: Backend> Idefics3Vlm<B> {
    /// Loads everything from a Hugging Face model folder.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = Idefics3Config::from_path(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        let mut model = load_weights(&config, &ckpt, device)?;
        // Loaded for inference: on the CPU the language model's weights go into panels once.
        model.text = model.text.pack_for_cpu();
        let tokenizer = Qwen2VlTokenizer::from_dir(dir)?;
        let processor = Idefics3ImageProcessor::from_dir(dir)?;
        let image_seq_len = config.image_seq_len();
        if let Some(n) = processor.image_seq_len.filter(|&n| n != image_seq_len) {
            return Err(VlmError::Config(format!(
                "{}: processor image_seq_len {n} differs from the model's (image_size / patch)² / scale² = {image_seq_len}",
                dir.display()
            )));
        }
        if processor.max_image_size != config.vision.image_size {
            return Err(VlmError::Config(format!(
                "{}: processor max_image_size {} differs from vision_config.image_size {}",
                dir.display(),
                processor.max_image_size,
                config.vision.image_size
            )));
        }
        let eos_token_ids = end_of_turn_ids(dir, config.text.eos_token_id)?;
        Ok(Self { model, config, tokenizer, processor, image_seq_len, eos_token_ids, device: device.clone() })
    }

    /// Greedy generation of up to `max_new_tokens` that stops at the model's end-of-turn ids.
    pub fn generation_config(&self, max_new_tokens: usize) -> GenerationConfig {
        until_end_of_turn(&self.eos_token_ids, max_new_tokens)
    }

    /// The caption prompt: one user turn with the image before `text`, templated with the generation
    /// prompt, `<image>` expanded for a `(rows, cols)` tile grid, tokenised. Returns `(expanded text, ids)`.
    pub fn caption_prompt(&self, text: &str, grid: (usize, usize)) -> Result<(String, Vec<u32>)> {
        let rendered = self.tokenizer.apply_chat_template(&[ChatMessage::user_with_image(text)], true)?;
        let expanded = expand_image_tokens(&rendered, &[grid], self.image_seq_len)?;
        let ids = self.tokenizer.encode(&expanded)?;
        Ok((expanded, ids))
    }

    /// Captions an image file; see [`crate::AnyVlm::caption`] for the arguments.
    pub fn caption(
        &self,
        image: &Path,
        prompt: &str,
        persona: Option<&PersonaVectors>,
        generation: &GenerationConfig,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Caption> {
        let pixels = self.processor.preprocess_file(image)?;
        let (_, prompt_ids) = self.caption_prompt(prompt, (pixels.rows, pixels.cols))?;
        let input = Idefics3Input {
            input_ids: prompt_ids,
            images: Some(Idefics3Images {
                pixel_values: pixels.to_tensor(&self.device),
                pixel_attention_mask: Some(pixels.pixel_attention_mask.clone()),
            }),
            persona: persona
                .map(|p| persona_tensor(p, self.config.text.hidden_size, &self.tokenizer, &self.device))
                .transpose()?,
        };
        let out = self.model.generate(&input, generation, on_token)?;
        caption_of(&self.tokenizer, out, generation)
    }

    /// `deper vlm forward` (see the module docs for the tensors).
    pub fn forward_file(&self, inputs: &Path, out: &Path) -> Result<()> {
        let ckpt = Checkpoint::open(inputs)?;
        let input_ids = read_input_ids(&ckpt)?;
        let images = if ckpt.contains("pixel_values") {
            let (values, shape) = ckpt.f32_any("pixel_values")?;
            // transformers returns [batch = 1, tiles, 3, H, W]; the batch axis is dropped.
            let dims: [usize; 4] = match shape.as_slice() {
                &[n, c, h, w] | &[1, n, c, h, w] => [n, c, h, w],
                other => {
                    return Err(VlmError::Input(format!(
                        "pixel_values must be [N_tiles, 3, H, W] (or [1, N_tiles, 3, H, W]), found {other:?}"
                    )))
                }
            };
            let mask = if ckpt.contains("pixel_attention_mask") {
                let (m, mshape) = ckpt.i64_any("pixel_attention_mask")?;
                let [n, _, h, w] = dims;
                if mshape.iter().product::<usize>() != n * h * w || !matches!(mshape.len(), 3 | 4) {
                    return Err(VlmError::Input(format!(
                        "pixel_attention_mask must be [{n}, {h}, {w}] for pixel_values {shape:?}, found {mshape:?}"
                    )));
                }
                Some(m.into_iter().map(|v| v != 0).collect())
            } else {
                None
            };
            Some(Idefics3Images {
                pixel_values: Tensor::from_data(TensorData::new(values, dims), &self.device),
                pixel_attention_mask: mask,
            })
        } else {
            None
        };
        let persona = read_persona(&ckpt)?
            .map(|p| persona_tensor(&p, self.config.text.hidden_size, &self.tokenizer, &self.device))
            .transpose()?;
        let logits = self.model.forward(&Idefics3Input { input_ids, images, persona })?;
        write_logits(out, logits)
    }
}
