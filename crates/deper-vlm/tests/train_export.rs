//! `save_pretrained` round trip and the batched teacher-forced loss against per-prompt forwards.
#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

mod common;

use burn::backend::Autodiff;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Distribution, Tensor};
use common::{check, model_dir, values, B};
use deper_vlm::qwen2_vl::export::save_pretrained;
use deper_vlm::qwen2_vl::train::CaptionBatch;
use deper_vlm::{load_pretrained, MultimodalInput, Persona, Qwen2VlConfig};

const PERSONA: u32 = 7;

/// A prompt with text, a vision block of 4 merged image tokens (grid 1×4×4) and one persona slot.
fn prompt(config: &Qwen2VlConfig) -> Vec<u32> {
    let k = &config.tokens;
    let mut ids = vec![11, 12, k.vision_start_token_id];
    ids.extend([k.image_token_id; 4]);
    ids.extend([k.vision_end_token_id, 13, PERSONA, 14]);
    ids
}

fn pixels(rows: usize, device: &burn::backend::ndarray::NdArrayDevice) -> Tensor<B, 2> {
    Tensor::random([rows * 16, 1176], Distribution::Normal(0.0, 1.0), device)
}

#[test]
fn saved_model_loads_back_with_identical_logits() {
    let device = Default::default();
    let mut config = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    // A random model of the fixture's shapes, with an untied head so both head paths are written.
    config.text.tie_word_embeddings = false;
    let model = config.init::<B>(&device);
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(&model, &config, dir.path()).unwrap();
    // The saved config parses to the same config, and the weights load back.
    assert_eq!(Qwen2VlConfig::from_path(dir.path()).unwrap(), config);
    let loaded = load_pretrained::<B>(dir.path(), &device).unwrap();
    let ids = prompt(&config);
    let px = pixels(1, &device);
    let a = model.forward(&ids, Some(px.clone()), &[[1, 4, 4]], None).unwrap();
    let b = loaded.forward(&ids, Some(px), &[[1, 4, 4]], None).unwrap();
    check("round-trip logits", &values(b), &values(a), 0.0);
}

#[test]
fn batched_caption_nll_equals_per_prompt_forwards() {
    let device = Default::default();
    let config = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    let model = load_pretrained::<B>(&model_dir(), &device).unwrap();
    let prompt = prompt(&config);
    let targets: Vec<Vec<u32>> = vec![vec![20, 21, 22, 23, 394], vec![30, 394], vec![40, 41, 42, 394]];
    let rows = targets.len();
    let px = pixels(rows, &device);
    let features = model.visual.forward(px.clone(), &vec![[1, 4, 4]; rows]).unwrap(); // [rows·4, 64]
    let persona = Tensor::<B, 2>::random([rows, 64], Distribution::Normal(0.0, 1.0), &device);
    let batch = CaptionBatch {
        prompt_ids: prompt.clone(),
        grid_thw: [1, 4, 4],
        image_features: features,
        targets: targets.clone(),
        persona: Some((PERSONA, persona.clone())),
    };
    let (loss, count) = model.caption_nll(&batch).unwrap();
    assert_eq!(count, 11);

    // Reference: each row alone through the ordinary multimodal forward.
    let mut total = 0.0f64;
    for (r, t) in targets.iter().enumerate() {
        let mut ids = prompt.clone();
        ids.extend(t);
        let input = MultimodalInput {
            input_ids: ids.clone(),
            pixel_values: Some(px.clone().narrow(0, r * 16, 16)),
            image_grid_thw: vec![[1, 4, 4]],
            persona: Some(Persona { embeddings: persona.clone().narrow(0, r, 1), token_ids: vec![PERSONA] }),
        };
        let logp = values(log_softmax(model.forward_input(&input).unwrap(), 2));
        let vocab = config.text.vocab_size;
        for (j, &target) in t.iter().enumerate() {
            let pos = prompt.len() - 1 + j;
            total -= f64::from(logp[pos * vocab + target as usize]);
        }
    }
    let expected = (total / 11.0) as f32;
    check("batched NLL", &values(loss), &[expected], 1e-5);
}

#[test]
fn caption_nll_trains_the_persona_vector_only_through_gradients() {
    type A = Autodiff<B>;
    let device = Default::default();
    let config = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    let model = load_pretrained::<A>(&model_dir(), &device).unwrap();
    let prompt = prompt(&config);
    let features = Tensor::<A, 2>::zeros([4, 64], &device);
    let persona = Tensor::<A, 2>::zeros([1, 64], &device).require_grad();
    let batch = CaptionBatch {
        prompt_ids: prompt,
        grid_thw: [1, 4, 4],
        image_features: features,
        targets: vec![vec![20, 21, 394]],
        persona: Some((PERSONA, persona.clone())),
    };
    let (loss, _) = model.caption_nll(&batch).unwrap();
    let grads = loss.backward();
    let g = values(persona.grad(&grads).unwrap());
    assert!(g.iter().any(|v| v.abs() > 1e-6), "the persona vector gets a gradient");
    // Wrong shapes are errors, not panics.
    let bad = CaptionBatch { image_features: Tensor::<A, 2>::zeros([3, 64], &device), ..batch.clone() };
    assert!(model.caption_nll(&bad).is_err());
    let no_slot = CaptionBatch { prompt_ids: vec![1, 2, 3], ..batch };
    assert!(model.caption_nll(&no_slot).is_err());
}
