//! The persona slot of the caption prompt: the prompt whose `<|persona|>` token stage 2 overwrites,
//! the caption-length limit, and the token ids and pixels a caption request or target is made of.
//! Shared by stage 2's training, its greedy captions and the demo captioner's pretraining.

use crate::{Result, TrainError};
use burn::prelude::*;
use deper_core::dataset::find_image_file;
use deper_vlm::{ImageProcessor, Qwen2Vl, Qwen2VlTokenizer};
use std::path::Path;

/// The prompt whose persona slot stage 2 overwrites.
pub const PERSONA_PROMPT: &str = "Describe the image in the style of <|persona|>.";

/// The prompt ids of a caption request (the chat template, image pads expanded).
pub fn prompt_ids(tokenizer: &Qwen2VlTokenizer, text: &str, grid: [usize; 3]) -> Result<Vec<u32>> {
    Ok(tokenizer.caption_prompt(text, grid, 2).map_err(|e| TrainError::Config(e.to_string()))?.1)
}

/// Target ids of a caption: its tokens and the end-of-turn token.
pub fn target_ids(tokenizer: &Qwen2VlTokenizer, caption: &str, max_tokens: usize) -> Result<Vec<u32>> {
    let mut ids = tokenizer.encode(caption).map_err(|e| TrainError::Config(e.to_string()))?;
    ids.truncate(max_tokens);
    let end = tokenizer.token_id("<|im_end|>").ok_or_else(|| TrainError::Config("no <|im_end|> token".into()))?;
    ids.push(end);
    Ok(ids)
}

/// Preprocessed pixels of the dataset's images, by image id.
pub fn load_pixels(data: &Path, images: &[String], processor: &ImageProcessor) -> Result<Vec<deper_vlm::PixelValues>> {
    images
        .iter()
        .map(|id| {
            let dir = data.join("images");
            let file = find_image_file(&dir, id).ok_or_else(|| TrainError::MissingImage { image: id.clone() })?;
            let path = dir.join(file);
            processor.preprocess_file(&path).map_err(|e| TrainError::Image { path, message: e.to_string() })
        })
        .collect()
}

/// Maximum caption tokens the captioner learns and generates.
pub const MAX_CAPTION_TOKENS: usize = 96;

/// Greedy caption of one preprocessed image with a prompt, optionally with a persona vector.
pub fn greedy<B: Backend>(
    model: &Qwen2Vl<B>,
    tokenizer: &Qwen2VlTokenizer,
    prompt: &[u32],
    pixels: &deper_vlm::PixelValues,
    device: &B::Device,
    persona: Option<deper_vlm::Persona<B>>,
) -> Result<String> {
    let end = tokenizer.token_id("<|im_end|>").ok_or_else(|| TrainError::Config("no <|im_end|> token".into()))?;
    let input = deper_vlm::MultimodalInput {
        input_ids: prompt.to_vec(),
        pixel_values: Some(pixels.to_tensor(device)),
        image_grid_thw: vec![pixels.grid_thw],
        persona,
    };
    let generation = deper_vlm::GenerationConfig {
        max_new_tokens: MAX_CAPTION_TOKENS,
        stop_tokens: vec![end],
        ..Default::default()
    };
    let out = model.generate(&input, &generation, &mut |_| true).map_err(|e| TrainError::Config(e.to_string()))?;
    let ids: Vec<u32> = out.generated_ids.into_iter().filter(|&i| i != end).collect();
    tokenizer.decode(&ids, true).map_err(|e| TrainError::Config(e.to_string()))
}
