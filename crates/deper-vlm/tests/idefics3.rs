//! Idefics3 (SmolVLM architecture) against `tests/fixtures/idefics3_tiny` (transformers 5.24 outputs):
//! preprocessing, prompt ids, vision features, logits, persona injection, greedy generation, KV cache,
//! the `Vlm` pipeline and bad input.
#![allow(clippy::unwrap_used)]

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{check, values, B};
use deper_vlm::idefics3::{load_pretrained, Idefics3, Idefics3Images, Idefics3Input};
use deper_vlm::Persona;
use deper_weights::Checkpoint;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/idefics3_tiny")
}

fn model_dir() -> PathBuf {
    fixture().join("model")
}

fn reference() -> Checkpoint {
    Checkpoint::open(&fixture().join("reference.safetensors")).unwrap()
}

fn reference_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap()
}

fn model() -> Idefics3<B> {
    load_pretrained::<B>(&model_dir(), &Default::default()).unwrap()
}

fn ids(r: &Checkpoint, key: &str) -> Vec<u32> {
    r.i64_any(key).unwrap().0.into_iter().map(|v| v as u32).collect()
}

fn tensor4(r: &Checkpoint, key: &str) -> Tensor<B, 4> {
    let (v, shape) = r.f32_any(key).unwrap();
    Tensor::from_data(TensorData::new(v, [shape[0], shape[1], shape[2], shape[3]]), &Default::default())
}

fn mask(r: &Checkpoint, key: &str) -> Vec<bool> {
    r.i64_any(key).unwrap().0.into_iter().map(|v| v != 0).collect()
}

fn images(r: &Checkpoint) -> Idefics3Images<B> {
    Idefics3Images {
        pixel_values: tensor4(r, "pixel_values"),
        pixel_attention_mask: Some(mask(r, "pixel_attention_mask")),
    }
}

fn persona(r: &Checkpoint) -> Persona<B> {
    let (v, _) = r.f32_any("persona_vector").unwrap();
    let hidden = v.len();
    let persona_id = reference_json()["special_token_ids"]["<|persona|>"].as_u64().unwrap() as u32;
    Persona {
        embeddings: Tensor::from_data(TensorData::new(v, [1, hidden]), &Default::default()),
        token_ids: vec![persona_id],
    }
}

#[test]
fn vision_features_match_transformers() {
    let r = reference();
    let m = model();
    let out = m.vision_outputs(&images(&r)).unwrap();
    check("vision.embeddings", &values(out.embeddings), &r.f32_any("vision.embeddings").unwrap().0, 1e-4);
    check(
        "vision.last_hidden_state",
        &values(out.last_hidden_state),
        &r.f32_any("vision.last_hidden_state").unwrap().0,
        1e-4,
    );
    let features = m.image_features(&images(&r)).unwrap();
    assert_eq!(features.dims(), [20, 64]);
    check("image_features", &values(features), &r.f32_any("image_features").unwrap().0, 1e-4);
}

#[test]
fn padded_tile_uses_bucketised_positions_and_key_mask() {
    let r = reference();
    let m = model();
    let padded = Idefics3Images {
        pixel_values: tensor4(&r, "padded.pixel_values"),
        pixel_attention_mask: Some(mask(&r, "padded.pixel_attention_mask")),
    };
    let features = m.image_features(&padded).unwrap();
    check("padded.image_features", &values(features), &r.f32_any("padded.image_features").unwrap().0, 1e-4);
}

#[test]
fn logits_match_transformers_with_and_without_persona() {
    let r = reference();
    let m = model();
    for tag in ["a", "b"] {
        let input =
            Idefics3Input { input_ids: ids(&r, &format!("{tag}.input_ids")), images: Some(images(&r)), persona: None };
        let logits = m.forward(&input).unwrap();
        check(&format!("{tag}.logits"), &values(logits), &r.f32_any(&format!("{tag}.logits")).unwrap().0, 1e-4);
    }
    let input =
        Idefics3Input { input_ids: ids(&r, "b.input_ids"), images: Some(images(&r)), persona: Some(persona(&r)) };
    let logits = m.forward(&input).unwrap();
    check("b.logits_persona", &values(logits), &r.f32_any("b.logits_persona").unwrap().0, 1e-4);
}
