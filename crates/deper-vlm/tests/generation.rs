//! KV-cache generation against the transformers greedy ids, and cached decoding against full recomputation.
#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

mod common;
use common::*;

use burn::tensor::{Tensor, TensorData};
use deper_vlm::StopReason;
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
}

#[test]
fn batched_generation_equals_one_prompt_at_a_time() {
    let r = reference();
    let model = load_pretrained::<B>(&model_dir(), &Default::default()).unwrap();
    let a = input(&r, "a", false);
    // A text-only prompt, shorter than the others: the prefix of `a` before its first image token.
    let first_image = a.input_ids.iter().position(|&t| t as usize == model.image_token_id).unwrap();
    let text_only = MultimodalInput {
        input_ids: a.input_ids[..first_image].to_vec(),
        pixel_values: None,
        image_grid_thw: vec![],
        persona: None,
    };
    let inputs = vec![a.clone(), input(&r, "b", true), text_only, input(&r, "b", false)];
    let lengths: Vec<usize> = inputs.iter().map(|i| i.input_ids.len()).collect();
    assert!(lengths.iter().min() < lengths.iter().max(), "rows must differ in length: {lengths:?}");
    let greedy = |n| GenerationConfig { max_new_tokens: n, sampling: SamplingConfig::greedy(), stop_tokens: vec![] };
    let reference_a = ids(&r, "a.generated_ids_plain");
    let configs = vec![
        greedy(12),
        greedy(12),
        // Sampling with a seed, and a row that ends early at a stop token.
        GenerationConfig { sampling: SamplingConfig::sample(1.5, 7), ..greedy(9) },
        GenerationConfig { stop_tokens: vec![ids(&r, "b.generated_ids_plain")[4]], ..greedy(12) },
    ];
    let mut streamed: Vec<Vec<u32>> = vec![Vec::new(); inputs.len()];
    let batch = model
        .generate_batch_with(&inputs, &configs, &mut |row, id| {
            streamed[row].push(id);
            true
        })
        .unwrap();
    for (row, (input, config)) in inputs.iter().zip(&configs).enumerate() {
        let alone = model.generate(input, config, &mut |_| true).unwrap();
        assert_eq!(batch[row], alone, "row {row}");
        assert_eq!(streamed[row], alone.generated_ids, "row {row} streamed");
    }
    assert_eq!(batch[0].generated_ids, reference_a);
    assert_eq!(batch[1].generated_ids, ids(&r, "b.generated_ids_persona"));
    let plain_b = ids(&r, "b.generated_ids_plain");
    let first_stop = plain_b.iter().position(|&t| t == plain_b[4]).unwrap();
    assert_eq!(batch[3].generated_ids, plain_b[..=first_stop]);
    assert_eq!(batch[3].stop, StopReason::StopToken);

    // Stopping one row from the callback leaves the others untouched.
    let batch = model.generate_batch_with(&inputs[..2], &configs[..2], &mut |row, _| row != 0).unwrap();
    assert_eq!((batch[0].generated_ids.len(), batch[0].stop), (1, StopReason::Callback));
    assert_eq!(batch[1].generated_ids, ids(&r, "b.generated_ids_persona"));
    // The one-config form, and mismatched lengths are an error.
    let same = model.generate_batch(&[a.clone(), a.clone()], &greedy(12)).unwrap();
    assert!(same.iter().all(|g| g.generated_ids == reference_a));
    assert!(model.generate_batch_with(&inputs, &configs[..1], &mut |_, _| true).is_err());
    assert!(model.generate_batch(&[], &greedy(4)).unwrap().is_empty());
}
