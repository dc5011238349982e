//! The real-image path through the `deper` binary: a Localized-Narratives-format JSONL with JPEG
//! and PNG pictures of several sizes and aspect ratios in a folder outside the dataset → `import
//! ln --images` → `dataset split` → `features extract --backbone dinov3` (the tiny ViT and
//! ConvNeXt fixtures) → `train stage1 --text-embeddings` (the tiny Qwen2-VL fixture) →
//! `eval-fewshot`; and the bad inputs of that path, each named in the error.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;

use common::{deper, failure, ok_json, s};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

const VIT: &str = "dinov3_tiny/model";
const CONVNEXT: &str = "dinov3_convnext_tiny/model";
const QWEN: &str = "qwen2_vl_tiny/model";

/// Picture `i`: sizes and aspect ratios vary (landscape, portrait, square, panorama), even
/// indices JPEG, odd PNG.
fn picture(dir: &Path, i: usize) -> PathBuf {
    let (w, h) = [(160, 120), (90, 150), (128, 128), (200, 60)][i % 4];
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let on = (x / 16 + y / 16 + i as u32) % 2 == 0;
        image::Rgb([if on { 200 } else { 30 }, ((x * 255) / w) as u8, ((i * 40) % 255) as u8])
    });
    let path = dir.join(if i % 2 == 0 { format!("{i}.jpg") } else { format!("{i}.png") });
    img.save(&path).unwrap();
    path
}

const WORDS: [&str; 8] = ["red", "square", "tree", "sky", "person", "dog", "window", "car"];

/// One narrative of Localized Narratives' schema: subject `a` on image `i`.
fn narrative(a: usize, i: usize) -> String {
    let caption = format!(
        "In this image I can see a {} and a {}, annotator {a} looks left.",
        WORDS[(a + i) % 8],
        WORDS[(a * 3 + i) % 8]
    );
    let trace: Vec<Value> = (0..12)
        .map(|k| {
            let t = k as f64 * 0.1;
            serde_json::json!({"x": 0.1 + 0.06 * k as f64 * (1 + a % 2) as f64 % 0.8, "y": 0.2 + 0.05 * ((k + a) % 5) as f64, "t": t})
        })
        .collect();
    serde_json::json!({
        "dataset_id": "mscoco", "image_id": i.to_string(), "annotator_id": a, "caption": caption,
        "timed_caption": [{"utterance": caption, "start_time": 0.0, "end_time": 1.2}],
        "traces": [trace], "voice_recording": ""
    })
    .to_string()
}

/// Subjects × images narratives, pictures in `dir/pictures` (outside the dataset).
fn ln_source(dir: &Path, subjects: usize, images: usize) -> (PathBuf, PathBuf) {
    let pictures = dir.join("pictures");
    std::fs::create_dir_all(&pictures).unwrap();
    for i in 0..images {
        picture(&pictures, i);
    }
    let jsonl = dir.join("narratives.jsonl");
    let lines: Vec<String> = (0..subjects).flat_map(|a| (0..images).map(move |i| narrative(a, i))).collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    (jsonl, pictures)
}

fn import_and_split(dir: &Path) -> PathBuf {
    let (jsonl, pictures) = ln_source(dir, 4, 12);
    let data = dir.join("ds");
    let report = ok_json(&["import", "ln", "--jsonl", s(&jsonl), "--out", s(&data), "--images", s(&pictures)]);
    assert_eq!(report["triplets"], 48, "{report}");
    ok_json(&["dataset", "split", s(&data), "--unseen", "3", "--shots", "3", "--seed", "1"]);
    data
}

fn extract(data: &Path, model: &str, name: &str, extra: &[&str]) -> Value {
    let model = fixture(model);
    let base = ["features", "extract", "--data", s(data), "--backbone", "dinov3", "--model", s(&model)];
    ok_json(&[&base[..], &["--name", name, "--image-size", "64", "--batch-size", "3"], extra].concat())
}

#[test]
fn localized_narratives_with_real_pictures_train_stage1_on_dinov3_and_the_vlm_text_side() {
    let dir = tempfile::tempdir().unwrap();
    let data = import_and_split(dir.path());
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(data.join("dataset.json")).unwrap()).unwrap();
    let pictures = std::fs::canonicalize(dir.path().join("pictures")).unwrap();
    assert_eq!(manifest["image_dir"], s(&pictures), "pictures stay in their own folder");
    assert_eq!(std::fs::read_dir(data.join("images")).map(|d| d.count()).unwrap_or(0), 0);

    let vit = extract(&data, VIT, "vit", &[]);
    assert_eq!((vit["grid_h"].as_u64(), vit["grid_w"].as_u64(), vit["images"].as_u64()), (Some(4), Some(4), Some(12)));
    assert_eq!(vit["source"]["extractor"], "dinov3_vit");
    let convnext = extract(&data, CONVNEXT, "convnext", &["--dtype", "f16"]);
    assert_eq!((convnext["grid_h"].as_u64(), convnext["images"].as_u64()), (Some(2), Some(12)), "{convnext}");
    assert_eq!(convnext["source"]["extractor"], "dinov3_convnext");

    // A second extraction has nothing left to do and leaves the shards as they were.
    let shard = data.join("features/vit/shard-00000.safetensors");
    let before = std::fs::read(&shard).unwrap();
    assert_eq!(extract(&data, VIT, "vit", &[]), vit);
    assert_eq!(std::fs::read(&shard).unwrap(), before);

    let qwen = fixture(QWEN);
    for name in ["convnext", "vit"] {
        let run = dir.path().join(format!("run-{name}"));
        let train = [
            "train",
            "stage1",
            "--data",
            s(&data),
            "--out",
            s(&run),
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--backbone",
            name,
            "--text-embeddings",
            s(&qwen),
        ];
        let last = ok_json(&train);
        assert_eq!(last["epoch"], 1, "{last}");
        let run_json: Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        assert!(run_json.to_string().contains(QWEN), "run.json records the VLM text side: {run_json}");
        let report = ok_json(&["eval-fewshot", "--run", s(&run), "--data", s(&data), "--shots", "3", "--json"]);
        let acc = report["seen_acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{report}");
    }

    // The ViT run evaluated on a cache of its name that ConvNeXt made: refused, naming the index.
    let features = data.join("features");
    std::fs::rename(features.join("vit"), features.join("vit-kept")).unwrap();
    std::fs::rename(features.join("convnext"), features.join("vit")).unwrap();
    let run = dir.path().join("run-vit");
    let err = failure(&["eval-fewshot", "--run", s(&run), "--data", s(&data), "--shots", "3", "--json"]);
    assert!(
        err.contains("features/vit/index.json") && err.contains("dinov3_convnext") && err.contains("dinov3_vit"),
        "{err}"
    );
}

#[test]
fn bad_backbone_folders_pictures_and_caches_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = import_and_split(dir.path());
    let pictures = dir.path().join("pictures");

    // A checkpoint of another family.
    let qwen = fixture(QWEN);
    let err = failure(&["features", "extract", "--data", s(&data), "--backbone", "dinov3", "--model", s(&qwen)]);
    assert!(err.contains("config.json") && err.contains("qwen2_vl"), "{err}");

    // A truncated JPEG stops the extraction, names the file, and keeps the finished shards;
    // the cache is not usable until it is complete.
    let cut = pictures.join("4.jpg");
    let whole = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let vit = fixture(VIT);
    let args = [
        "features",
        "extract",
        "--data",
        s(&data),
        "--backbone",
        "dinov3",
        "--model",
        s(&vit),
        "--image-size",
        "64",
        "--batch-size",
        "1",
        "--images-per-shard",
        "2",
        "--name",
        "vit",
    ];
    let err = failure(&args);
    assert!(err.contains("4.jpg") && err.contains("truncated"), "{err}");
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("features/vit/index.json")).unwrap()).unwrap();
    assert_eq!((index["complete"].as_bool(), index["images"].as_u64()), (Some(false), Some(4)), "{index}");
    let err = failure(&["train", "stage1", "--data", s(&data), "--out", s(&dir.path().join("r")), "--backbone", "vit"]);
    assert!(err.contains("interrupted"), "{err}");

    // A missing picture, then the fixed folder: the extraction resumes after the finished shards.
    std::fs::remove_file(&cut).unwrap();
    let err = failure(&args);
    assert!(err.contains("4.jpg") && err.contains("not found"), "{err}");
    let first_shard = data.join("features/vit/shard-00000.safetensors");
    let kept = std::fs::read(&first_shard).unwrap();
    std::fs::write(&cut, &whole).unwrap();
    let out = deper(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&first_shard).unwrap(), kept);
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(meta["images"], 12);

    // The same cache name asked of another backbone.
    let convnext = fixture(CONVNEXT);
    let err = failure(&[
        "features",
        "extract",
        "--data",
        s(&data),
        "--backbone",
        "dinov3",
        "--model",
        s(&convnext),
        "--image-size",
        "64",
        "--name",
        "vit",
    ]);
    assert!(err.contains("features/vit/index.json") && err.contains("dinov3_vit"), "{err}");
}

/// `deper backbone forward` against transformers' `last_hidden_state` on the committed fixtures,
/// square and non-square inputs.
#[test]
fn backbone_forward_matches_transformers_on_both_families() {
    let dir = tempfile::tempdir().unwrap();
    // (fixture, reference file, key prefix): square and non-square inputs of each family.
    let cases = [
        ("dinov3_tiny", "reference.safetensors", "random."),
        ("dinov3_tiny", "reference_nonsquare.safetensors", ""),
        ("dinov3_convnext_tiny", "reference.safetensors", "square."),
        ("dinov3_convnext_tiny", "reference.safetensors", "nonsquare."),
    ];
    for (family, file, prefix) in cases {
        let reference = fixture(family).join(file);
        let (pixels, shape) = pixel_values(&reference, &format!("{prefix}pixel_codes_int8"));
        let input = dir.path().join("in.safetensors");
        deper_weights::write_safetensors(&input, &[("pixel_values", deper_weights::TensorData::F32(&pixels, &shape))])
            .unwrap();
        let output = dir.path().join("out.safetensors");
        let model = fixture(family).join("model");
        let out = deper(&["backbone", "forward", "--model", s(&model), "--inputs", s(&input), "--out", s(&output)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (got, got_shape) = deper_weights::Checkpoint::open(&output).unwrap().f32_any("last_hidden_state").unwrap();
        let (want, want_shape) = deper_weights::Checkpoint::open(&reference)
            .unwrap()
            .f32_any(&format!("{prefix}last_hidden_state"))
            .unwrap();
        assert_eq!(got_shape, want_shape, "{family} {prefix}");
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-4, "{family} {prefix}: max abs error {err}");
    }
    // Not an image batch; then sides the patch size does not divide.
    let model = fixture(VIT);
    let refused = |name: &str, pixels: &[f32], shape: &[usize]| {
        let input = dir.path().join(name);
        deper_weights::write_safetensors(&input, &[("pixel_values", deper_weights::TensorData::F32(pixels, shape))])
            .unwrap();
        let out = dir.path().join("o");
        failure(&["backbone", "forward", "--model", s(&model), "--inputs", s(&input), "--out", s(&out)])
    };
    let err = refused("flat.safetensors", &[0.0; 6], &[2, 3]);
    assert!(err.contains("flat.safetensors") && err.contains("[N, 3, H, W]"), "{err}");
    let err = refused("odd.safetensors", &[0.0; 3 * 40 * 64], &[1, 3, 40, 64]);
    assert!(err.contains("40×64") && err.contains("multiples of 16"), "{err}");
}

/// The fixture's exact pixel input: int8 codes `key` / 64 as f32, with its shape.
fn pixel_values(path: &Path, key: &str) -> (Vec<f32>, Vec<usize>) {
    let (codes, shape) = deper_weights::Checkpoint::open(path).unwrap().i64_any(key).unwrap();
    (codes.iter().map(|&c| c as f32 / 64.0).collect(), shape)
}
