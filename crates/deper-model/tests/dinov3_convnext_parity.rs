//! Parity of the DINOv3 ConvNeXt port (`deper_model::backbone::convnext`, loaded through
//! [`AnyBackbone`]) with HF `DINOv3ConvNextModel` (transformers 5.24.0) on the tiny random fixture
//! `tests/fixtures/dinov3_convnext_tiny/` (see its README for the reference tensors), for a square
//! and a non-square input; plus the family dispatch of [`AnyBackbone::load`].
//!
//! Run with `--nocapture` to see the max abs errors.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use deper_model::backbone::{
    load_convnext_pretrained, AnyBackbone, BackboneError, Dinov3ConvNextConfig, Dinov3ImageProcessor,
};
use deper_weights::{write_safetensors, Checkpoint, TensorData as StData};

mod common;

use common::{max_abs_diff, pixel_codes, reference_tensor, B};

/// Model outputs: the fixture README's tolerance.
const MODEL_TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fixture() -> PathBuf {
    fixtures().join("dinov3_convnext_tiny")
}

fn reference() -> Checkpoint {
    Checkpoint::open(&fixture().join("reference.safetensors")).expect("reference.safetensors")
}

/// The random input `tag`: `pixel = code / 64` (exact).
fn pixels(tag: &str) -> Tensor<B, 4> {
    pixel_codes(&fixture().join("reference.safetensors"), &format!("{tag}.pixel_codes_int8"))
}

#[test]
fn config_json_and_presets() {
    let config = Dinov3ConvNextConfig::from_json_file(&fixture().join("model/config.json")).expect("fixture config");
    assert_eq!((config.hidden_sizes.as_slice(), config.depths.as_slice()), (&[8, 16, 24, 32][..], &[1, 1, 2, 1][..]));
    assert_eq!((config.layer_norm_eps, config.hidden_act.as_str(), config.num_channels), (1e-6, "gelu", 3));
    assert_eq!((config.hidden_size(), config.total_stride(), config.grid(96, 64)), (32, 32, (3, 2)));

    let tiny = Dinov3ConvNextConfig::convnext_tiny();
    assert_eq!((tiny.hidden_sizes.as_slice(), tiny.depths.as_slice()), (&[96, 192, 384, 768][..], &[3, 3, 9, 3][..]));
    assert_eq!((tiny.layer_norm_eps, tiny.layer_scale_init_value, tiny.image_size), (1e-6, 1e-6, [224, 224]));
    assert_eq!(Dinov3ConvNextConfig::convnext_base().hidden_sizes, [128, 256, 512, 1024]);
    // Missing fields, and null lists, take the HF defaults (ConvNeXt-Tiny).
    let minimal = r#"{"model_type": "dinov3_convnext", "hidden_sizes": null, "image_size": [224, 224]}"#;
    assert_eq!(Dinov3ConvNextConfig::from_json_str(minimal).expect("minimal"), tiny);
    // Floors like the strided convolutions: 100 → 25 → 12 → 6 → 3.
    assert_eq!(tiny.grid(100, 448), (3, 14));

    let err = Dinov3ConvNextConfig::from_json_str(r#"{"model_type": "dinov3_vit"}"#).unwrap_err().to_string();
    assert!(err.contains("model_type is \"dinov3_vit\"") && err.contains("dinov3_convnext"), "{err}");
    let uneven = r#"{"model_type": "dinov3_convnext", "depths": [1, 1]}"#;
    assert!(Dinov3ConvNextConfig::from_json_str(uneven).is_err());

    // A random init (SiLU variant) runs on a non-square input and gives the documented shapes.
    let small = Dinov3ConvNextConfig {
        hidden_sizes: vec![4, 8],
        depths: vec![1, 1],
        hidden_act: "silu".into(),
        ..Dinov3ConvNextConfig::default()
    };
    let m = small.init::<B>(&Default::default());
    let px = Tensor::<B, 4>::zeros([2, 3, 40, 24], &Default::default());
    assert_eq!(m.grid(40, 24), (5, 3));
    assert_eq!(m.forward(px.clone()).dims(), [2, 1 + 15, 8]);
    assert_eq!(m.patch_features(px).dims(), [2, 5, 3, 8]);
}

/// Checks the forward pass on input `tag` against the fixture: the stage outputs and
/// `last_hidden_state`, with the grid `(gh, gw)`.
fn check_parity(tag: &str, grid: (usize, usize)) {
    let reference = reference();
    let backbone = AnyBackbone::<B>::load(&fixture().join("model"), &Default::default()).expect("load");
    assert_eq!(backbone.family(), "dinov3_convnext");
    assert_eq!((backbone.hidden_size(), backbone.num_prefix_tokens(), backbone.stride()), (32, 1, 32));
    let px = pixels(tag);
    let [_, _, h, w] = px.dims();
    assert_eq!(backbone.grid(h, w), grid);

    let last = backbone.forward(px.clone());
    assert_eq!(last.dims(), [1, 1 + grid.0 * grid.1, 32]);
    let err = max_abs_diff(last.clone(), reference_tensor(&reference, &format!("{tag}.last_hidden_state")));
    println!("{tag}.last_hidden_state: max abs err {err:e}");
    assert!(err < MODEL_TOL, "{tag}: {err}");

    // Stage by stage (channels-first, as HF's hidden_states).
    let AnyBackbone::ConvNext(model) = backbone else { panic!("not a ConvNeXt") };
    let out = model.forward_with_stages(px.clone());
    assert_eq!(out.grid, grid);
    for (s, stage) in out.stages.into_iter().enumerate() {
        let key = format!("{tag}.stage{s}");
        let err = max_abs_diff(stage, reference_tensor(&reference, &key));
        println!("{key}: max abs err {err:e}");
        assert!(err < MODEL_TOL, "{key}: {err}");
    }
    // patch_features is last_hidden_state[:, 1:] as [b, y, x, c].
    let grid_tokens = model.patch_features(px);
    let sliced = last.slice([0..1, 1..1 + grid.0 * grid.1, 0..32]).reshape([1, grid.0, grid.1, 32]);
    assert_eq!(max_abs_diff(grid_tokens, sliced), 0.0);
}

#[test]
fn square_input_parity() {
    check_parity("square", (2, 2));
}

#[test]
fn non_square_input_parity() {
    check_parity("nonsquare", (3, 2));
}

/// A checkpoint tensor: values and shape.
type Stored = (Vec<f32>, Vec<usize>);
/// How a test renames the fixture's keys.
type Rename = fn(&str) -> String;

/// Copies the fixture model into a temp dir with every key passed through `rename` (`None` drops it).
fn renamed_copy(rename: impl Fn(&str) -> Option<String>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = Checkpoint::open(&fixture().join("model")).expect("fixture model");
    let tensors: Vec<(String, Stored)> =
        ck.keys().into_iter().filter_map(|k| rename(&k).map(|new| (new, ck.f32_any(&k).expect("tensor")))).collect();
    let views: Vec<(&str, StData<'_>)> =
        tensors.iter().map(|(k, (v, s))| (k.as_str(), StData::F32(v.as_slice(), s.as_slice()))).collect();
    write_safetensors(&dir.path().join("model.safetensors"), &views).expect("write");
    std::fs::copy(fixture().join("model/config.json"), dir.path().join("config.json")).expect("config");
    dir
}

#[test]
fn prefixed_checkpoints_load_and_missing_tensors_are_named() {
    let px = pixels("square");
    let want = reference_tensor::<3>(&reference(), "square.last_hidden_state");
    // transformers 5.x `state_dict()`: `model.stages.…` beside a bare `layer_norm.…`; and a wrapper
    // prefix in front of both layouts.
    let layouts: [(&str, Rename); 3] = [
        ("state_dict", |k| if k.starts_with("stages.") { format!("model.{k}") } else { k.to_string() }),
        ("wrapped hub", |k| format!("backbone.{k}")),
        (
            "wrapped state_dict",
            |k| if k.starts_with("stages.") { format!("net.model.{k}") } else { format!("net.{k}") },
        ),
    ];
    for (name, rename) in layouts {
        let dir = renamed_copy(|k| Some(rename(k)));
        let model = load_convnext_pretrained::<B>(dir.path(), &Default::default()).expect(name);
        let err = max_abs_diff(model.forward(px.clone()), want.clone());
        println!("{name}: max abs err {err:e}");
        assert!(err < MODEL_TOL, "{name}: {err}");
    }

    let missing = renamed_copy(|k| (k != "stages.2.layers.1.gamma").then(|| k.to_string()));
    let err = load_convnext_pretrained::<B>(missing.path(), &Default::default()).map(|_| ()).unwrap_err().to_string();
    println!("missing: {err}");
    assert!(err.contains("missing tensor `stages.2.layers.1.gamma`") && err.contains("[24]"), "{err}");
}

#[test]
fn any_backbone_rejects_other_model_types() {
    // A VLM folder: its config.json has `model_type` "qwen2_vl".
    let qwen = fixtures().join("qwen2_vl_tiny/model");
    let err = AnyBackbone::<B>::load(&qwen, &Default::default()).map(|_| ()).unwrap_err();
    let text = err.to_string();
    println!("qwen2_vl: {text}");
    assert!(text.contains(&qwen.join("config.json").display().to_string()), "{text}");
    assert!(text.contains("model_type is \"qwen2_vl\""), "{text}");
    assert!(text.contains("\"dinov3_vit\"") && text.contains("\"dinov3_convnext\""), "{text}");
    assert!(
        matches!(&err, BackboneError::InFile { inner, .. } if matches!(**inner, BackboneError::UnsupportedModelType { .. }))
    );

    let no_type = tempfile::tempdir().expect("tempdir");
    std::fs::write(no_type.path().join("config.json"), r#"{"hidden_size": 8}"#).expect("write");
    let text = AnyBackbone::<B>::load(no_type.path(), &Default::default()).map(|_| ()).unwrap_err().to_string();
    assert!(text.contains("config.json") && text.contains("model_type is missing"), "{text}");

    let empty = tempfile::tempdir().expect("tempdir");
    let err = AnyBackbone::<B>::load(empty.path(), &Default::default()).map(|_| ()).unwrap_err();
    assert!(matches!(err, BackboneError::Io { .. }) && err.to_string().contains("config.json"), "{err}");

    // The ConvNeXt loader itself refuses a ViT folder.
    let vit = fixtures().join("dinov3_tiny/model");
    let text = load_convnext_pretrained::<B>(&vit, &Default::default()).map(|_| ()).unwrap_err().to_string();
    assert!(text.contains("config.json") && text.contains("model_type is \"dinov3_vit\""), "{text}");
}

#[test]
fn convnext_checkpoints_use_the_dinov3_vit_processor() {
    // The fixture's file, written by transformers' DINOv3ViTImageProcessor at 224×224 (the hub size).
    let fixture_proc = Dinov3ImageProcessor::from_json_file(&fixture().join("preprocessor_config.json")).expect("proc");
    assert_eq!(fixture_proc, Dinov3ImageProcessor::new(224, 224));
    // The hub's ConvNeXt checkpoints were saved by `DINOv3ViTImageProcessorFast` (transformers'
    // convert_dinov3_convnext_to_hf.py); the extra keys such a file carries are ignored.
    let hub_style = r#"{
        "crop_size": null, "data_format": "channels_first", "default_to_square": true, "device": null,
        "do_center_crop": null, "do_convert_rgb": null, "do_normalize": true, "do_rescale": true,
        "do_resize": true, "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "DINOv3ViTImageProcessorFast", "image_std": [0.229, 0.224, 0.225],
        "input_data_format": null, "resample": 2, "rescale_factor": 0.00392156862745098,
        "return_tensors": null, "size": {"height": 224, "width": 224}
    }"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("preprocessor_config.json");
    std::fs::write(&path, hub_style).expect("write");
    assert_eq!(Dinov3ImageProcessor::from_json_file(&path).expect("hub-style"), Dinov3ImageProcessor::new(224, 224));
}
