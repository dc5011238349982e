//! Idefics3 (SmolVLM architecture) against `tests/fixtures/idefics3_tiny` (transformers 5.24 outputs):
//! preprocessing, prompt ids, vision features, logits, persona injection, greedy generation, KV cache,
//! the `Vlm` pipeline and bad input.
#![allow(clippy::unwrap_used)]

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{check, values, B};
use deper_vlm::idefics3::preprocess::{resize_output_size, resize_pil, vision_encoder_size};
use deper_vlm::idefics3::{
    expand_image_tokens, load_pretrained, Idefics3, Idefics3ImageProcessor, Idefics3Images, Idefics3Input, Resample,
};
use deper_vlm::{ChatMessage, Persona, Qwen2VlTokenizer};
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

#[test]
fn pil_resampling_is_bit_exact() {
    let r = reference();
    let img = image::open(fixture().join("image.png")).unwrap().to_rgb8();
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    let mut checked = 0;
    for key in r.keys().into_iter().filter(|k| k.starts_with("pil.")) {
        let parts: Vec<&str> = key.split('.').collect();
        let filter = match parts[1] {
            "lanczos" => Resample::Lanczos,
            "bicubic" => Resample::Bicubic,
            _ => Resample::Bilinear,
        };
        let (w, h) = parts[2].split_once('x').unwrap();
        let (w, h): (usize, usize) = (w.parse().unwrap(), h.parse().unwrap());
        let want: Vec<u8> = r.i64_any(&key).unwrap().0.into_iter().map(|v| v as u8).collect();
        let got = resize_pil(img.as_raw(), h0, w0, h, w, filter);
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{key}: {diff} of {} bytes differ", want.len());
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn size_arithmetic_matches_the_processor() {
    for case in reference_json()["size_cases"].as_array().unwrap() {
        let get = |k: &str| case[k].as_u64().unwrap() as usize;
        let pair = |k: &str| (case[k][0].as_u64().unwrap() as usize, case[k][1].as_u64().unwrap() as usize);
        let (h, w) = (get("height"), get("width"));
        let resized = resize_output_size(h, w, 112);
        assert_eq!(resized, pair("resized"), "{h}×{w}");
        assert_eq!(vision_encoder_size(resized.0, resized.1, 56), pair("for_encoder"), "{h}×{w}");
        assert_eq!(resize_output_size(h, w, 2048), pair("resized_longest_2048"), "{h}×{w}");
    }
}

#[test]
fn pixel_values_and_prompt_ids_match_the_processor() {
    let r = reference();
    let facts = reference_json();
    let processor = Idefics3ImageProcessor::from_dir(&model_dir()).unwrap();
    assert_eq!(processor.resample, Resample::Lanczos);
    assert_eq!(processor.image_seq_len, Some(4));
    let pixels = processor.preprocess_file(&fixture().join("image.png")).unwrap();
    assert_eq!((pixels.tiles, pixels.height, pixels.width, pixels.rows, pixels.cols), (5, 56, 56, 2, 2));
    check("pixel_values", &pixels.values, &r.f32_any("pixel_values").unwrap().0, 1e-5);
    let want_mask = mask(&r, "pixel_attention_mask");
    assert_eq!(pixels.pixel_attention_mask, want_mask);

    let tokenizer = Qwen2VlTokenizer::from_dir(&model_dir()).unwrap();
    for tag in ["a", "b"] {
        let user = facts[tag]["user_text"].as_str().unwrap();
        let rendered = tokenizer.apply_chat_template(&[ChatMessage::user_with_image(user)], true).unwrap();
        assert_eq!(rendered, facts[tag]["prompt"].as_str().unwrap());
        let expanded = expand_image_tokens(&rendered, &[(pixels.rows, pixels.cols)], 4).unwrap();
        assert_eq!(expanded, facts[tag]["prompt_expanded"].as_str().unwrap());
        assert_eq!(tokenizer.encode(&expanded).unwrap(), ids(&r, &format!("{tag}.input_ids")), "{tag}");
    }
}
