//! What stage 2 reads from the dataset and the frozen VLM, once per run: samples, caption target
//! ids, and each image's VLM features.

use burn::prelude::*;
use deper_vlm::persona::PERSONA_TOKEN;
use deper_vlm::{PixelValues, Qwen2VlTokenizer, Vlm};
use std::collections::BTreeMap;
use std::path::Path;

use crate::data::{prepare, Prepared};
use crate::stage1::{RunInfo, TrainSettings};
use crate::{Result, TrainError};
use deper_vlm::persona::{load_pixels, prompt_ids, target_ids, MAX_CAPTION_TOKENS, PERSONA_PROMPT};

/// The frozen VLM with what stage 2 needs of it: persona prompt, token ids, image features.
#[derive(Debug)]
pub struct FrozenVlm<B: Backend> {
    pub vlm: Vlm<B>,
    pub persona_prompt: Vec<u32>,
    pub persona_token: u32,
    pub grid: [usize; 3],
    /// Per image: `[image_tokens · hidden]` features.
    pub features: BTreeMap<String, Vec<f32>>,
    pub pixels: BTreeMap<String, PixelValues>,
    pub image_tokens: usize,
}

impl<B: Backend> FrozenVlm<B> {
    /// Loads the VLM folder and computes the image features of `images` once.
    pub fn load(dir: &Path, data: &Path, images: &[String], device: &B::Device) -> Result<Self> {
        let vlm_err = |e: deper_vlm::VlmError| TrainError::Config(format!("{}: {e}", dir.display()));
        let vlm = Vlm::<B>::load(dir, device).map_err(vlm_err)?;
        let persona_token = vlm.tokenizer.token_id(PERSONA_TOKEN).ok_or_else(|| {
            TrainError::Config(format!(
                "{}: the tokenizer has no {PERSONA_TOKEN} token (add it to tokenizer.json's added_tokens)",
                dir.display()
            ))
        })?;
        let pixel_list = load_pixels(data, images, &vlm.processor)?;
        let grid = pixel_list.first().map_or([1, 2, 2], |p| p.grid_thw);
        if let Some((i, p)) = pixel_list.iter().enumerate().find(|(_, p)| p.grid_thw != grid) {
            return Err(TrainError::Config(format!(
                "image `{}` preprocesses to grid {:?}, others to {grid:?}: stage 2 needs one image size (set min_pixels = max_pixels)",
                images[i], p.grid_thw
            )));
        }
        let persona_prompt = prompt_ids(&vlm.tokenizer, PERSONA_PROMPT, grid)?;
        let mut features = BTreeMap::new();
        let mut pixels = BTreeMap::new();
        let mut image_tokens = 0;
        for (id, px) in images.iter().zip(pixel_list) {
            let f = vlm.model.visual.forward(px.to_tensor(device), &[grid]).map_err(vlm_err)?;
            image_tokens = f.dims()[0];
            let values =
                f.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| TrainError::Config(format!("{e:?}")))?;
            features.insert(id.clone(), values);
            pixels.insert(id.clone(), px);
        }
        Ok(Self { vlm, persona_prompt, persona_token, grid, features, pixels, image_tokens })
    }

    pub(super) fn image_features(&self, images: &[&str], device: &B::Device) -> Result<Tensor<B, 2>> {
        let hidden = self.vlm.config.text.hidden_size;
        let mut values = Vec::with_capacity(images.len() * self.image_tokens * hidden);
        for im in images {
            values.extend_from_slice(
                self.features.get(*im).ok_or_else(|| TrainError::MissingImage { image: im.to_string() })?,
            );
        }
        Ok(Tensor::from_data(TensorData::new(values, [images.len() * self.image_tokens, hidden]), device))
    }

    pub fn tokenizer(&self) -> &Qwen2VlTokenizer {
        &self.vlm.tokenizer
    }
}

/// Everything a stage-2 run and its evaluation read from the dataset.
#[derive(Debug)]
pub struct Stage2Data<B: Backend> {
    pub prep: Prepared,
    pub frozen: FrozenVlm<B>,
    /// Target ids per sample (same order as `prep.samples`).
    pub targets: Vec<Vec<u32>>,
}

/// Prepares samples (with the stage-1 vocabulary when there is one), the frozen VLM and targets.
pub fn prepare_stage2<B: Backend>(
    data: &Path,
    vlm: &Path,
    stage1_info: Option<&RunInfo>,
    device: &B::Device,
) -> Result<Stage2Data<B>> {
    // The encoder reads captions with its stage-1 run's text side; PT has no encoder.
    let prep = match stage1_info {
        Some(info) => info.prepare(data)?,
        None => {
            let splits = deper_core::split::Splits::load(data)?;
            let mut seen = splits.seen_subjects.clone();
            seen.sort();
            let s = TrainSettings::default();
            prepare(data, &s.backbone, &crate::text::WordVocab::from_words(vec![]), s.caption_tokens(), &seen)?
        }
    };
    let mut images: Vec<String> = prep.samples.iter().map(|s| s.image.clone()).collect();
    images.sort();
    images.dedup();
    let frozen = FrozenVlm::load(vlm, data, &images, device)?;
    let ds = deper_core::dataset::Dataset::open(data)?;
    let captions: BTreeMap<String, String> =
        ds.load_triplets()?.into_iter().map(|t| (t.id, t.description.text)).collect();
    let targets = prep
        .samples
        .iter()
        .map(|s| {
            target_ids(frozen.tokenizer(), captions.get(&s.triplet_id).map_or("", String::as_str), MAX_CAPTION_TOKENS)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Stage2Data { prep, frozen, targets })
}
