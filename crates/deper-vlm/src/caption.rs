//! What a caption request and its answer are, for every model family: the jobs of `deper caption` and
//! the caption API, the caption they get back, and the steps each family's pipeline shares (end-of-turn
//! ids from `generation_config.json`, decoding the generated ids, the `deper vlm forward` file format).
//!
//! Reference: transformers `GenerationConfig.from_pretrained` (`eos_token_id`) and
//! `PreTrainedTokenizer.decode(skip_special_tokens=True)`.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use deper_weights::{write_safetensors, Checkpoint};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

use crate::generation::{Generated, GenerationConfig};
use crate::persona::PersonaVectors;
use crate::tokenizer::Qwen2VlTokenizer;
use crate::{Result, VlmError};

/// The user text of `deper caption` when `--prompt` is not given.
pub const DEFAULT_CAPTION_PROMPT: &str = "Describe the image.";

/// One caption of [`crate::AnyVlm::caption_batch`] (or [`crate::Vlm::caption_batch`]).
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

/// End-of-turn ids: `eos_token_id` of `generation_config.json`, else `config.json`'s.
pub(crate) fn end_of_turn_ids(dir: &Path, config_eos: Option<u32>) -> Result<Vec<u32>> {
    let mut ids = generation_eos(dir)?;
    if ids.is_empty() {
        ids.extend(config_eos);
    }
    Ok(ids)
}

/// Greedy generation of up to `max_new_tokens` that stops at `eos_token_ids`.
pub(crate) fn until_end_of_turn(eos_token_ids: &[u32], max_new_tokens: usize) -> GenerationConfig {
    GenerationConfig { max_new_tokens, stop_tokens: eos_token_ids.to_vec(), ..Default::default() }
}

/// `eos_token_id` of `generation_config.json` (an id or a list), if the file exists.
fn generation_eos(dir: &Path) -> Result<Vec<u32>> {
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

/// The caption of a finished generation: its text without the stop tokens.
pub(crate) fn caption_of(
    tokenizer: &Qwen2VlTokenizer,
    out: Generated,
    generation: &GenerationConfig,
) -> Result<Caption> {
    let content: Vec<u32> =
        out.generated_ids.iter().copied().filter(|id| !generation.stop_tokens.contains(id)).collect();
    let text = tokenizer.decode(&content, true)?;
    Ok(Caption { text, prompt_ids: out.prompt_ids, generated_ids: out.generated_ids })
}

/// `input_ids` i64 `[1, L]` of a `deper vlm forward` input file.
pub(crate) fn read_input_ids(ckpt: &Checkpoint) -> Result<Vec<u32>> {
    let (ids, shape) = ckpt.i64_any("input_ids")?;
    if shape.len() != 2 || shape[0] != 1 {
        return Err(VlmError::Input(format!("input_ids must be [1, L], found {shape:?}")));
    }
    ids.iter()
        .map(|&i| u32::try_from(i).map_err(|_| VlmError::Input(format!("negative or huge token id {i}"))))
        .collect()
}

/// Writes `logits` f32 `[1, L, vocab]`, the output file of `deper vlm forward`.
pub(crate) fn write_logits<B: Backend>(out: &Path, logits: Tensor<B, 3>) -> Result<()> {
    let dims = logits.dims();
    let values = logits
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| VlmError::Input(format!("reading logits: {e:?}")))?;
    write_safetensors(out, &[("logits", deper_weights::TensorData::F32(&values, &dims))])?;
    Ok(())
}
