//! Captions from the frozen VLM with a persona per subject: greedy generation, and the
//! teacher-forced caption NLL `deper eval` and stage 2's validation score.

use burn::prelude::*;
use deper_core::Split;
use deper_vlm::qwen2_vl::train::CaptionBatch;
use deper_vlm::{Persona, Qwen2Vl, Qwen2VlTokenizer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::{FrozenVlm, Stage2Data};
use crate::data::Prepared;
use crate::{Result, TrainError};

/// Summed caption NLL (nats) and the number of caption tokens it covers, of the triplets `set`
/// (indices into `sd.prep.samples`) with each one's own reference as target (its first
/// [`MAX_CAPTION_TOKENS`](deper_vlm::persona::MAX_CAPTION_TOKENS) tokens and the end-of-turn token, as in training), teacher-forced. With
/// `personas`, the persona token's embedding is overwritten by its subject's (every subject in `set`
/// must have one); without, the prompt keeps the token's own embedding (the zero-shot captioner).
/// Unlike greedy captions this has no decoding noise: it says how likely each method finds what the
/// subject actually wrote.
pub fn caption_nll<B: Backend>(
    vlm: &Qwen2Vl<B>,
    sd: &Stage2Data<B>,
    set: &[usize],
    personas: Option<&BTreeMap<String, Vec<f32>>>,
    device: &B::Device,
) -> Result<(f64, usize)> {
    let hidden = sd.frozen.vlm.config.text.hidden_size;
    let (mut sum, mut count) = (0.0, 0usize);
    for chunk in set.chunks(32) {
        let persona = match personas {
            None => None,
            Some(personas) => {
                let mut values = Vec::with_capacity(chunk.len() * hidden);
                for &i in chunk {
                    let subject = &sd.prep.samples[i].subject;
                    let p = personas.get(subject).ok_or_else(|| {
                        TrainError::Config(format!(
                            "no persona for subject {subject} (triplet {})",
                            sd.prep.samples[i].triplet_id
                        ))
                    })?;
                    check_persona_width(subject, p, hidden)?;
                    values.extend_from_slice(p);
                }
                let persona = Tensor::<B, 2>::from_data(TensorData::new(values, [chunk.len(), hidden]), device);
                Some((sd.frozen.persona_token, persona))
            }
        };
        let images: Vec<&str> = chunk.iter().map(|&i| sd.prep.samples[i].image.as_str()).collect();
        let caption = CaptionBatch {
            prompt_ids: sd.frozen.persona_prompt.clone(),
            grid_thw: sd.frozen.grid,
            image_features: sd.frozen.image_features(&images, device)?,
            targets: chunk.iter().map(|&i| sd.targets[i].clone()).collect(),
            persona,
        };
        let (nll, n) = vlm.caption_nll(&caption).map_err(|e| TrainError::Config(e.to_string()))?;
        sum += scalar(&nll) * n as f64;
        count += n;
    }
    Ok((sum, count))
}

/// One generated caption.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratedCaption {
    pub triplet_id: String,
    pub image: String,
    pub subject: String,
    pub seen: bool,
    pub reference: String,
    pub prediction: String,
}

/// Which test triplets to caption: seen subjects' test-split triplets and unseen subjects' queries
/// (their val/test triplets, never their support set).
pub fn evaluation_set(prep: &Prepared) -> Vec<usize> {
    let mut set = prep.partition.test.clone();
    set.extend(prep.samples.iter().enumerate().filter_map(|(i, s)| {
        (prep.splits.is_unseen(&s.subject) && s.split == Split::Test && !prep.partition.support.contains(&i))
            .then_some(i)
    }));
    set
}

/// A persona must be as wide as the VLM's hidden size (a run trained with another VLM is not).
fn check_persona_width(subject: &str, persona: &[f32], hidden: usize) -> Result<()> {
    if persona.len() == hidden {
        return Ok(());
    }
    Err(TrainError::Config(format!(
        "persona of {subject} has {} values, the VLM's hidden size is {hidden} (was the run trained with another VLM?)",
        persona.len()
    )))
}

/// Greedy captions of `set` with per-subject persona vectors (`None` = the zero-shot prompt with the
/// persona token's own embedding). Subjects without a persona are skipped.
pub fn generate<B: Backend>(
    frozen: &FrozenVlm<B>,
    prep: &Prepared,
    references: &BTreeMap<String, String>,
    set: &[usize],
    personas: Option<&BTreeMap<String, Vec<f32>>>,
    device: &B::Device,
    on_caption: &mut dyn FnMut(),
) -> Result<Vec<GeneratedCaption>> {
    let mut out = Vec::new();
    let hidden = frozen.vlm.config.text.hidden_size;
    for &i in set {
        let s = &prep.samples[i];
        let persona = match personas {
            Some(map) => match map.get(&s.subject) {
                Some(v) => {
                    check_persona_width(&s.subject, v, hidden)?;
                    Some(Persona {
                        embeddings: Tensor::from_data(TensorData::new(v.clone(), [1, hidden]), device),
                        token_ids: vec![frozen.persona_token],
                    })
                }
                None => continue,
            },
            None => None,
        };
        let pixels = frozen.pixels.get(&s.image).ok_or_else(|| TrainError::MissingImage { image: s.image.clone() })?;
        let prediction =
            greedy(&frozen.vlm.model, frozen.tokenizer(), &frozen.persona_prompt, pixels, device, persona)?;
        out.push(GeneratedCaption {
            triplet_id: s.triplet_id.clone(),
            image: s.image.clone(),
            subject: s.subject.clone(),
            seen: !prep.splits.is_unseen(&s.subject),
            reference: references.get(&s.triplet_id).cloned().unwrap_or_default(),
            prediction,
        });
        on_caption();
    }
    Ok(out)
}

pub(super) fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_scalar().elem::<f64>()
}

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
        max_new_tokens: deper_vlm::persona::MAX_CAPTION_TOKENS,
        stop_tokens: vec![end],
        ..Default::default()
    };
    let out = model.generate(&input, &generation, &mut |_| true).map_err(|e| TrainError::Config(e.to_string()))?;
    let ids: Vec<u32> = out.generated_ids.into_iter().filter(|&i| i != end).collect();
    tokenizer.decode(&ids, true).map_err(|e| TrainError::Config(e.to_string()))
}
