//! Tokenizer, chat template and image preprocessing against the transformers processor.
#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

mod common;
use common::*;

use deper_vlm::{smart_resize, ChatMessage, ImageProcessor, Qwen2VlTokenizer};

#[test]
fn templated_prompts_tokenize_like_the_processor() {
    let r = reference();
    let j = reference_json();
    let tok = Qwen2VlTokenizer::from_dir(&model_dir()).unwrap();
    for (p, text) in [("a", "Describe the image."), ("b", "Describe the image in the style of <|persona|>.")] {
        let rendered = tok.apply_chat_template(&[ChatMessage::user_with_image(text)], true).unwrap();
        assert_eq!(rendered, j[p]["prompt"].as_str().unwrap(), "prompt {p}");
        let (expanded, ids_) = tok.caption_prompt(text, [1, 6, 4], 2).unwrap();
        assert_eq!(expanded, j[p]["prompt_expanded"].as_str().unwrap(), "prompt {p}");
        assert_eq!(ids_, ids(&r, &format!("{p}.input_ids")), "prompt {p}");
    }
    assert_eq!(tok.token_id("<|persona|>"), Some(399));
    // Without the generation prompt the assistant header is absent.
    let plain = tok.apply_chat_template(&[ChatMessage::text("user", "hi")], false).unwrap();
    assert!(plain.ends_with("hi<|im_end|>\n"), "{plain:?}");
    // Wrong number of images is an error.
    assert!(tok.expand_image_pads("<|image_pad|>", &[], 2).is_err());
}

#[test]
fn generated_text_decodes_like_the_reference() {
    let r = reference();
    let j = reference_json();
    let tok = Qwen2VlTokenizer::from_dir(&model_dir()).unwrap();
    let text = tok.decode(&ids(&r, "a.generated_ids_plain"), false).unwrap();
    assert_eq!(text, j["a"]["generated_text_plain"].as_str().unwrap());
}

#[test]
fn pixel_values_from_image_file_match() {
    let r = reference();
    let proc = ImageProcessor::from_dir(&model_dir()).unwrap();
    assert_eq!((proc.min_pixels, proc.max_pixels), (3136, 12544));
    let px = proc.preprocess_file(&fixture().join("image.png")).unwrap();
    assert_eq!(px.grid_thw, [1, 6, 4]);
    assert_eq!((px.rows, px.cols), (24, 1176));
    check("pixel_values", &px.values, &r.f32_any("pixel_values").unwrap().0, 1e-5);
}

#[test]
fn smart_resize_cases_match() {
    let j = reference_json();
    let cases = j["smart_resize_cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let (h, w) = (case["height"].as_u64().unwrap() as usize, case["width"].as_u64().unwrap() as usize);
        let want = |k: &str| {
            let a = case[k].as_array().unwrap();
            (a[0].as_u64().unwrap() as usize, a[1].as_u64().unwrap() as usize)
        };
        assert_eq!(smart_resize(h, w, 28, 3136, 12544).unwrap(), want("fixture"), "{h}×{w} fixture");
        assert_eq!(smart_resize(h, w, 28, 3136, 12_845_056).unwrap(), want("qwen2_vl_default"), "{h}×{w} default");
    }
    assert!(smart_resize(10, 3000, 28, 3136, 12544).is_err());
}

#[test]
fn resized_image_has_the_smart_resize_grid() {
    // 100×60 RGB gradient → smart_resize (fixture limits) → 112×56 → grid (1, 8, 4).
    let img = image::RgbImage::from_fn(60, 100, |x, y| image::Rgb([(x * 4) as u8, (y * 2) as u8, 128]));
    let proc = ImageProcessor::from_dir(&model_dir()).unwrap();
    let (h, w) = smart_resize(100, 60, 28, proc.min_pixels, proc.max_pixels).unwrap();
    let px = proc.preprocess(&img).unwrap();
    assert_eq!(px.grid_thw, [1, h / 14, w / 14]);
    assert_eq!(px.rows * px.cols, px.values.len());
    assert!(px.values.iter().all(|v| v.is_finite()));
}

#[test]
fn jpeg_files_are_preprocessed_like_their_decoded_pixels() {
    // COCO and Flickr30k pictures are JPEG: the processor must open them (the decoder's pixels, then
    // the same path as PNG).
    let dir = tempfile::tempdir().unwrap();
    let rgb = image::open(fixture().join("image.png")).unwrap().to_rgb8();
    let jpeg_path = dir.path().join("image.jpg");
    rgb.save_with_format(&jpeg_path, image::ImageFormat::Jpeg).unwrap();
    let decoded = image::open(&jpeg_path).unwrap().to_rgb8();
    let png_path = dir.path().join("decoded.png");
    decoded.save_with_format(&png_path, image::ImageFormat::Png).unwrap();
    let proc = ImageProcessor::from_dir(&model_dir()).unwrap();
    let from_jpeg = proc.preprocess_file(&jpeg_path).unwrap();
    let from_png = proc.preprocess_file(&png_path).unwrap();
    assert_eq!(from_jpeg.grid_thw, [1, 6, 4]);
    assert_eq!(from_jpeg.values, from_png.values);
}

#[test]
fn undecodable_image_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.png");
    std::fs::write(&path, b"not a png").unwrap();
    let err = ImageProcessor::default().preprocess_file(&path).unwrap_err().to_string();
    assert!(err.contains("broken.png"), "{err}");
}

#[test]
fn bicubic_resize_matches_torchvision_exactly() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resize");
    let r = deper_weights::Checkpoint::open(&dir.join("reference.safetensors")).unwrap();
    let proc = ImageProcessor::from_dir(&model_dir()).unwrap();
    for name in ["up", "down"] {
        let img = image::open(dir.join(format!("{name}.png"))).unwrap().to_rgb8();
        let (want, shape) = r.i64_any(&format!("{name}.resized")).unwrap();
        let (h, w) = (shape[0], shape[1]);
        let got = deper_vlm::qwen2_vl::preprocess::resize_bicubic_aa(
            img.as_raw(),
            img.height() as usize,
            img.width() as usize,
            h,
            w,
        );
        let diffs: Vec<i64> = got.iter().zip(&want).map(|(&g, &w)| (i64::from(g) - w).abs()).collect();
        let worst = diffs.iter().max().copied().unwrap_or(0);
        let off = diffs.iter().filter(|&&d| d > 0).count();
        println!("{name}: resized uint8 max diff {worst} grey levels, {off} of {} values differ", diffs.len());
        assert_eq!(worst, 0, "{name}");
        let px = proc.preprocess(&img).unwrap();
        let (g, _) = r.i64_any(&format!("{name}.image_grid_thw")).unwrap();
        assert_eq!(px.grid_thw.map(|v| v as i64).to_vec(), g);
        check(
            &format!("{name}.pixel_values"),
            &px.values,
            &r.f32_any(&format!("{name}.pixel_values")).unwrap().0,
            1e-5,
        );
    }
}
