//! The persona slot: DEPER's `<|persona|>` token, whose input embedding is replaced by the adapter's
//! output (z_s → persona vector), and what goes with it — the prompt whose slot stage 2 overwrites,
//! persona vectors as stored in files, and their injection into a prompt's embeddings.
//!
//! - [`PERSONA_TOKEN`], [`PERSONA_PROMPT`], [`MAX_CAPTION_TOKENS`]: the constants the captioner,
//!   stage 2 and the caption API share; [`prompt_ids`], [`target_ids`], [`load_pixels`]: the ids and
//!   pixels of a caption example (Qwen2-VL's template and image processor: the captioner's family).
//! - [`Persona`]: vectors with the token ids they replace; [`PersonaVectors`]: the same as read from a
//!   safetensors file.
//! - `assemble_embeds`: a prompt's input embeddings with image features and persona rows in place,
//!   for every model family.
//!
//! Reference: DEPER (Xue et al., CVPR 2026), the persona-token injection; the image scatter follows
//! transformers' `masked_scatter` in `Qwen2VLModel.forward` / `Idefics3Model.inputs_merger`.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use deper_core::dataset::find_image_file;
use deper_weights::Checkpoint;
use std::path::Path;

use crate::decoder::TextModel;
use crate::qwen2_vl::preprocess::{ImageProcessor, PixelValues};
use crate::tokenizer::Qwen2VlTokenizer;
use crate::{Result, VlmError};

/// The persona token DEPER adds to the tokenizer.
pub const PERSONA_TOKEN: &str = "<|persona|>";

/// The prompt whose persona slot stage 2 overwrites.
pub const PERSONA_PROMPT: &str = "Describe the image in the style of <|persona|>.";

/// Maximum caption tokens the captioner learns and generates.
pub const MAX_CAPTION_TOKENS: usize = 96;

/// The prompt ids of a caption request (the chat template, image pads expanded).
pub fn prompt_ids(tokenizer: &Qwen2VlTokenizer, text: &str, grid: [usize; 3]) -> Result<Vec<u32>> {
    Ok(tokenizer.caption_prompt(text, grid, 2)?.1)
}

/// Target ids of a caption: its tokens and the end-of-turn token.
pub fn target_ids(tokenizer: &Qwen2VlTokenizer, caption: &str, max_tokens: usize) -> Result<Vec<u32>> {
    let mut ids = tokenizer.encode(caption)?;
    ids.truncate(max_tokens);
    let end = tokenizer.token_id("<|im_end|>").ok_or_else(|| VlmError::Tokenizer("no <|im_end|> token".into()))?;
    ids.push(end);
    Ok(ids)
}

/// Preprocessed pixels of the dataset's images, by image id.
pub fn load_pixels(data: &Path, images: &[String], processor: &ImageProcessor) -> Result<Vec<PixelValues>> {
    images
        .iter()
        .map(|id| {
            let dir = data.join("images");
            let file = find_image_file(&dir, id)
                .ok_or_else(|| VlmError::Input(format!("image `{id}` has no file in {}", dir.display())))?;
            processor.preprocess_file(&dir.join(file))
        })
        .collect()
}

/// Persona vectors and the token ids whose embeddings they replace.
///
/// Row `k` of `embeddings` belongs to `token_ids[k]`. When an id appears several times in
/// `token_ids`, its occurrences in the prompt take that id's rows in order. The number of
/// occurrences of each id in the prompt must equal its number of rows.
#[derive(Debug, Clone)]
pub struct Persona<B: Backend> {
    /// `[K, hidden]`.
    pub embeddings: Tensor<B, 2>,
    /// `[K]`.
    pub token_ids: Vec<u32>,
}

/// Input embeddings of one prompt, shared by every model family: the token embeddings, with the
/// image `features` (`[n, hidden]`, in order) at the `image_token_id` positions and the persona rows
/// at the persona-token positions.
///
/// # Shapes
/// - output: `[1, L, hidden]`
pub(crate) fn assemble_embeds<B: Backend>(
    text: &TextModel<B>,
    ids: &[u32],
    image_token_id: u32,
    features: Option<Tensor<B, 2>>,
    persona: Option<&Persona<B>>,
    device: &B::Device,
) -> Result<Tensor<B, 3>> {
    let len = ids.len();
    let id_tensor = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(), [1, len]),
        device,
    );
    let embedded = text.embed(id_tensor); // [1, L, D]
    let hidden = embedded.dims()[2];
    let mut rows = vec![embedded.reshape([len, hidden])];
    // Source row of every position in cat(rows): identity, then image features, then persona rows.
    let mut index: Vec<i64> = (0..len as i64).collect();
    let mut offset = len;

    let image_positions: Vec<usize> = (0..len).filter(|&i| ids[i] == image_token_id).collect();
    match features {
        Some(features) => {
            let n = features.dims()[0];
            if n != image_positions.len() {
                return Err(VlmError::Input(format!(
                    "the images give {n} features but the prompt has {} image tokens",
                    image_positions.len()
                )));
            }
            for (k, &p) in image_positions.iter().enumerate() {
                index[p] = (offset + k) as i64;
            }
            offset += n;
            rows.push(features);
        }
        None if !image_positions.is_empty() => {
            return Err(VlmError::Input(format!(
                "the prompt has {} image tokens but no pixel_values",
                image_positions.len()
            )));
        }
        None => {}
    }

    if let Some(persona) = persona {
        let [k, d] = persona.embeddings.dims();
        if d != hidden || k != persona.token_ids.len() {
            return Err(VlmError::Input(format!(
                "persona embeddings are [{k}, {d}] for {} token ids; expected [{}, {hidden}]",
                persona.token_ids.len(),
                persona.token_ids.len(),
            )));
        }
        for (position, row) in persona_rows(ids, &persona.token_ids)? {
            index[position] = (offset + row) as i64;
        }
        rows.push(persona.embeddings.clone());
    }

    let table = Tensor::cat(rows, 0); // [L + n + K, D]
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [len]), device);
    Ok(table.select(0, index).reshape([1, len, hidden])) // [1, L, D]
}

/// `(position, persona row)` pairs; see [`Persona`].
fn persona_rows(ids: &[u32], token_ids: &[u32]) -> Result<Vec<(usize, usize)>> {
    let mut pairs = Vec::new();
    let mut distinct: Vec<u32> = token_ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    for id in distinct {
        let rows: Vec<usize> = (0..token_ids.len()).filter(|&k| token_ids[k] == id).collect();
        let positions: Vec<usize> = (0..ids.len()).filter(|&p| ids[p] == id).collect();
        if rows.len() != positions.len() {
            return Err(VlmError::Input(format!(
                "persona token {id} occurs {} times in the prompt but has {} persona vectors",
                positions.len(),
                rows.len()
            )));
        }
        pairs.extend(positions.into_iter().zip(rows));
    }
    Ok(pairs)
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
    /// Reads `persona_embeddings` (`[K, hidden]` or `[hidden]`) and optional `persona_token_ids` `[K]` from a
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

    use super::*;
    use crate::tokenizer::IMAGE_PAD;
    use std::path::PathBuf;

    fn model_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2_vl_tiny/model")
    }

    #[test]
    fn persona_prompt_has_one_persona_slot() {
        assert_eq!(PERSONA_PROMPT.matches(PERSONA_TOKEN).count(), 1);
    }

    #[test]
    fn prompt_ids_expand_the_image_pads_for_merge_two() {
        let tok = Qwen2VlTokenizer::from_dir(&model_dir()).unwrap();
        let pad = tok.token_id(IMAGE_PAD).unwrap();
        let ids = prompt_ids(&tok, "Describe the image.", [1, 4, 6]).unwrap();
        assert_eq!(ids.iter().filter(|&&id| id == pad).count(), 6); // 1·4·6 / 2²
    }

    #[test]
    fn target_ids_truncate_the_caption_and_end_the_turn() {
        let tok = Qwen2VlTokenizer::from_dir(&model_dir()).unwrap();
        let end = tok.token_id("<|im_end|>").unwrap();
        let caption = "a red cube on a wooden table";
        let full = tok.encode(caption).unwrap();
        assert!(full.len() > 2);
        assert_eq!(target_ids(&tok, caption, 2).unwrap(), [&full[..2], &[end]].concat());
        assert_eq!(target_ids(&tok, caption, full.len() + 5).unwrap(), [&full[..], &[end]].concat());
    }

    #[test]
    fn load_pixels_finds_images_by_id_and_names_a_missing_one() {
        let data = tempfile::tempdir().unwrap();
        let images = data.path().join("images");
        std::fs::create_dir(&images).unwrap();
        image::RgbImage::from_fn(56, 84, |x, y| image::Rgb([x as u8, y as u8, 7]))
            .save(images.join("cat.png"))
            .unwrap();
        let processor = ImageProcessor::from_dir(&model_dir()).unwrap();
        let pixels = load_pixels(data.path(), &["cat".into()], &processor).unwrap();
        assert_eq!(pixels, vec![processor.preprocess_file(&images.join("cat.png")).unwrap()]);
        let err = load_pixels(data.path(), &["cat".into(), "dog".into()], &processor).unwrap_err();
        assert!(err.to_string().contains("`dog`"), "{err}");
    }
}
