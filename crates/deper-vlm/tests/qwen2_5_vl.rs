//! Qwen2.5-VL against the transformers reference `tests/fixtures/qwen2_5_vl_tiny` (window attention over
//! 4 windows, RMSNorm, SwiGLU): vision features, logits, persona injection, greedy and cached generation,
//! preprocessing, tokenisation, both config layouts, the pipeline, export and bad checkpoints.
#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

mod common;
use common::{check, grid, ids, max_abs, tensor2, values, B};

use burn::tensor::{Tensor, TensorData};
use deper_vlm::qwen2_vl::export::save_pretrained;
use deper_vlm::qwen2_vl::pretrained::load_weights;
use deper_vlm::qwen2_vl::rope_index;
use deper_vlm::qwen2_vl::vision::{rot_pos_ids, window_index};
use deper_vlm::StopReason;
use deper_vlm::{
    load_pretrained, qwen2_5_vl_3b, qwen2_5_vl_7b, ChatMessage, GenerationConfig, ImageProcessor, MultimodalInput,
    Persona, PersonaVectors, Qwen2VlConfig, Qwen2VlTokenizer, SamplingConfig, VisionKind, Vlm, VlmError,
};
use deper_weights::{write_safetensors, Checkpoint, TensorData as Stored};
use std::path::PathBuf;

const PERSONA_ID: u32 = 399;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2_5_vl_tiny")
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

fn persona(r: &Checkpoint) -> Persona<B> {
    let (v, _) = r.f32_any("persona_vector").unwrap();
    Persona {
        embeddings: Tensor::from_data(TensorData::new(v, [1, 64]), &Default::default()),
        token_ids: vec![PERSONA_ID],
    }
}

fn input(r: &Checkpoint, prompt: &str, with_persona: bool) -> MultimodalInput<B> {
    MultimodalInput {
        input_ids: ids(r, &format!("{prompt}.input_ids")),
        pixel_values: Some(tensor2(r, "pixel_values")),
        image_grid_thw: grid(r),
        persona: with_persona.then(|| persona(r)),
    }
}

fn greedy12() -> GenerationConfig {
    // No stop token: the reference generation ignores EOS.
    GenerationConfig { max_new_tokens: 12, sampling: SamplingConfig::greedy(), stop_tokens: vec![] }
}

#[test]
fn config_is_qwen2_5_vl_in_both_layouts() {
    let nested = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    let flat = Qwen2VlConfig::from_path(&fixture().join("config_flat.json")).unwrap();
    assert_eq!(flat, nested);
    assert_eq!(nested.model_type(), "qwen2_5_vl");
    let v = &nested.vision;
    assert_eq!(v.kind, VisionKind::Qwen25Vl);
    // Qwen2.5-VL's `hidden_size` is the ViT width, `out_hidden_size` the merger output.
    assert_eq!((v.embed_dim, v.hidden_size, v.intermediate_size, v.mlp_dim()), (32, 64, 64, 64));
    assert_eq!((v.depth, v.num_heads, v.window_size, v.window_tokens()), (4, 2, 56, Some(2)));
    assert_eq!(v.fullatt_block_indexes, vec![1, 3]);
    assert_eq!((v.tokens_per_second, v.rope_theta, v.patch_dim()), (2, 10000.0, 1176));
    assert_eq!((nested.text.mrope_section.clone(), nested.text.num_key_value_heads), (vec![2, 3, 3], 2));
    assert!(nested.text.tie_word_embeddings);
}

#[test]
fn vision_tower_matches_reference() {
    let r = reference();
    let model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    let g = grid(&r);
    assert_eq!(g, vec![[1, 6, 8]]);
    // Window order and window boundaries (`cu_window_seqlens`, in patch rows) as transformers computes them.
    let (order, windows) = window_index(&g, 2, 2);
    let order: Vec<i64> = order.iter().map(|&i| i as i64).collect();
    assert_eq!(order, r.i64_any("vision.window_index").unwrap().0);
    let mut bounds = vec![0i64];
    bounds.extend(windows.iter().map(|&(start, len)| ((start + len) * 4) as i64));
    assert_eq!(bounds, r.i64_any("vision.cu_window_seqlens").unwrap().0);
    assert_eq!(windows.len(), 4, "the test image must span several windows");
    let pos: Vec<i64> = rot_pos_ids(&g, 2).iter().flat_map(|&[a, b]| [a as i64, b as i64]).collect();
    assert_eq!(pos, r.i64_any("vision.rot_pos_ids").unwrap().0);

    let out = model.visual.forward_with_intermediates(tensor2(&r, "pixel_values"), &g).unwrap();
    check("vision.patch_embed", &values(out.patch_embed), &r.f32_any("vision.patch_embed").unwrap().0, 1e-5);
    check(
        "vision.blocks_out (window order)",
        &values(out.blocks_out),
        &r.f32_any("vision.blocks_out_windowed").unwrap().0,
        1e-4,
    );
    check("vision.merged", &values(out.merged), &r.f32_any("vision.merged").unwrap().0, 1e-4);
}

#[test]
fn window_attention_changes_the_features() {
    // The same weights with full attention in every block must not reproduce the reference: the
    // windows are really in effect.
    let r = reference();
    let mut model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    model.visual.fullatt_block_indexes = vec![0, 1, 2, 3];
    let merged = model.visual.forward(tensor2(&r, "pixel_values"), &grid(&r)).unwrap();
    let diff = max_abs(&values(merged), &r.f32_any("vision.merged").unwrap().0);
    println!("full attention everywhere vs reference: {diff:.3e}");
    assert!(diff > 1e-2, "{diff}");
}

#[test]
fn positions_embeddings_and_logits_match() {
    let r = reference();
    let j = reference_json();
    let model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    let (embeds, _, _) = model.inputs_embeds(&input(&r, "a", false)).unwrap();
    check("a.inputs_embeds", &values(embeds), &r.f32_any("a.inputs_embeds").unwrap().0, 1e-4);
    for p in ["a", "b"] {
        let prompt = ids(&r, &format!("{p}.input_ids"));
        let (pos, delta) = rope_index(&prompt, 397, &grid(&r), 2).unwrap();
        assert_eq!(pos.concat(), r.i64_any(&format!("{p}.position_ids")).unwrap().0, "prompt {p}");
        assert_eq!(delta, j[p]["rope_delta"].as_i64().unwrap(), "prompt {p}");
        let logits = model.forward_input(&input(&r, p, false)).unwrap();
        assert_eq!(logits.dims(), [1, prompt.len(), 400]);
        check(&format!("{p}.logits"), &values(logits), &r.f32_any(&format!("{p}.logits")).unwrap().0, 1e-4);
    }
}

#[test]
fn persona_logits_match_reference() {
    let r = reference();
    let model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    let logits = model.forward_input(&input(&r, "b", true)).unwrap();
    check("b.logits_persona", &values(logits), &r.f32_any("b.logits_persona").unwrap().0, 1e-4);
}

#[test]
fn greedy_ids_match_reference_with_and_without_persona() {
    let r = reference();
    let model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    for (prompt, with_persona, key) in [
        ("a", false, "a.generated_ids_plain"),
        ("b", false, "b.generated_ids_plain"),
        ("b", true, "b.generated_ids_persona"),
    ] {
        let out = model.generate(&input(&r, prompt, with_persona), &greedy12(), &mut |_| true).unwrap();
        assert_eq!(out.generated_ids, ids(&r, key), "{key}");
        assert_eq!(out.stop, StopReason::MaxNewTokens);
    }
}

#[test]
fn cached_decoding_equals_full_recomputation() {
    let r = reference();
    let model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    for with_persona in [false, true] {
        let prompt = input(&r, "b", with_persona);
        let generated = ids(&r, if with_persona { "b.generated_ids_persona" } else { "b.generated_ids_plain" });
        let mut cache = model.new_cache(prompt.input_ids.len() + generated.len());
        let (mut logits, delta) = model.prefill(&prompt, &mut cache).unwrap();
        let mut grown = prompt.clone();
        let mut worst = 0.0f32;
        for &token in &generated {
            let full = model.forward_input(&grown).unwrap();
            let l = grown.input_ids.len();
            worst = worst.max(max_abs(&values(logits.clone()), &values(full.narrow(1, l - 1, 1))));
            grown.input_ids.push(token);
            logits = model.decode_step(token, delta, &mut cache).unwrap();
        }
        println!("persona {with_persona}: cached vs full max abs err {worst:.3e}");
        assert!(worst <= 1e-4, "cached vs full: {worst}");
    }
}

#[test]
fn pixel_values_from_image_file_match() {
    let r = reference();
    let proc = ImageProcessor::from_dir(&model_dir()).unwrap();
    let px = proc.preprocess_file(&fixture().join("image.png")).unwrap();
    assert_eq!(px.grid_thw, [1, 6, 8]);
    assert_eq!((px.rows, px.cols), (48, 1176));
    check("pixel_values", &px.values, &r.f32_any("pixel_values").unwrap().0, 1e-5);
}

#[test]
fn templated_prompts_tokenize_like_the_processor() {
    let r = reference();
    let j = reference_json();
    let tok = Qwen2VlTokenizer::from_dir(&model_dir()).unwrap();
    for p in ["a", "b"] {
        let text = j[p]["user_text"].as_str().unwrap();
        let rendered = tok.apply_chat_template(&[ChatMessage::user_with_image(text)], true).unwrap();
        assert_eq!(rendered, j[p]["prompt"].as_str().unwrap(), "prompt {p}");
        let (expanded, prompt_ids) = tok.caption_prompt(text, [1, 6, 8], 2).unwrap();
        assert_eq!(expanded, j[p]["prompt_expanded"].as_str().unwrap(), "prompt {p}");
        assert_eq!(prompt_ids, ids(&r, &format!("{p}.input_ids")), "prompt {p}");
    }
}

#[test]
fn flat_config_gives_the_same_logits() {
    let r = reference();
    let config = Qwen2VlConfig::from_path(&fixture().join("config_flat.json")).unwrap();
    let model = load_weights::<B>(&config, &Checkpoint::open(&model_dir()).unwrap(), &Default::default()).unwrap();
    let logits = model.forward_input(&input(&r, "a", false)).unwrap();
    check("a.logits (flat config)", &values(logits), &r.f32_any("a.logits").unwrap().0, 1e-4);
}

#[test]
fn caption_and_forward_file_end_to_end() {
    let r = reference();
    let j = reference_json();
    let vlm = Vlm::<B>::load(&model_dir(), &Default::default()).unwrap();
    assert_eq!(vlm.eos_token_ids, vec![394]);
    let image = fixture().join("image.png");
    let caption = vlm.caption(&image, "Describe the image.", None, &greedy12(), &mut |_| true).unwrap();
    assert_eq!(caption.prompt_ids, ids(&r, "a.input_ids"));
    assert_eq!(caption.generated_ids, ids(&r, "a.generated_ids_plain"));
    assert_eq!(caption.text, j["a"]["generated_text_plain"].as_str().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let (v, _) = r.f32_any("persona_vector").unwrap();
    let file = dir.path().join("persona.safetensors");
    write_safetensors(&file, &[("persona_embeddings", Stored::F32(&v, &[1, 64]))]).unwrap();
    let persona = PersonaVectors::from_file(&file).unwrap();
    let prompt = "Describe the image in the style of <|persona|>.";
    let caption = vlm.caption(&image, prompt, Some(&persona), &greedy12(), &mut |_| true).unwrap();
    assert_eq!(caption.prompt_ids, ids(&r, "b.input_ids"));
    assert_eq!(caption.generated_ids, ids(&r, "b.generated_ids_persona"));

    // `deper vlm forward`: tensors in, logits out.
    let (input_ids, ishape) = r.i64_any("b.input_ids").unwrap();
    let (pixels, pshape) = r.f32_any("pixel_values").unwrap();
    let (g, gshape) = r.i64_any("image_grid_thw").unwrap();
    let inputs = dir.path().join("in.safetensors");
    write_safetensors(
        &inputs,
        &[
            ("input_ids", Stored::I64(&input_ids, &ishape)),
            ("pixel_values", Stored::F32(&pixels, &pshape)),
            ("image_grid_thw", Stored::I64(&g, &gshape)),
            ("persona_embeddings", Stored::F32(&v, &[1, 64])),
        ],
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    vlm.forward_file(&inputs, &out).unwrap();
    let (logits, shape) = Checkpoint::open(&out).unwrap().f32_any("logits").unwrap();
    assert_eq!(shape, vec![1, 78, 400]);
    check("b.logits_persona (forward file)", &logits, &r.f32_any("b.logits_persona").unwrap().0, 1e-4);
}

#[test]
fn saved_model_loads_back_with_identical_logits() {
    let r = reference();
    let device = Default::default();
    let config = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    let model = load_pretrained::<B>(&model_dir(), &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(&model, &config, dir.path()).unwrap();
    assert_eq!(Qwen2VlConfig::from_path(dir.path()).unwrap(), config);
    let loaded = load_pretrained::<B>(dir.path(), &device).unwrap();
    let a = model.forward_input(&input(&r, "a", false)).unwrap();
    let b = loaded.forward_input(&input(&r, "a", false)).unwrap();
    check("round-trip logits", &values(b), &values(a), 0.0);
    // Packed for CPU inference, the projections are gone: refused rather than saved empty.
    let mut packed = model;
    packed.model = packed.model.pack_for_cpu();
    let err = save_pretrained(&packed, &config, &dir.path().join("packed")).unwrap_err().to_string();
    assert!(err.contains("packed for CPU inference"), "{err}");
}

#[test]
fn presets_have_hub_values() {
    let small = qwen2_5_vl_3b();
    assert_eq!((small.text.hidden_size, small.text.num_hidden_layers, small.text.head_dim()), (2048, 36, 128));
    assert!(small.text.tie_word_embeddings);
    assert_eq!((small.vision.embed_dim, small.vision.hidden_size, small.vision.mlp_dim()), (1280, 2048, 3420));
    assert_eq!(
        (small.vision.window_tokens(), small.vision.fullatt_block_indexes.clone()),
        (Some(4), vec![7, 15, 23, 31])
    );
    let big = qwen2_5_vl_7b();
    assert_eq!((big.text.hidden_size, big.text.num_key_value_heads, big.vision.hidden_size), (3584, 4, 3584));
    assert!(!big.text.tie_word_embeddings);
    for c in [&small, &big] {
        assert_eq!(c.model_type(), "qwen2_5_vl");
        assert_eq!(c.text.mrope_section.iter().sum::<usize>() * 2, c.text.head_dim());
        let json = serde_json::to_string(c).unwrap();
        assert_eq!(&serde_json::from_str::<Qwen2VlConfig>(&json).unwrap(), c);
    }
}

#[test]
fn bad_checkpoints_and_configs_are_named() {
    // A Qwen2.5-VL checkpoint missing one vision tensor names the key and its shape.
    let ckpt = Checkpoint::open(&model_dir()).unwrap();
    let missing = "visual.blocks.2.mlp.gate_proj.bias";
    let keep: Vec<String> = ckpt.keys().into_iter().filter(|k| k != missing).collect();
    let stored: Vec<(Vec<f32>, Vec<usize>)> = keep.iter().map(|k| ckpt.f32_any(k).unwrap()).collect();
    let tensors: Vec<(&str, Stored<'_>)> =
        keep.iter().zip(&stored).map(|(k, (v, s))| (k.as_str(), Stored::F32(v, s))).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    write_safetensors(&file, &tensors).unwrap();
    let config = Qwen2VlConfig::from_path(&model_dir()).unwrap();
    let err = load_weights::<B>(&config, &Checkpoint::open(&file).unwrap(), &Default::default()).unwrap_err();
    assert!(matches!(err, VlmError::Weights(_)));
    let msg = err.to_string();
    assert!(msg.contains(missing) && msg.contains("[64]"), "{msg}");

    // Qwen2-VL weights under a Qwen2.5-VL config: the first Qwen2.5-only tensor is named.
    let qwen2 =
        Checkpoint::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2_vl_tiny/model"))
            .unwrap();
    let msg = load_weights::<B>(&config, &qwen2, &Default::default()).unwrap_err().to_string();
    assert!(msg.contains("visual.blocks.0."), "{msg}");

    // Another architecture's config names the model_type found.
    let flat = std::fs::read_to_string(fixture().join("config_flat.json")).unwrap();
    let err = Qwen2VlConfig::from_json(&flat.replace("\"qwen2_5_vl\"", "\"qwen3_vl\"")).unwrap_err().to_string();
    assert!(err.contains("`qwen3_vl`") && err.contains("qwen2_5_vl") && err.contains("qwen2_vl"), "{err}");
    // A window smaller than one merged token cannot tile the image.
    let err = Qwen2VlConfig::from_json(&flat.replace("\"window_size\": 56", "\"window_size\": 20")).unwrap_err();
    assert!(err.to_string().contains("window_size 20"), "{err}");
}
