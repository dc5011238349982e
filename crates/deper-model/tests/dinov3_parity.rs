//! Parity of the DINOv3 ViT port (`deper_model::backbone`) with HF `DINOv3ViTModel` and
//! `DINOv3ViTImageProcessor` (transformers 5.24.0) on the tiny random fixture
//! `tests/fixtures/dinov3_tiny/` (see its README for the reference tensors).
//!
//! Run with `--nocapture` to see the max abs errors.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use deper_model::backbone::{
    load_pretrained, preprocess::resize_bilinear_aa, rope::rope_tables, AnyBackbone, BackboneError, Dinov3,
    Dinov3Config, Dinov3ImageProcessor,
};
use deper_weights::{write_safetensors, Checkpoint, TensorData as StData};

mod common;

use common::{max_abs_diff, pixel_codes, reference_tensor, B};

/// Model outputs: tolerance suggested by the fixture README.
const MODEL_TOL: f32 = 1e-4;
/// Preprocessing: f32 port of the resize.
const PIXEL_TOL: f32 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dinov3_tiny")
}

fn reference() -> Checkpoint {
    Checkpoint::open(&fixture().join("reference.safetensors")).expect("reference.safetensors")
}

fn model() -> Dinov3<B> {
    load_pretrained::<B>(fixture().join("model"), &Default::default()).expect("load the tiny model")
}

/// The random input: `pixel = code / 64` (exact).
fn random_pixels() -> Tensor<B, 4> {
    pixel_codes(&fixture().join("reference.safetensors"), "random.pixel_codes_int8")
}

#[test]
fn config_json_and_presets() {
    let config = Dinov3Config::from_json_file(&fixture().join("model/config.json")).expect("fixture config");
    assert_eq!((config.hidden_size, config.num_hidden_layers, config.num_attention_heads), (32, 2, 4));
    assert_eq!((config.intermediate_size, config.num_register_tokens, config.patch_size), (64, 4, 16));
    assert!(!config.key_bias && config.query_bias && !config.use_gated_mlp);
    assert_eq!((config.rope_theta, config.layer_norm_eps, config.image_size), (100.0, 1e-5, 448));

    let s = Dinov3Config::vits16();
    assert_eq!((s.hidden_size, s.num_hidden_layers, s.num_attention_heads, s.intermediate_size), (384, 12, 6, 1536));
    let b = Dinov3Config::vitb16();
    assert_eq!((b.hidden_size, b.num_hidden_layers, b.num_attention_heads, b.intermediate_size), (768, 12, 12, 3072));
    for c in [&s, &b] {
        assert_eq!((c.num_register_tokens, c.patch_size, c.rope_theta, c.layerscale_value), (4, 16, 100.0, 1.0));
    }
    // Missing fields take the HF defaults; `patch_size` may be a square pair.
    let minimal = Dinov3Config::from_json_str(r#"{"model_type": "dinov3_vit", "patch_size": [16, 16]}"#).expect("min");
    assert_eq!(minimal, Dinov3Config::default());

    // A random init runs (gated variant included) and gives the documented shapes.
    let tiny = Dinov3Config {
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_register_tokens: 2,
        use_gated_mlp: true,
        hidden_act: "silu".into(),
        ..Dinov3Config::default()
    };
    let m = tiny.init::<B>(&Default::default());
    let px = Tensor::<B, 4>::zeros([2, 3, 48, 32], &Default::default());
    assert_eq!(m.forward(px.clone()).dims(), [2, 3 + 6, 16]);
    assert_eq!(m.patch_features(px).dims(), [2, 3, 2, 16]);
}

#[test]
fn rope_tables_match() {
    let reference = reference();
    let (cos, sin) = rope_tables(28, 28, 8, 100.0);
    let (rcos, shape) = reference.f32_any("rope.cos").expect("rope.cos");
    let (rsin, _) = reference.f32_any("rope.sin").expect("rope.sin");
    assert_eq!(shape, [784, 8]);
    let err = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let (ec, es) = (err(&cos, &rcos), err(&sin, &rsin));
    println!("rope.cos max abs err {ec:e}, rope.sin {es:e}");
    assert!(ec < 1e-6 && es < 1e-6, "{ec} {es}");
}

#[test]
fn random_input_parity() {
    let reference = reference();
    let model = model();
    let out = model.forward_with_hidden_states(random_pixels());
    assert_eq!(out.grid, (28, 28));
    assert_eq!(out.hidden_states.len(), 3);
    let checks = [
        ("random.embeddings", out.hidden_states[0].clone()),
        ("random.layer0", out.hidden_states[1].clone()),
        ("random.layer1_prenorm", out.hidden_states[2].clone()),
        ("random.last_hidden_state", out.last_hidden_state.clone()),
    ];
    for (key, mine) in checks {
        let err = max_abs_diff(mine, reference_tensor(&reference, key));
        println!("{key}: max abs err {err:e}");
        assert!(err < MODEL_TOL, "{key}: {err}");
    }
    let pooler = out.last_hidden_state.clone().slice([0..1, 0..1, 0..32]).reshape([1, 32]);
    let err = max_abs_diff(pooler, reference_tensor(&reference, "random.pooler_output"));
    println!("random.pooler_output: max abs err {err:e}");
    assert!(err < MODEL_TOL, "pooler {err}");

    // (c) patch_features is last_hidden_state[:, 5:] as [b, y, x, c], also against the fixture.
    let grid = model.patch_features(random_pixels());
    assert_eq!(grid.dims(), [1, 28, 28, 32]);
    let sliced = out.last_hidden_state.slice([0..1, 5..789, 0..32]).reshape([1, 28, 28, 32]);
    assert_eq!(max_abs_diff(grid.clone(), sliced), 0.0);
    let err = max_abs_diff(grid, reference_tensor(&reference, "random.patch_grid"));
    println!("random.patch_grid: max abs err {err:e}");
    assert!(err < MODEL_TOL, "patch grid {err}");
}

/// Rows `[0,8) ++ [220,228) ++ [440,448)` of a `[3, 448, 448]` buffer, as the fixture stores them.
fn row_bands(px: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(3 * 24 * 448);
    for c in 0..3 {
        for r in (0..8).chain(220..228).chain(440..448) {
            out.extend_from_slice(&px[(c * 448 + r) * 448..(c * 448 + r + 1) * 448]);
        }
    }
    out
}

#[test]
fn preprocessing_and_image_parity() {
    let reference = reference();
    let facts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).expect("json")).expect("json");
    let processor = Dinov3ImageProcessor::from_json_file(&fixture().join("preprocessor_config.json")).expect("proc");
    assert_eq!(processor, Dinov3ImageProcessor::default());
    let model = model();
    for tag in ["image_small", "image_large"] {
        let image = image::open(fixture().join(format!("{tag}.png"))).expect("png");
        let px = processor.preprocess_image(&image).expect("preprocess");
        assert_eq!(px.len(), 3 * 448 * 448);

        let (rows, _) = reference.f32_any(&format!("{tag}.pixel_values_rows")).expect("rows");
        let band_err = row_bands(&px).iter().zip(&rows).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let abs_max = px.iter().fold(0f32, |m, v| m.max(v.abs()));
        let ref_abs_max = facts[tag]["pixel_values_abs_max"].as_f64().expect("abs max") as f32;
        println!("{tag}: pixel rows max abs err {band_err:e}, abs max {abs_max} vs {ref_abs_max}");
        assert!(band_err < PIXEL_TOL, "{tag} rows {band_err}");
        assert!((abs_max - ref_abs_max).abs() < PIXEL_TOL, "{tag} abs max");
        for c in 0..3 {
            let sum: f64 = px[c * 448 * 448..(c + 1) * 448 * 448].iter().map(|&v| f64::from(v)).sum();
            let want = facts[tag]["pixel_values_channel_sum"][c].as_f64().expect("sum");
            // 200 704 values: a 1e-6 mean bias would move the sum by 0.2.
            println!("{tag}: channel {c} sum {sum:.6} vs {want:.6} (diff {:e})", sum - want);
            assert!((sum - want).abs() < 0.05, "{tag} channel {c} sum {sum} vs {want}");
        }

        let pixels = Tensor::<B, 4>::from_data(TensorData::new(px, [1, 3, 448, 448]), &Default::default());
        let last = model.forward(pixels);
        let err = max_abs_diff(last.clone(), reference_tensor(&reference, &format!("{tag}.last_hidden_state")));
        let pooler = last.slice([0..1, 0..1, 0..32]).reshape([1, 32]);
        let perr = max_abs_diff(pooler, reference_tensor(&reference, &format!("{tag}.pooler_output")));
        println!("{tag}.last_hidden_state: max abs err {err:e}; pooler {perr:e}");
        assert!(err < MODEL_TOL && perr < MODEL_TOL, "{tag} model {err} {perr}");
    }
    // load_tensor gives the same values as a [1, 3, 448, 448] tensor.
    let t = processor.load_tensor::<B>(&fixture().join("image_small.png"), &Default::default()).expect("tensor");
    assert_eq!(t.dims(), [1, 3, 448, 448]);
}

/// A non-square input (H 64, W 96: a 4×6 grid) through [`AnyBackbone`], against
/// `reference_nonsquare.safetensors` (made by `make_nonsquare.py` from the committed model).
#[test]
fn non_square_input_parity_via_any_backbone() {
    let path = fixture().join("reference_nonsquare.safetensors");
    let pixels = pixel_codes(&path, "pixel_codes_int8");
    assert_eq!(pixels.dims(), [1, 3, 64, 96]);

    let backbone = AnyBackbone::<B>::load(&fixture().join("model"), &Default::default()).expect("load");
    assert_eq!(backbone.family(), "dinov3_vit");
    assert_eq!((backbone.hidden_size(), backbone.num_prefix_tokens(), backbone.stride()), (32, 5, 16));
    assert_eq!(backbone.grid(64, 96), (4, 6));
    let last = backbone.forward(pixels);
    assert_eq!(last.dims(), [1, 5 + 4 * 6, 32]);
    let reference = Checkpoint::open(&path).expect("reference_nonsquare.safetensors");
    let err = max_abs_diff(last, reference_tensor(&reference, "last_hidden_state"));
    println!("non-square last_hidden_state: max abs err {err:e}");
    assert!(err < MODEL_TOL, "{err}");
}

#[test]
fn resize_identity_and_constant() {
    // Same size: identity. Constant input stays constant both ways (weights are normalised).
    let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
    assert_eq!(resize_bilinear_aa(&src, 3, 4, 3, 4), src);
    for (oh, ow) in [(7, 9), (2, 1)] {
        let out = resize_bilinear_aa(&[0.5; 12], 3, 4, oh, ow);
        assert!(out.iter().all(|v| (v - 0.5).abs() < 1e-6), "{out:?}");
    }
    // Wrong buffer length is an error, not a panic.
    assert!(Dinov3ImageProcessor::default().preprocess_rgb(&[0; 5], 2, 1).is_err());
}

/// Copies the fixture model into a temp dir with `edit` applied to the tensors and `config`.
fn broken_copy(
    edit: impl Fn(&str, Vec<f32>, Vec<usize>) -> Option<(Vec<f32>, Vec<usize>)>,
    config: Option<&str>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = Checkpoint::open(&fixture().join("model")).expect("fixture model");
    let mut tensors = Vec::new();
    for key in ck.keys() {
        let (values, shape) = ck.f32_any(&key).expect("tensor");
        if let Some(t) = edit(&key, values, shape) {
            tensors.push((key, t));
        }
    }
    let views: Vec<(&str, StData<'_>)> =
        tensors.iter().map(|(k, (v, s))| (k.as_str(), StData::F32(v.as_slice(), s.as_slice()))).collect();
    write_safetensors(&dir.path().join("model.safetensors"), &views).expect("write");
    let original = std::fs::read_to_string(fixture().join("model/config.json")).expect("config");
    std::fs::write(dir.path().join("config.json"), config.unwrap_or(&original)).expect("write config");
    dir
}

fn load_err(dir: &Path) -> String {
    match load_pretrained::<B>(dir, &Default::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    // The unchanged copy loads (the writer round-trips).
    let ok = broken_copy(|_, v, s| Some((v, s)), None);
    assert!(load_pretrained::<B>(ok.path(), &Default::default()).is_ok());

    let missing = broken_copy(|k, v, s| (k != "layer.1.attention.v_proj.bias").then_some((v, s)), None);
    let err = load_err(missing.path());
    println!("missing: {err}");
    assert!(err.contains("missing tensor `layer.1.attention.v_proj.bias`") && err.contains("[32]"), "{err}");

    let reshaped =
        broken_copy(|k, v, s| Some(if k == "layer.0.mlp.up_proj.weight" { (v, vec![32, 64]) } else { (v, s) }), None);
    let err = load_err(reshaped.path());
    println!("wrong shape: {err}");
    assert!(
        err.contains("`layer.0.mlp.up_proj.weight`") && err.contains("expected shape [64, 32], found [32, 64]"),
        "{err}"
    );

    let bert = r#"{"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4}"#;
    let foreign = broken_copy(|_, v, s| Some((v, s)), Some(bert));
    let err = load_err(foreign.path());
    println!("foreign config: {err}");
    assert!(err.contains("config.json") && err.contains("model_type is \"bert\"") && err.contains("dinov3_vit"));

    let err = Dinov3Config::from_json_str(r#"{"hidden_size": 32}"#).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("no `model_type`"), "{err}");
    let bad_act = r#"{"model_type": "dinov3_vit", "hidden_act": "relu6"}"#;
    let err = Dinov3Config::from_json_str(bad_act).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("relu6"), "{err}");

    let empty = tempfile::tempdir().expect("tempdir");
    let err = load_err(empty.path());
    println!("empty dir: {err}");
    assert!(err.contains("config.json"), "{err}");
    assert!(matches!(load_pretrained::<B>(empty.path(), &Default::default()), Err(BackboneError::Io { .. })));
}
