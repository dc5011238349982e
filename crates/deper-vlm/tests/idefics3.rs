//! Idefics3 (SmolVLM architecture) against `tests/fixtures/idefics3_tiny` (transformers 5.24 outputs):
//! preprocessing, prompt ids, vision features, logits, persona injection, greedy generation, KV cache,
//! the `Vlm` pipeline and bad input.
#![allow(clippy::unwrap_used)]

mod common;

use burn::tensor::Tensor;
use common::{check, values, B};
use deper_vlm::idefics3::preprocess::{resize_output_size, resize_pil, vision_encoder_size};
use deper_vlm::idefics3::Idefics3Config;
use deper_vlm::idefics3::{
    expand_image_tokens, load_pretrained, Idefics3, Idefics3ImageProcessor, Idefics3Images, Idefics3Input, Resample,
};
use deper_vlm::{
    AnyVlm, ChatMessage, GenerationConfig, Persona, PersonaVectors, Qwen2VlTokenizer, SamplingConfig, StopReason, Vlm,
};
use deper_weights::Checkpoint;
use deper_weights::{write_safetensors, TensorData};
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
    Tensor::from_data(burn::tensor::TensorData::new(v, [shape[0], shape[1], shape[2], shape[3]]), &Default::default())
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
        embeddings: Tensor::from_data(burn::tensor::TensorData::new(v, [1, hidden]), &Default::default()),
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

fn greedy(max_new_tokens: usize) -> GenerationConfig {
    // No stop token: the reference generation ignores EOS.
    GenerationConfig { max_new_tokens, sampling: SamplingConfig::greedy(), stop_tokens: vec![] }
}

#[test]
fn greedy_ids_match_transformers_and_stream() {
    let r = reference();
    let m = model();
    let cases = [
        ("a", None, "a.generated_ids_plain"),
        ("b", None, "b.generated_ids_plain"),
        ("b", Some(persona(&r)), "b.generated_ids_persona"),
    ];
    for (tag, persona, want) in cases {
        let input =
            Idefics3Input { input_ids: ids(&r, &format!("{tag}.input_ids")), images: Some(images(&r)), persona };
        let mut streamed = Vec::new();
        let out = m
            .generate(&input, &greedy(12), &mut |t| {
                streamed.push(t);
                true
            })
            .unwrap();
        assert_eq!(out.generated_ids, ids(&r, want), "{want}");
        assert_eq!(streamed, out.generated_ids);
        assert_eq!(out.stop, StopReason::MaxNewTokens);
    }
    // Stop token and callback stops.
    let input = Idefics3Input { input_ids: ids(&r, "a.input_ids"), images: Some(images(&r)), persona: None };
    let first = ids(&r, "a.generated_ids_plain")[0];
    let config = GenerationConfig { stop_tokens: vec![first], ..greedy(12) };
    let out = m.generate(&input, &config, &mut |_| true).unwrap();
    assert_eq!((out.generated_ids, out.stop), (vec![first], StopReason::StopToken));
    let out = m.generate(&input, &greedy(12), &mut |_| false).unwrap();
    assert_eq!((out.generated_ids.len(), out.stop), (1, StopReason::Callback));
    // Seeded sampling is reproducible.
    let sampled = GenerationConfig { sampling: SamplingConfig::sample(1.0, 11), ..greedy(8) };
    let a = m.generate(&input, &sampled, &mut |_| true).unwrap();
    let b = m.generate(&input, &sampled, &mut |_| true).unwrap();
    assert_eq!(a.generated_ids, b.generated_ids);
}

#[test]
fn kv_cache_decoding_equals_full_recomputation() {
    let r = reference();
    let m = model();
    let prompt = ids(&r, "b.input_ids");
    let generated = ids(&r, "b.generated_ids_persona");
    let input = Idefics3Input { input_ids: prompt.clone(), images: Some(images(&r)), persona: Some(persona(&r)) };
    // Room for the prompt and the 11 tokens fed back (the 12th generated id is only an output).
    let mut cache = m.new_cache(prompt.len() + generated.len() - 1);
    let mut steps = vec![values(m.prefill(&input, &mut cache).unwrap())];
    for &t in &generated[..generated.len() - 1] {
        steps.push(values(m.decode_step(t, &mut cache).unwrap()));
    }
    // Full forward over prompt + generated (persona only on the prompt's persona token).
    let mut full_ids = prompt.clone();
    full_ids.extend(&generated[..generated.len() - 1]);
    let full = Idefics3Input { input_ids: full_ids, images: Some(images(&r)), persona: Some(persona(&r)) };
    let logits = values(m.forward(&full).unwrap());
    let vocab = steps[0].len();
    for (k, step) in steps.iter().enumerate() {
        let row = prompt.len() - 1 + k;
        check(&format!("step {k}"), step, &logits[row * vocab..(row + 1) * vocab], 1e-4);
    }
    // The cache is full now: one more token is a clear error.
    let err = m.decode_step(generated[generated.len() - 1], &mut cache).unwrap_err();
    assert!(err.to_string().contains("KV cache full"), "{err}");
}

#[test]
fn vlm_captions_an_image_file_end_to_end() {
    let r = reference();
    let j = reference_json();
    let vlm = AnyVlm::<B>::load(&model_dir(), &Default::default()).unwrap();
    let AnyVlm::Idefics3(inner) = &vlm else { panic!("idefics3 folder loaded as another family") };
    assert_eq!(inner.eos_token_ids, vec![j["special_token_ids"]["<end_of_utterance>"].as_u64().unwrap() as u32]);
    assert_eq!(vlm.generation_config(5).stop_tokens, inner.eos_token_ids);
    let image = fixture().join("image.png");
    let caption = vlm.caption(&image, "Describe the image.", None, &greedy(12), &mut |_| true).unwrap();
    assert_eq!(caption.prompt_ids, ids(&r, "a.input_ids"));
    assert_eq!(caption.generated_ids, ids(&r, "a.generated_ids_plain"));
    let want_text = vlm.tokenizer().decode(&caption.generated_ids, true).unwrap();
    assert_eq!(caption.text, want_text);

    let dir = tempfile::tempdir().unwrap();
    let (v, _) = r.f32_any("persona_vector").unwrap();
    let file = dir.path().join("persona.safetensors");
    write_safetensors(&file, &[("persona_embeddings", TensorData::F32(&v, &[1, 64]))]).unwrap();
    let persona = PersonaVectors::from_file(&file).unwrap();
    let prompt = "Describe the image in the style of <|persona|>.";
    let caption = vlm.caption(&image, prompt, Some(&persona), &greedy(12), &mut |_| true).unwrap();
    assert_eq!(caption.prompt_ids, ids(&r, "b.input_ids"));
    assert_eq!(caption.generated_ids, ids(&r, "b.generated_ids_persona"));
}

#[test]
fn vlm_forward_file_writes_reference_logits() {
    let r = reference();
    let vlm = AnyVlm::<B>::load(&model_dir(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (input_ids, ishape) = r.i64_any("b.input_ids").unwrap();
    let (pixels, pshape) = r.f32_any("pixel_values").unwrap();
    let (mask, mshape) = r.i64_any("pixel_attention_mask").unwrap();
    let (persona, _) = r.f32_any("persona_vector").unwrap();
    let inputs = dir.path().join("in.safetensors");
    let out = dir.path().join("out.safetensors");
    // transformers' 5-D [1, tiles, 3, H, W] layout is accepted too.
    let pshape5: Vec<usize> = std::iter::once(1).chain(pshape.iter().copied()).collect();
    write_safetensors(
        &inputs,
        &[
            ("input_ids", TensorData::I64(&input_ids, &ishape)),
            ("pixel_values", TensorData::F32(&pixels, &pshape5)),
            ("pixel_attention_mask", TensorData::I64(&mask, &mshape)),
            ("persona_embeddings", TensorData::F32(&persona, &[1, 64])),
        ],
    )
    .unwrap();
    vlm.forward_file(&inputs, &out).unwrap();
    let (logits, shape) = Checkpoint::open(&out).unwrap().f32_any("logits").unwrap();
    assert_eq!(shape, vec![1, ishape[1], 344]);
    check("forward_file b.logits_persona", &logits, &r.f32_any("b.logits_persona").unwrap().0, 1e-4);

    // A missing tensor is named.
    let bad = dir.path().join("bad.safetensors");
    write_safetensors(&bad, &[("pixel_values", TensorData::F32(&pixels, &pshape))]).unwrap();
    let err = vlm.forward_file(&bad, &out).unwrap_err().to_string();
    assert!(err.contains("input_ids"), "{err}");
    // Too few <image> tokens for the tiles.
    write_safetensors(
        &bad,
        &[
            ("input_ids", TensorData::I64(&input_ids[..20], &[1, 20])),
            ("pixel_values", TensorData::F32(&pixels, &pshape)),
        ],
    )
    .unwrap();
    let err = vlm.forward_file(&bad, &out).unwrap_err().to_string();
    assert!(err.contains("20 features") && err.contains("image tokens"), "{err}");
}

/// The fixture's model folder in a temp dir, with `config.json` edited by `edit` and the weights
/// rewritten without `drop`.
fn model_copy(edit: impl Fn(&mut serde_json::Value), drop: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&config_path, config.to_string()).unwrap();
    if let Some(drop) = drop {
        let ckpt = Checkpoint::open(&model_dir()).unwrap();
        let tensors: Vec<(String, Vec<f32>, Vec<usize>)> = ckpt
            .keys()
            .into_iter()
            .filter(|k| k != drop)
            .map(|k| {
                let (v, s) = ckpt.f32_any(&k).unwrap();
                (k, v, s)
            })
            .collect();
        let views: Vec<(&str, TensorData<'_>)> =
            tensors.iter().map(|(k, v, s)| (k.as_str(), TensorData::F32(v, s))).collect();
        write_safetensors(&dir.path().join("model.safetensors"), &views).unwrap();
    }
    dir
}

#[test]
fn bad_checkpoints_are_named() {
    let device = Default::default();
    // A missing tensor names its key and shape.
    let dir = model_copy(|_| {}, Some("model.vision_model.post_layernorm.weight"));
    let err = load_pretrained::<B>(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("model.vision_model.post_layernorm.weight") && err.contains("[32]"), "{err}");
    // Untied head without lm_head.weight.
    let dir = model_copy(|_| {}, Some("lm_head.weight"));
    let err = load_pretrained::<B>(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("lm_head.weight"), "{err}");
    // Tied: the head is the embedding, and the logits are those of a model whose head is the embedding.
    let dir = model_copy(|c| c["tie_word_embeddings"] = true.into(), Some("lm_head.weight"));
    assert!(load_pretrained::<B>(dir.path(), &device).unwrap().text.lm_head.is_none());
    // Another architecture names its model_type, through every entry point.
    let dir = model_copy(|c| c["model_type"] = "llava".into(), None);
    let err = AnyVlm::<B>::load(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("`llava`") && err.contains("qwen2_vl, qwen2_5_vl, idefics3"), "{err}");
    let err = load_pretrained::<B>(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("`llava`") && err.contains("expected `idefics3`"), "{err}");
    let qwen = common::model_dir();
    let err = Idefics3Config::from_path(&qwen).unwrap_err().to_string();
    assert!(err.contains("`qwen2_vl`"), "{err}");
    let err = Vlm::<B>::load(&model_dir(), &device).unwrap_err().to_string();
    assert!(err.contains("`idefics3`"), "{err}");
    assert!(matches!(AnyVlm::<B>::load(&qwen, &device).unwrap(), AnyVlm::Qwen2Vl(_)));
    // Unsupported rotary scaling is refused by name.
    let dir = model_copy(|c| c["text_config"]["rope_parameters"]["rope_type"] = "llama3".into(), None);
    let err = load_pretrained::<B>(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("`llama3`"), "{err}");
}

#[test]
fn hub_style_config_reads_the_same_model() {
    // transformers 4.x hub files: `rope_theta` directly in text_config, vision defaults omitted.
    let nested = Idefics3Config::from_path(&model_dir()).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir().join("config.json")).unwrap()).unwrap();
    let text = config["text_config"].as_object_mut().unwrap();
    text.remove("rope_parameters");
    text.insert("rope_theta".into(), 100000.0.into());
    text.insert("rope_scaling".into(), serde_json::Value::Null);
    text.remove("head_dim");
    let vision = config["vision_config"].as_object_mut().unwrap();
    vision.remove("layer_norm_eps");
    vision.remove("num_channels");
    assert_eq!(Idefics3Config::from_json(&config.to_string()).unwrap(), nested);
    assert_eq!(nested.image_seq_len(), 4);
    assert_eq!((nested.text.head_dim, nested.text.rope_theta, nested.scale_factor), (16, 100000.0, 2));
}
