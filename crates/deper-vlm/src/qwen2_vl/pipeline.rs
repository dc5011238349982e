//! One Qwen2-VL / Qwen2.5-VL model folder → captions and logits (`deper caption`, `deper vlm forward`).
//!
//! [`Vlm::load`] bundles the model, tokenizer + chat template and image processor of a folder.
//! [`Vlm::caption`] does what `deper caption` needs: decode and preprocess the image, template the user
//! turn (image before text, generation prompt, pads expanded), inject persona vectors, generate with a
//! streaming callback, and decode; [`Vlm::caption_batch`] does several at once. [`Vlm::forward_file`]
//! is `deper vlm forward`: safetensors in, logits out, with the tensor names of the issue (`input_ids`,
//! `pixel_values`, `image_grid_thw`, `persona_embeddings`, `persona_token_ids` → `logits`).
//!
//! Reference: transformers `Qwen2VLProcessor` + `Qwen2VLForConditionalGeneration.generate`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use deper_weights::Checkpoint;
use std::path::Path;

use super::config::Qwen2VlConfig;
use super::model::{MultimodalInput, Qwen2Vl};
use super::preprocess::ImageProcessor;
use super::pretrained::load_weights;
use crate::caption::{
    caption_of, end_of_turn_ids, read_input_ids, until_end_of_turn, write_logits, Caption, CaptionJob,
};
use crate::generation::{check_context, Generated, GenerationConfig};
use crate::persona::{persona_tensor, read_persona, Persona, PersonaVectors};
use crate::tokenizer::Qwen2VlTokenizer;
use crate::{Result, VlmError};

/// Model, tokenizer and processor of one folder.
#[derive(Debug)]
pub struct Vlm<B: Backend> {
    pub model: Qwen2Vl<B>,
    pub config: Qwen2VlConfig,
    pub tokenizer: Qwen2VlTokenizer,
    pub processor: ImageProcessor,
    /// End-of-turn ids from `generation_config.json` (or `config.json`).
    pub eos_token_ids: Vec<u32>,
    pub device: B::Device,
}

impl<B: Backend> Vlm<B> {
    /// Loads everything from a Hugging Face model folder.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = Qwen2VlConfig::from_path(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        let mut model = load_weights(&config, &ckpt, device)?;
        // Loaded for inference: on the CPU the language model's weights go into panels once.
        model.model = model.model.pack_for_cpu();
        let tokenizer = Qwen2VlTokenizer::from_dir(dir)?;
        let processor = ImageProcessor::from_dir(dir)?;
        let eos_token_ids = end_of_turn_ids(dir, config.tokens.eos_token_id)?;
        Ok(Self { model, config, tokenizer, processor, eos_token_ids, device: device.clone() })
    }

    fn persona(&self, persona: &PersonaVectors) -> Result<Persona<B>> {
        persona_tensor(persona, self.config.text.hidden_size, &self.tokenizer, &self.device)
    }

    /// Greedy generation of up to `max_new_tokens` that stops at the model's end-of-turn ids.
    pub fn generation_config(&self, max_new_tokens: usize) -> GenerationConfig {
        until_end_of_turn(&self.eos_token_ids, max_new_tokens)
    }

    /// Captions an image file. `prompt` is the user turn's text (the image is placed before it); with
    /// persona vectors the text must contain their persona tokens. `generation` is used as given (see
    /// [`Self::generation_config`] for the usual stop tokens); stop tokens are left out of the text.
    /// `on_token` streams ids.
    pub fn caption(
        &self,
        image: &Path,
        prompt: &str,
        persona: Option<&PersonaVectors>,
        generation: &GenerationConfig,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Caption> {
        let input = self.prepare(image, prompt, persona)?;
        let out = self.model.generate(&input, generation, on_token)?;
        self.finish(out, generation)
    }

    /// Several captions generated as one batch (see [`Qwen2Vl::generate_batch_with`]); one result per
    /// job, in order. A job whose image, prompt or persona is bad gets its own error and the others
    /// still run; if the batch as a whole is refused, every job is retried alone so each gets its own
    /// answer. `on_token(job, id)` streams.
    pub fn caption_batch(
        &self,
        jobs: &[CaptionJob<'_>],
        on_token: &mut dyn FnMut(usize, u32) -> bool,
    ) -> Vec<Result<Caption>> {
        let mut results: Vec<Option<Result<Caption>>> = Vec::with_capacity(jobs.len());
        let mut ready = Vec::new();
        for (k, job) in jobs.iter().enumerate() {
            let prepared = self.prepare(job.image, job.prompt, job.persona).and_then(|input| {
                self.check_fits(&input, &job.generation)?;
                Ok(input)
            });
            match prepared {
                Ok(input) => {
                    ready.push((k, input));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let inputs: Vec<MultimodalInput<B>> = ready.iter().map(|(_, input)| input.clone()).collect();
        let configs: Vec<GenerationConfig> = ready.iter().map(|(k, _)| jobs[*k].generation.clone()).collect();
        let rows: Vec<usize> = ready.iter().map(|(k, _)| *k).collect();
        match self.model.generate_batch_with(&inputs, &configs, &mut |row, id| on_token(rows[row], id)) {
            Ok(outs) => {
                for (out, &k) in outs.into_iter().zip(&rows) {
                    results[k] = Some(self.finish(out, &jobs[k].generation));
                }
            }
            Err(_) => {
                for (input, &k) in inputs.iter().zip(&rows) {
                    let generation = &jobs[k].generation;
                    let out = self.model.generate(input, generation, &mut |id| on_token(k, id));
                    results[k] = Some(out.and_then(|out| self.finish(out, generation)));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(VlmError::Input("caption job was not run".into()))))
            .collect()
    }

    /// The prompt of one caption: the image preprocessed, the user turn templated (image before
    /// text, pads expanded), persona vectors attached.
    fn prepare(&self, image: &Path, prompt: &str, persona: Option<&PersonaVectors>) -> Result<MultimodalInput<B>> {
        let pixels = self.processor.preprocess_file(image)?;
        let (_, prompt_ids) =
            self.tokenizer.caption_prompt(prompt, pixels.grid_thw, self.config.vision.spatial_merge_size)?;
        Ok(MultimodalInput {
            input_ids: prompt_ids,
            pixel_values: Some(pixels.to_tensor(&self.device)),
            image_grid_thw: vec![pixels.grid_thw],
            persona: persona.map(|p| self.persona(p)).transpose()?,
        })
    }

    /// Refuses a job that would make the whole batch fail: too long for the context, or a persona
    /// whose rows do not match its tokens in the prompt.
    fn check_fits(&self, input: &MultimodalInput<B>, generation: &GenerationConfig) -> Result<()> {
        check_context(input.input_ids.len() + generation.max_new_tokens, self.config.text.max_position_embeddings)?;
        if let Some(persona) = &input.persona {
            for &id in &persona.token_ids {
                let rows = persona.token_ids.iter().filter(|&&t| t == id).count();
                let slots = input.input_ids.iter().filter(|&&t| t == id).count();
                if rows != slots {
                    return Err(VlmError::Input(format!(
                        "persona token {id} occurs {slots} times in the prompt but has {rows} persona vectors"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Text of a finished generation (stop tokens left out).
    fn finish(&self, out: Generated, generation: &GenerationConfig) -> Result<Caption> {
        caption_of(&self.tokenizer, out, generation)
    }

    /// `deper vlm forward`: reads `input_ids` i64 `[1, L]`, optional `pixel_values` f32 `[N, patch_dim]`
    /// with `image_grid_thw` i64 `[n, 3]`, optional `persona_embeddings` f32 `[K, hidden]` with
    /// `persona_token_ids` i64 `[K]`; writes `logits` f32 `[1, L, vocab]`.
    pub fn forward_file(&self, inputs: &Path, out: &Path) -> Result<()> {
        let ckpt = Checkpoint::open(inputs)?;
        let input_ids = read_input_ids(&ckpt)?;
        let (pixel_values, grid) = if ckpt.contains("pixel_values") {
            let (values, shape) = ckpt.f32_any("pixel_values")?;
            if shape.len() != 2 {
                return Err(VlmError::Input(format!("pixel_values must be [N, patch_dim], found {shape:?}")));
            }
            let (g, gshape) = ckpt.i64_any("image_grid_thw")?;
            if gshape.len() != 2 || gshape[1] != 3 {
                return Err(VlmError::Input(format!("image_grid_thw must be [n, 3], found {gshape:?}")));
            }
            let grid: Vec<[usize; 3]> = g.chunks(3).map(|c| [c[0] as usize, c[1] as usize, c[2] as usize]).collect();
            (Some(Tensor::from_data(TensorData::new(values, [shape[0], shape[1]]), &self.device)), grid)
        } else {
            (None, Vec::new())
        };
        let persona = read_persona(&ckpt)?.map(|p| self.persona(&p)).transpose()?;
        let logits = self.model.forward(&input_ids, pixel_values, &grid, persona)?;
        write_logits(out, logits)
    }
}
