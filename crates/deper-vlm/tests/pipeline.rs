//! End to end on the tiny model: image file → caption ids, persona file, `deper vlm forward` files.
#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

mod common;
use common::*;

use deper_vlm::{CaptionJob, GenerationConfig, PersonaVectors, SamplingConfig, Vlm};
use deper_weights::{write_safetensors, Checkpoint, TensorData};

fn greedy12() -> GenerationConfig {
    // No stop token: the reference generation ignores EOS.
    GenerationConfig { max_new_tokens: 12, sampling: SamplingConfig::greedy(), stop_tokens: vec![] }
}

#[test]
fn caption_from_image_file_matches_reference_greedy_ids() {
    let r = reference();
    let j = reference_json();
    let vlm = Vlm::<B>::load(&model_dir(), &Default::default()).unwrap();
    assert_eq!(vlm.eos_token_ids, vec![394]);
    let mut streamed = Vec::new();
    let caption = vlm
        .caption(&fixture().join("image.png"), "Describe the image.", None, &greedy12(), &mut |t| {
            streamed.push(t);
            true
        })
        .unwrap();
    assert_eq!(caption.prompt_ids, ids(&r, "a.input_ids"));
    assert_eq!(caption.generated_ids, ids(&r, "a.generated_ids_plain"));
    assert_eq!(streamed, caption.generated_ids);
    assert_eq!(caption.text, j["a"]["generated_text_plain"].as_str().unwrap());
    let json = serde_json::to_value(&caption).unwrap();
    assert!(json["prompt_ids"].is_array() && json["text"].is_string());

    // With the persona vector from a file.
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = r.f32_any("persona_vector").unwrap();
    let file = dir.path().join("persona.safetensors");
    write_safetensors(&file, &[("persona_embeddings", TensorData::F32(&v, &[1, 64]))]).unwrap();
    let persona = PersonaVectors::from_file(&file).unwrap();
    let caption = vlm
        .caption(
            &fixture().join("image.png"),
            "Describe the image in the style of <|persona|>.",
            Some(&persona),
            &greedy12(),
            &mut |_| true,
        )
        .unwrap();
    assert_eq!(caption.prompt_ids, ids(&r, "b.input_ids"));
    assert_eq!(caption.generated_ids, ids(&r, "b.generated_ids_persona"));

    // Persona vectors but no persona token in the prompt: a clear error.
    let err =
        vlm.caption(&fixture().join("image.png"), "Describe the image.", Some(&persona), &greedy12(), &mut |_| true);
    assert!(err.unwrap_err().to_string().contains("persona token 399"));
}

#[test]
fn caption_batch_gives_each_job_its_own_caption_or_error() {
    let r = reference();
    let vlm = Vlm::<B>::load(&model_dir(), &Default::default()).unwrap();
    let (v, _) = r.f32_any("persona_vector").unwrap();
    let persona = PersonaVectors { values: v, rows: 1, token_ids: None };
    let image = fixture().join("image.png");
    let missing = fixture().join("no-such-image.png");
    let persona_prompt = "Describe the image in the style of <|persona|>.";
    let job = |image, prompt, persona, n| CaptionJob {
        image,
        prompt,
        persona,
        generation: GenerationConfig { max_new_tokens: n, ..greedy12() },
    };
    let jobs = vec![
        job(image.as_path(), "Describe the image.", None, 12),
        job(missing.as_path(), "Describe the image.", None, 12),
        job(image.as_path(), persona_prompt, Some(&persona), 12),
        // Persona vectors without a persona token: this job fails alone.
        job(image.as_path(), "Describe the image.", Some(&persona), 12),
        job(image.as_path(), "Describe the image.", None, 5),
    ];
    let mut streamed: Vec<Vec<u32>> = vec![Vec::new(); jobs.len()];
    let out = vlm.caption_batch(&jobs, &mut |k, id| {
        streamed[k].push(id);
        true
    });
    assert_eq!(out.len(), jobs.len());
    let ok: Vec<&deper_vlm::Caption> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 3);
    assert_eq!(out[0].as_ref().unwrap().generated_ids, ids(&r, "a.generated_ids_plain"));
    assert!(out[1].as_ref().unwrap_err().to_string().contains("no-such-image"), "{:?}", out[1]);
    assert_eq!(out[2].as_ref().unwrap().generated_ids, ids(&r, "b.generated_ids_persona"));
    assert!(out[3].as_ref().unwrap_err().to_string().contains("persona token 399"), "{:?}", out[3]);
    assert_eq!(out[4].as_ref().unwrap().generated_ids, ids(&r, "a.generated_ids_plain")[..5]);
    for (k, result) in out.iter().enumerate() {
        let expected = result.as_ref().map(|c| c.generated_ids.clone()).unwrap_or_default();
        assert_eq!(streamed[k], expected, "job {k} streamed");
        if let Ok(caption) = result {
            let alone = vlm.caption(jobs[k].image, jobs[k].prompt, jobs[k].persona, &jobs[k].generation, &mut |_| true);
            assert_eq!(caption.text, alone.unwrap().text);
        }
    }
}

#[test]
fn default_stop_token_ends_generation() {
    let vlm = Vlm::<B>::load(&model_dir(), &Default::default()).unwrap();
    let config = vlm.generation_config(40);
    assert_eq!(config.stop_tokens, vec![394]);
    let caption =
        vlm.caption(&fixture().join("image.png"), "Describe the image.", None, &config, &mut |_| true).unwrap();
    let n = caption.generated_ids.len();
    assert!(n == 40 || caption.generated_ids[n - 1] == 394);
    assert!(caption.generated_ids[..n - 1].iter().all(|&t| t != 394));
}

#[test]
fn forward_file_writes_reference_logits() {
    let r = reference();
    let vlm = Vlm::<B>::load(&model_dir(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (input_ids, ishape) = r.i64_any("b.input_ids").unwrap();
    let (pixels, pshape) = r.f32_any("pixel_values").unwrap();
    let (grid, gshape) = r.i64_any("image_grid_thw").unwrap();
    let (persona, _) = r.f32_any("persona_vector").unwrap();
    let inputs = dir.path().join("in.safetensors");
    write_safetensors(
        &inputs,
        &[
            ("input_ids", TensorData::I64(&input_ids, &ishape)),
            ("pixel_values", TensorData::F32(&pixels, &pshape)),
            ("image_grid_thw", TensorData::I64(&grid, &gshape)),
            ("persona_embeddings", TensorData::F32(&persona, &[1, 64])),
            ("persona_token_ids", TensorData::I64(&[399], &[1])),
        ],
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    vlm.forward_file(&inputs, &out).unwrap();
    let (logits, shape) = Checkpoint::open(&out).unwrap().f32_any("logits").unwrap();
    assert_eq!(shape, vec![1, 72, 400]);
    check("b.logits_persona (forward file)", &logits, &r.f32_any("b.logits_persona").unwrap().0, 1e-4);
}
