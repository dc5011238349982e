//! The family dispatch: one model folder → the pipeline of its family, chosen by `config.json`'s
//! `model_type`. The only place that names every family; the families never import each other.
//!
//! Reference: transformers `AutoModelForImageTextToText` (the `model_type` → class mapping).

use burn::tensor::backend::Backend;
use serde_json::Value;
use std::path::Path;

use crate::caption::{Caption, CaptionJob};
use crate::generation::GenerationConfig;
use crate::idefics3::Idefics3Vlm;
use crate::persona::PersonaVectors;
use crate::qwen2_vl::Vlm;
use crate::tokenizer::Qwen2VlTokenizer;
use crate::{Result, VlmError};

/// The model families `deper caption` and `deper vlm forward` accept, chosen by `model_type` in
/// `config.json`: `qwen2_vl` and `qwen2_5_vl` ([`Vlm`]) and `idefics3` (SmolVLM, [`Idefics3Vlm`]).
#[derive(Debug)]
pub enum AnyVlm<B: Backend> {
    // Boxed: both are large and of different sizes.
    Qwen2Vl(Box<Vlm<B>>),
    Idefics3(Box<Idefics3Vlm<B>>),
}

/// `model_type` of a model folder's `config.json`.
pub fn model_type(dir: &Path) -> Result<String> {
    let file = dir.join("config.json");
    let text = std::fs::read_to_string(&file).map_err(|e| VlmError::Io { path: file.clone(), source: e })?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| VlmError::Config(format!("{}: not JSON: {e}", file.display())))?;
    v.get("model_type")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| VlmError::Config(format!("{}: no `model_type`", file.display())))
}

impl<B: Backend> AnyVlm<B> {
    /// Loads a folder of any supported family; another `model_type` is an error naming it.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        match model_type(dir)?.as_str() {
            "qwen2_vl" | "qwen2_5_vl" => Ok(Self::Qwen2Vl(Box::new(Vlm::load(dir, device)?))),
            "idefics3" => Ok(Self::Idefics3(Box::new(Idefics3Vlm::load(dir, device)?))),
            other => Err(VlmError::Config(format!(
                "{}: model_type `{other}` is not supported (qwen2_vl, qwen2_5_vl, idefics3)",
                dir.join("config.json").display()
            ))),
        }
    }

    /// Width of the language model's embeddings (what a persona vector must have).
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Qwen2Vl(v) => v.config.text.hidden_size,
            Self::Idefics3(v) => v.config.text.hidden_size,
        }
    }

    /// Several captions: one batched generation for the Qwen family ([`Vlm::caption_batch`]), one
    /// after the other for Idefics3; one result per job either way.
    pub fn caption_batch(
        &self,
        jobs: &[CaptionJob<'_>],
        on_token: &mut dyn FnMut(usize, u32) -> bool,
    ) -> Vec<Result<Caption>> {
        match self {
            Self::Qwen2Vl(v) => v.caption_batch(jobs, on_token),
            Self::Idefics3(v) => jobs
                .iter()
                .enumerate()
                .map(|(k, job)| {
                    v.caption(job.image, job.prompt, job.persona, &job.generation, &mut |id| on_token(k, id))
                })
                .collect(),
        }
    }

    pub fn tokenizer(&self) -> &Qwen2VlTokenizer {
        match self {
            Self::Qwen2Vl(v) => &v.tokenizer,
            Self::Idefics3(v) => &v.tokenizer,
        }
    }

    /// See [`Vlm::generation_config`].
    pub fn generation_config(&self, max_new_tokens: usize) -> GenerationConfig {
        match self {
            Self::Qwen2Vl(v) => v.generation_config(max_new_tokens),
            Self::Idefics3(v) => v.generation_config(max_new_tokens),
        }
    }

    /// See [`Vlm::caption`].
    pub fn caption(
        &self,
        image: &Path,
        prompt: &str,
        persona: Option<&PersonaVectors>,
        generation: &GenerationConfig,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Caption> {
        match self {
            Self::Qwen2Vl(v) => v.caption(image, prompt, persona, generation, on_token),
            Self::Idefics3(v) => v.caption(image, prompt, persona, generation, on_token),
        }
    }

    /// `deper vlm forward`: Qwen2-VL takes `pixel_values` f32 [N, patch_dim] with `image_grid_thw`;
    /// Idefics3 takes `pixel_values` f32 [N_tiles, 3, H, W] with an optional `pixel_attention_mask`
    /// [N_tiles, H, W]. Both take `input_ids` and the persona tensors and write `logits`.
    pub fn forward_file(&self, inputs: &Path, out: &Path) -> Result<()> {
        match self {
            Self::Qwen2Vl(v) => v.forward_file(inputs, out),
            Self::Idefics3(v) => v.forward_file(inputs, out),
        }
    }
}
