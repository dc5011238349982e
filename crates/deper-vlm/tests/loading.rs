//! Config layouts, presets, tied embeddings, sharded checkpoints and clear errors on bad input.
#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

mod common;
use common::*;

use deper_vlm::qwen2_vl::pretrained::load_weights;
use deper_vlm::{load_pretrained, qwen2_vl_2b, qwen2_vl_7b, Qwen2VlConfig, VlmError};
use deper_weights::{write_safetensors, Checkpoint, TensorData};
use std::path::Path;

/// Values and shape of a stored tensor.
type Tensor = (Vec<f32>, Vec<usize>);

fn copy_model(to: &Path) {
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn both_config_layouts_give_the_same_config() {
    let nested = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    let flat = Qwen2VlConfig::from_path(&fixture().join("config_flat.json")).unwrap();
    assert_eq!(flat.text, nested.text);
    assert_eq!(flat.vision, nested.vision);
    assert_eq!(flat.tokens, nested.tokens);
    assert_eq!(nested.text.mrope_section, vec![2, 3, 3]);
    assert_eq!((nested.text.num_key_value_heads, nested.text.rope_theta), (2, 1e6));
    assert!(nested.text.tie_word_embeddings);
    assert_eq!((nested.vision.embed_dim, nested.vision.in_channels, nested.vision.patch_dim()), (32, 3, 1176));
    assert_eq!(nested.tokens.image_token_id, 397);
}

#[test]
fn flat_config_gives_identical_logits() {
    let r = reference();
    let config = Qwen2VlConfig::from_path(&fixture().join("config_flat.json")).unwrap();
    let ckpt = Checkpoint::open(&model_dir()).unwrap();
    let model = load_weights::<B>(&config, &ckpt, &Default::default()).unwrap();
    let logits = model.forward(&ids(&r, "a.input_ids"), Some(tensor2(&r, "pixel_values")), &grid(&r), None).unwrap();
    check("a.logits (flat config)", &values(logits), &r.f32_any("a.logits").unwrap().0, 1e-4);
}

#[test]
fn presets_have_hub_values() {
    let small = qwen2_vl_2b();
    assert_eq!((small.text.hidden_size, small.text.num_hidden_layers, small.text.head_dim()), (1536, 28, 128));
    assert_eq!(small.text.mrope_section.iter().sum::<usize>() * 2, small.text.head_dim());
    assert!(small.text.tie_word_embeddings);
    let big = qwen2_vl_7b();
    assert_eq!((big.text.hidden_size, big.text.num_key_value_heads, big.vision.hidden_size), (3584, 4, 3584));
    assert!(!big.text.tie_word_embeddings);
    // Round trip through burn's Config JSON.
    let json = serde_json::to_string(&small).unwrap();
    assert_eq!(serde_json::from_str::<Qwen2VlConfig>(&json).unwrap(), small);
}

#[test]
fn foreign_model_type_is_named() {
    let text =
        std::fs::read_to_string(fixture().join("config_flat.json")).unwrap().replace("\"qwen2_vl\"", "\"llama\"");
    let err = Qwen2VlConfig::from_json(&text).unwrap_err().to_string();
    assert!(err.contains("`llama`") && err.contains("qwen2_vl"), "{err}");
}

#[test]
fn tied_head_is_the_embedding_and_untied_needs_lm_head() {
    let r = reference();
    let ckpt = Checkpoint::open(&model_dir()).unwrap();
    assert!(!ckpt.contains("lm_head.weight"));
    let mut config = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    let tied = load_weights::<B>(&config, &ckpt, &Default::default()).unwrap();
    assert!(tied.model.lm_head.is_none());
    config.text.tie_word_embeddings = false;
    let err = load_weights::<B>(&config, &ckpt, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("lm_head.weight") && err.contains("[400, 64]"), "{err}");

    // An untied checkpoint whose lm_head equals the embeddings gives the reference logits, and its
    // keys in the transformers ≥ 4.52 in-memory layout (`model.language_model.*`, `model.visual.*`) load.
    let dir = tempfile::tempdir().unwrap();
    let mut owned: Vec<(String, Vec<f32>, Vec<usize>)> = Vec::new();
    for key in ckpt.keys() {
        let (v, shape) = ckpt.f32_any(&key).unwrap();
        let renamed = if let Some(rest) = key.strip_prefix("model.") {
            format!("model.language_model.{rest}")
        } else if let Some(rest) = key.strip_prefix("visual.") {
            format!("model.visual.{rest}")
        } else {
            key.clone()
        };
        owned.push((renamed, v, shape));
    }
    let (embed, shape) = ckpt.f32_any("model.embed_tokens.weight").unwrap();
    owned.push(("lm_head.weight".into(), embed, shape));
    let tensors: Vec<(&str, TensorData<'_>)> =
        owned.iter().map(|(k, v, s)| (k.as_str(), TensorData::F32(v, s))).collect();
    let file = dir.path().join("model.safetensors");
    write_safetensors(&file, &tensors).unwrap();
    let untied = load_weights::<B>(&config, &Checkpoint::open(&file).unwrap(), &Default::default()).unwrap();
    assert!(untied.model.lm_head.is_some());
    let logits = untied.forward(&ids(&r, "a.input_ids"), Some(tensor2(&r, "pixel_values")), &grid(&r), None).unwrap();
    check("a.logits (untied, renamed keys)", &values(logits), &r.f32_any("a.logits").unwrap().0, 1e-4);
}

#[test]
fn sharded_checkpoint_loads_and_missing_shard_is_reported() {
    let r = reference();
    let ckpt = Checkpoint::open(&model_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let keys = ckpt.keys();
    let mut owned = Vec::new();
    for k in &keys {
        owned.push((k.clone(), ckpt.f32_any(k).unwrap()));
    }
    let mut weight_map = serde_json::Map::new();
    for (shard, chunk) in owned.chunks(owned.len() / 2 + 1).enumerate() {
        let name = format!("model-{:05}-of-00002.safetensors", shard + 1);
        let tensors: Vec<(&str, TensorData<'_>)> =
            chunk.iter().map(|(k, (v, s))| (k.as_str(), TensorData::F32(v, s))).collect();
        write_safetensors(&dir.path().join(&name), &tensors).unwrap();
        for (k, _) in chunk {
            weight_map.insert(k.clone(), name.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let model = load_pretrained::<B>(dir.path(), &Default::default()).unwrap();
    let logits = model.forward(&ids(&r, "a.input_ids"), Some(tensor2(&r, "pixel_values")), &grid(&r), None).unwrap();
    check("a.logits (sharded)", &values(logits), &r.f32_any("a.logits").unwrap().0, 1e-4);

    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_pretrained::<B>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}

#[test]
fn missing_or_misshapen_tensor_names_the_key() {
    let ckpt = Checkpoint::open(&model_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keep: Vec<(String, Tensor)> = ckpt
        .keys()
        .into_iter()
        .filter(|k| k != "model.layers.1.mlp.up_proj.weight")
        .map(|k| {
            let v = ckpt.f32_any(&k).unwrap();
            (k, v)
        })
        .collect();
    let tensors: Vec<(&str, TensorData<'_>)> =
        keep.iter().map(|(k, (v, s))| (k.as_str(), TensorData::F32(v, s))).collect();
    let file = dir.path().join("model.safetensors");
    write_safetensors(&file, &tensors).unwrap();
    let config = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    let err = load_weights::<B>(&config, &Checkpoint::open(&file).unwrap(), &Default::default()).unwrap_err();
    assert!(matches!(err, VlmError::Weights(_)));
    let msg = err.to_string();
    assert!(msg.contains("model.layers.1.mlp.up_proj.weight") && msg.contains("[128, 64]"), "{msg}");

    let mut wrong = config.clone();
    wrong.text.intermediate_size = 96;
    let msg = load_weights::<B>(&wrong, &ckpt, &Default::default()).unwrap_err().to_string();
    assert!(msg.contains("model.layers.0.mlp.gate_proj.weight") && msg.contains("[96, 64]"), "{msg}");
}

#[test]
fn corrupted_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    let file = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();
    let err = load_pretrained::<B>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::write(&file, b"garbage").unwrap();
    let err = load_pretrained::<B>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn bad_prompts_are_clear_errors() {
    let r = reference();
    let mut config = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    config.text.max_position_embeddings = 32;
    let ckpt = Checkpoint::open(&model_dir()).unwrap();
    let model = load_weights::<B>(&config, &ckpt, &Default::default()).unwrap();
    let a = ids(&r, "a.input_ids");
    let err = model.forward(&a, Some(tensor2(&r, "pixel_values")), &grid(&r), None).unwrap_err().to_string();
    assert!(err.contains("66") && err.contains("32"), "{err}");

    let model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    // Image tokens without pixels, wrong grid, out-of-vocabulary ids, persona count mismatch.
    assert!(model.forward(&a, None, &grid(&r), None).is_err());
    assert!(model.forward(&a, Some(tensor2(&r, "pixel_values")), &[[1, 4, 4]], None).is_err());
    assert!(model.forward(&[1, 2, 4000], None, &[], None).unwrap_err().to_string().contains("4000"));
    let persona = deper_vlm::Persona {
        embeddings: burn::tensor::Tensor::zeros([2, 64], &Default::default()),
        token_ids: vec![399, 399],
    };
    let err = model.forward(&ids(&r, "b.input_ids"), Some(tensor2(&r, "pixel_values")), &grid(&r), Some(persona));
    assert!(err.unwrap_err().to_string().contains("persona"));
    // max_new_tokens beyond the context.
    let input = deper_vlm::MultimodalInput {
        input_ids: vec![1, 2, 3],
        pixel_values: None,
        image_grid_thw: vec![],
        persona: None,
    };
    let config = deper_vlm::GenerationConfig { max_new_tokens: 5000, ..Default::default() };
    assert!(model.generate(&input, &config, &mut |_| true).unwrap_err().to_string().contains("context"));
}

/// Writes every tensor of `ckpt` in `dtype` (bf16 or f16), and the same values rounded, as f32.
fn write_half(ckpt: &Checkpoint, dtype: safetensors::Dtype, half_file: &Path, f32_file: &Path) {
    let mut half_bytes = Vec::new();
    let mut rounded = Vec::new();
    for key in ckpt.keys() {
        let (v, shape) = ckpt.f32_any(&key).unwrap();
        let (bytes, back): (Vec<u8>, Vec<f32>) = match dtype {
            safetensors::Dtype::BF16 => {
                let h: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
                (h.iter().flat_map(|x| x.to_le_bytes()).collect(), h.iter().map(|x| x.to_f32()).collect())
            }
            _ => {
                let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
                (h.iter().flat_map(|x| x.to_le_bytes()).collect(), h.iter().map(|x| x.to_f32()).collect())
            }
        };
        half_bytes.push((key.clone(), shape.clone(), bytes));
        rounded.push((key, back, shape));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = half_bytes
        .iter()
        .map(|(k, s, b)| (k.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, half_file).unwrap();
    let tensors: Vec<(&str, TensorData<'_>)> =
        rounded.iter().map(|(k, v, s)| (k.as_str(), TensorData::F32(v, s))).collect();
    write_safetensors(f32_file, &tensors).unwrap();
}

#[test]
fn bf16_and_f16_checkpoints_load() {
    let r = reference();
    let ckpt = Checkpoint::open(&model_dir()).unwrap();
    let config = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (dtype, name) in [(safetensors::Dtype::BF16, "bf16"), (safetensors::Dtype::F16, "f16")] {
        let (half_file, f32_file) =
            (dir.path().join(format!("{name}.safetensors")), dir.path().join("f32.safetensors"));
        write_half(&ckpt, dtype, &half_file, &f32_file);
        let logits = |file: &Path| {
            let model = load_weights::<B>(&config, &Checkpoint::open(file).unwrap(), &Default::default()).unwrap();
            values(model.forward(&ids(&r, "a.input_ids"), Some(tensor2(&r, "pixel_values")), &grid(&r), None).unwrap())
        };
        let from_half = logits(&half_file);
        check(&format!("{name} checkpoint vs its f32 rounding"), &from_half, &logits(&f32_file), 0.0);
        // Rounded weights move the logits a little, not wildly.
        let err = max_abs(&from_half, &r.f32_any("a.logits").unwrap().0);
        println!("{name} logits vs f32 reference: {err:.3e}");
        assert!(err < 0.5, "{name}: {err}");
    }
}
