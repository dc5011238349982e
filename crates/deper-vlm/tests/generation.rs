//! KV-cache generation against the transformers greedy ids, and cached decoding against full recomputation.
#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

mod common;
use common::*;

use burn::tensor::{Tensor, TensorData};
use deper_vlm::model::StopReason;
use deper_vlm::{load_pretrained, GenerationConfig, MultimodalInput, Persona, SamplingConfig};

fn input(r: &deper_weights::Checkpoint, prompt: &str, persona: bool) -> MultimodalInput<B> {
    let persona = persona.then(|| {
        let (v, _) = r.f32_any("persona_vector").unwrap();
        Persona {
            embeddings: Tensor::from_data(TensorData::new(v, [1, 64]), &Default::default()),
            token_ids: vec![399],
        }
    });
    MultimodalInput {
        input_ids: ids(r, &format!("{prompt}.input_ids")),
        pixel_values: Some(tensor2(r, "pixel_values")),
        image_grid_thw: grid(r),
        persona,
    }
}

#[test]
fn greedy_ids_match_reference_with_and_without_persona() {
    let r = reference();
    let model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    let config = GenerationConfig { max_new_tokens: 12, sampling: SamplingConfig::greedy(), stop_tokens: vec![] };
    for (prompt, persona, key) in [
        ("a", false, "a.generated_ids_plain"),
        ("b", false, "b.generated_ids_plain"),
        ("b", true, "b.generated_ids_persona"),
    ] {
        let mut streamed = Vec::new();
        let out = model
            .generate(&input(&r, prompt, persona), &config, &mut |t| {
                streamed.push(t);
                true
            })
            .unwrap();
        assert_eq!(out.generated_ids, ids(&r, key), "{key}");
        assert_eq!(streamed, out.generated_ids);
        assert_eq!(out.stop, StopReason::MaxNewTokens);
    }
}

#[test]
fn cached_decoding_equals_full_recomputation() {
    let r = reference();
    let model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    for persona in [false, true] {
        let prompt = input(&r, "b", persona);
        let generated = ids(&r, if persona { "b.generated_ids_persona" } else { "b.generated_ids_plain" });
        let mut cache = model.new_cache(prompt.input_ids.len() + generated.len());
        let (mut logits, delta) = model.prefill(&prompt, &mut cache).unwrap();
        let mut grown = prompt.clone();
        let mut worst = 0.0f32;
        for &token in &generated {
            // Full forward over the grown sequence; its last row is what the cache step must give.
            let full = model.forward_input(&grown).unwrap();
            let l = grown.input_ids.len();
            let last = values(full.narrow(1, l - 1, 1));
            worst = worst.max(max_abs(&values(logits.clone()), &last));
            grown.input_ids.push(token);
            logits = model.decode_step(token, delta, &mut cache).unwrap();
        }
        println!("persona {persona}: cached vs full max abs err {worst:.3e}");
        assert!(worst <= 1e-4, "cached vs full: {worst}");
    }
}

#[test]
fn cache_reuse_stop_tokens_callback_and_sampling() {
    let r = reference();
    let model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    let prompt = input(&r, "a", false);
    let reference_ids = ids(&r, "a.generated_ids_plain");
    let mut cache = model.new_cache(100);
    let config = GenerationConfig { max_new_tokens: 12, ..Default::default() };
    // The same cache serves two requests (reset in between).
    for _ in 0..2 {
        let out = model.generate_with_cache(&prompt, &config, &mut cache, &mut |_| true).unwrap();
        assert_eq!(out.generated_ids, reference_ids);
    }
    // Stop token: the third generated id ends generation (and is kept).
    let stop = GenerationConfig { stop_tokens: vec![reference_ids[2]], ..config.clone() };
    let out = model.generate(&prompt, &stop, &mut |_| true).unwrap();
    assert_eq!(out.generated_ids, reference_ids[..3]);
    assert_eq!(out.stop, StopReason::StopToken);
    // The callback can stop early.
    let out = model.generate(&prompt, &config, &mut |_| false).unwrap();
    assert_eq!((out.generated_ids.len(), out.stop), (1, StopReason::Callback));
    // Seeded sampling is reproducible and differs from greedy at a high temperature.
    let sample = GenerationConfig {
        sampling: SamplingConfig { top_k: Some(50), top_p: Some(0.95), ..SamplingConfig::sample(5.0, 42) },
        ..config.clone()
    };
    let a = model.generate(&prompt, &sample, &mut |_| true).unwrap();
    let b = model.generate(&prompt, &sample, &mut |_| true).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.generated_ids, reference_ids);
    // Batched generation (sequential over prompts, one cache).
    let batch = model.generate_batch(&[prompt.clone(), input(&r, "b", true)], &config).unwrap();
    assert_eq!(batch[0].generated_ids, reference_ids);
    assert_eq!(batch[1].generated_ids, ids(&r, "b.generated_ids_persona"));
}
