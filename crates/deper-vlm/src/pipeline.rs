//! The CLI-facing pipeline: one Hugging Face model folder → captions and logits.
//!
//! [`Vlm::load`] bundles the model, tokenizer + chat template and image processor of a folder.
//! [`Vlm::caption`] does what `deper caption` needs: decode and preprocess the image, template the user
//! turn (image before text, generation prompt, pads expanded), inject persona vectors, generate with a
//! streaming callback, and decode; [`Vlm::caption_batch`] does several at once. [`Vlm::forward_file`] is `deper vlm forward`: safetensors in, logits
//! out, with the tensor names of the issue (`input_ids`, `pixel_values`, `image_grid_thw`,
//! `persona_embeddings`, `persona_token_ids` → `logits`). [`AnyVlm`] dispatches a folder to [`Vlm`] or
//! [`Idefics3Vlm`] (SmolVLM) by its `model_type`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use deper_weights::{write_safetensors, Checkpoint};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

use crate::config::Qwen2VlConfig;
use crate::idefics3::pipeline::Idefics3Vlm;
use crate::model::{GenerationConfig, MultimodalInput, Persona, Qwen2Vl};

use crate::preprocess::ImageProcessor;
use crate::pretrained::load_weights;
use crate::tokenizer::Qwen2VlTokenizer;
use crate::{Result, VlmError};

/// The user text of `deper caption` when `--prompt` is not given.
pub const DEFAULT_CAPTION_PROMPT: &str = "Describe the image.";

/// The persona token DEPER adds to the tokenizer.
pub const PERSONA_TOKEN: &str = "<|persona|>";

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

/// Persona vectors as stored in a file: `[K, hidden]` row-major and the K token ids
/// (defaults to `<|persona|>` repeated K times).
#[derive(Debug, Clone, PartialEq)]
pub struct PersonaVectors {
    pub values: Vec<f32>,
    pub rows: usize,
    pub token_ids: Option<Vec<u32>>,
}

impl PersonaVectors {
    /// Reads `persona_embeddings` ([K, hidden] or [hidden]) and optional `persona_token_ids` [K] from a
    /// safetensors file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let ckpt = Checkpoint::open(path)?;
        read_persona(&ckpt)?
            .ok_or_else(|| VlmError::Input(format!("{}: no `persona_embeddings` tensor", path.display())))
    }
}

pub(crate) fn read_persona(ckpt: &Checkpoint) -> Result<Option<PersonaVectors>> {
    if !ckpt.contains("persona_embeddings") {
        return Ok(None);
    }
    let (values, shape) = ckpt.f32_any("persona_embeddings")?;
    let rows = if shape.len() == 2 { shape[0] } else { 1 };
    let token_ids = if ckpt.contains("persona_token_ids") {
        Some(ckpt.i64_any("persona_token_ids")?.0.into_iter().map(|v| v as u32).collect())
    } else {
        None
    };
    Ok(Some(PersonaVectors { values, rows, token_ids }))
}

/// One caption of [`Vlm::caption_batch`].
#[derive(Debug, Clone)]
pub struct CaptionJob<'a> {
    pub image: &'a Path,
    /// The user turn's text.
    pub prompt: &'a str,
    pub persona: Option<&'a PersonaVectors>,
    pub generation: GenerationConfig,
}

/// What `deper caption --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Caption {
    pub text: String,
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
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
        let mut eos_token_ids = generation_eos(dir)?;
        if eos_token_ids.is_empty() {
            eos_token_ids.extend(config.tokens.eos_token_id);
        }
        Ok(Self { model, config, tokenizer, processor, eos_token_ids, device: device.clone() })
    }

    fn persona(&self, persona: &PersonaVectors) -> Result<Persona<B>> {
        persona_tensor(persona, self.config.text.hidden_size, &self.tokenizer, &self.device)
    }

    /// Greedy generation of up to `max_new_tokens` that stops at the model's end-of-turn ids.
    pub fn generation_config(&self, max_new_tokens: usize) -> GenerationConfig {
        GenerationConfig { max_new_tokens, stop_tokens: self.eos_token_ids.clone(), ..Default::default() }
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
        crate::model::check_context(
            input.input_ids.len() + generation.max_new_tokens,
            self.config.text.max_position_embeddings,
        )?;
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
    fn finish(&self, out: crate::model::Generated, generation: &GenerationConfig) -> Result<Caption> {
        let content: Vec<u32> =
            out.generated_ids.iter().copied().filter(|id| !generation.stop_tokens.contains(id)).collect();
        let text = self.tokenizer.decode(&content, true)?;
        Ok(Caption { text, prompt_ids: out.prompt_ids, generated_ids: out.generated_ids })
    }

    /// `deper vlm forward`: reads `input_ids` i64 [1, L], optional `pixel_values` f32 [N, patch_dim] with
    /// `image_grid_thw` i64 [n, 3], optional `persona_embeddings` f32 [K, hidden] with `persona_token_ids`
    /// i64 [K]; writes `logits` f32 [1, L, vocab].
    pub fn forward_file(&self, inputs: &Path, out: &Path) -> Result<()> {
        let ckpt = Checkpoint::open(inputs)?;
        let (ids, shape) = ckpt.i64_any("input_ids")?;
        if shape.len() != 2 || shape[0] != 1 {
            return Err(VlmError::Input(format!("input_ids must be [1, L], found {shape:?}")));
        }
        let input_ids: Vec<u32> = ids
            .iter()
            .map(|&i| u32::try_from(i).map_err(|_| VlmError::Input(format!("negative or huge token id {i}"))))
            .collect::<Result<_>>()?;
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
        let dims = logits.dims();
        let values = logits
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| VlmError::Input(format!("reading logits: {e:?}")))?;
        write_safetensors(out, &[("logits", deper_weights::TensorData::F32(&values, &dims))])?;
        Ok(())
    }
}

/// Persona vectors as a `[K, hidden]` tensor with their token ids (default: the tokenizer's
/// `<|persona|>` repeated K times).
pub(crate) fn persona_tensor<B: Backend>(
    persona: &PersonaVectors,
    hidden: usize,
    tokenizer: &Qwen2VlTokenizer,
    device: &B::Device,
) -> Result<Persona<B>> {
    if persona.values.len() != persona.rows * hidden {
        return Err(VlmError::Input(format!(
            "persona_embeddings hold {} values, expected {} rows × hidden {hidden}",
            persona.values.len(),
            persona.rows
        )));
    }
    let token_ids = match &persona.token_ids {
        Some(ids) => ids.clone(),
        None => {
            let id = tokenizer.token_id(PERSONA_TOKEN).ok_or_else(|| {
                VlmError::Input(format!("the tokenizer has no {PERSONA_TOKEN} token; give persona_token_ids"))
            })?;
            vec![id; persona.rows]
        }
    };
    Ok(Persona {
        embeddings: Tensor::from_data(TensorData::new(persona.values.clone(), [persona.rows, hidden]), device),
        token_ids,
    })
}

/// `eos_token_id` of `generation_config.json` (an id or a list), if the file exists.
pub(crate) fn generation_eos(dir: &Path) -> Result<Vec<u32>> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| VlmError::Io { path: path.clone(), source: e })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| VlmError::Config(format!("{}: {e}", path.display())))?;
    Ok(match v.get("eos_token_id") {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|n| n as u32).collect(),
        _ => Vec::new(),
    })
}

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
