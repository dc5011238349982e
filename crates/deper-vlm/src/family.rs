//! The family dispatch: one model folder → the pipeline of its family, chosen by `config.json`'s
//! `model_type`. The only place that names every family; the families never import each other.
//!
//! Reference: transformers `AutoModelForImageTextToText` (the `model_type` → class mapping).

use burn::tensor::backend::Backend;
use deper_weights::Checkpoint;
use serde_json::Value;
use std::path::Path;

use crate::caption::{Caption, CaptionJob};
use crate::generation::GenerationConfig;
use crate::idefics3::{Idefics3Config, Idefics3Vlm};
use crate::loader::resolve_key;
use crate::persona::PersonaVectors;
use crate::qwen2_vl::{Qwen2VlConfig, Vlm};
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

fn unsupported(dir: &Path, model_type: &str) -> VlmError {
    VlmError::Config(format!(
        "{}: model_type `{model_type}` is not supported (qwen2_vl, qwen2_5_vl, idefics3)",
        dir.join("config.json").display()
    ))
}

/// The language model's input-embedding table of a model folder: where it is in the checkpoint
/// and its size (DEPER's subject encoder embeds captions with it, frozen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputEmbeddingTable {
    /// The stored key (the hub name, or the rename the family's loader would read).
    pub key: String,
    /// Rows (`vocab_size` of the text config).
    pub vocab_size: usize,
    /// Width (`hidden_size` of the text config).
    pub hidden_size: usize,
}

/// Finds the input-embedding table of the model in `dir` (its opened checkpoint `ckpt`) as the
/// family's loader does: `model.embed_tokens.weight` (Qwen2-VL, Qwen2.5-VL) or
/// `model.text_model.embed_tokens.weight` (Idefics3), through the family's key renames (e.g.
/// `model.language_model.embed_tokens.weight`), checked to be `[vocab_size, hidden_size]` of the
/// text config.
pub fn input_embedding_table(dir: &Path, ckpt: &Checkpoint) -> Result<InputEmbeddingTable> {
    let (hub, renames, vocab_size, hidden_size) = match model_type(dir)?.as_str() {
        "qwen2_vl" | "qwen2_5_vl" => {
            let c = Qwen2VlConfig::from_path(dir)?;
            (
                "model.embed_tokens.weight",
                crate::qwen2_vl::pretrained::KEY_RENAMES,
                c.text.vocab_size,
                c.text.hidden_size,
            )
        }
        "idefics3" => {
            let c = Idefics3Config::from_path(dir)?;
            let renames = crate::idefics3::pretrained::KEY_RENAMES;
            ("model.text_model.embed_tokens.weight", renames, c.text.vocab_size, c.text.hidden_size)
        }
        other => return Err(unsupported(dir, other)),
    };
    let key = resolve_key(ckpt, renames, hub);
    let expected = vec![vocab_size, hidden_size];
    match ckpt.info(&key) {
        Some((shape, _)) if shape == expected => Ok(InputEmbeddingTable { key, vocab_size, hidden_size }),
        Some((shape, _)) => Err(VlmError::Config(format!(
            "{}: input embeddings `{key}` are {shape:?}, the text config says {expected:?}",
            dir.display()
        ))),
        None => Err(VlmError::Weights(deper_weights::WeightsError::Missing {
            key: hub.into(),
            expected,
            checkpoint: dir.display().to_string(),
        })),
    }
}

impl<B: Backend> AnyVlm<B> {
    /// Loads a folder of any supported family; another `model_type` is an error naming it.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        match model_type(dir)?.as_str() {
            "qwen2_vl" | "qwen2_5_vl" => Ok(Self::Qwen2Vl(Box::new(Vlm::load(dir, device)?))),
            "idefics3" => Ok(Self::Idefics3(Box::new(Idefics3Vlm::load(dir, device)?))),
            other => Err(unsupported(dir, other)),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name).join("model")
    }

    #[test]
    fn finds_the_input_embeddings_of_every_family() {
        for (name, key, vocab) in [
            ("qwen2_vl_tiny", "model.embed_tokens.weight", 400),
            ("qwen2_5_vl_tiny", "model.embed_tokens.weight", 400),
            ("idefics3_tiny", "model.text_model.embed_tokens.weight", 344),
        ] {
            let dir = fixture(name);
            let table = input_embedding_table(&dir, &Checkpoint::open(&dir).unwrap()).unwrap();
            assert_eq!(table, InputEmbeddingTable { key: key.into(), vocab_size: vocab, hidden_size: 64 }, "{name}");
        }
    }

    #[test]
    fn follows_the_renamed_layout_and_checks_the_shape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture("qwen2_vl_tiny").join("config.json"), dir.path().join("config.json")).unwrap();
        let write = |key: &str, rows: usize| {
            let values = vec![0.0f32; rows * 64];
            let tensors = [(key, deper_weights::TensorData::F32(&values, &[rows, 64]))];
            deper_weights::write_safetensors(&dir.path().join(deper_weights::SINGLE_FILE), &tensors).unwrap();
            Checkpoint::open(dir.path()).unwrap()
        };
        // transformers ≥ 4.52 saves the language model under `model.language_model`.
        let ckpt = write("model.language_model.embed_tokens.weight", 400);
        assert_eq!(input_embedding_table(dir.path(), &ckpt).unwrap().key, "model.language_model.embed_tokens.weight");
        let ckpt = write("model.embed_tokens.weight", 12);
        let err = input_embedding_table(dir.path(), &ckpt).unwrap_err().to_string();
        assert!(err.contains("[12, 64]") && err.contains("[400, 64]"), "{err}");
        let ckpt = write("something.else", 400);
        let err = input_embedding_table(dir.path(), &ckpt).unwrap_err().to_string();
        assert!(err.contains("missing tensor `model.embed_tokens.weight`"), "{err}");
    }
}
