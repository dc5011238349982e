//! Prefill and decode throughput of a Qwen2-VL folder on the CPU (NdArray) backend, or on wgpu or CUDA.
//!
//! ```text
//! cargo run --release -p deper-vlm --example bench -- MODEL_DIR IMAGE [NEW_TOKENS] [REPEATS] [BATCH] [cpu|wgpu]
//! cargo run --release -p deper-vlm --features wgpu --example bench -- MODEL_DIR IMAGE 32 3 1 wgpu
//! DEPER_BENCH_BANDWIDTH_GBS=4300 cargo run --release -p deper-vlm --features cuda --example bench -- MODEL_DIR IMAGE 64 3 1 cuda
//! ```
//!
//! With `DEPER_BENCH_BANDWIDTH_GBS` (the device's measured copy bandwidth) it also prints the decode
//! bandwidth roofline: bandwidth / bytes one decode step must read (the language model's weights and
//! the KV cache), and the measured decode rate as a share of it. `examples/bench_cuda.sh` measures
//! the bandwidth with PyTorch and runs both sides on a GPU machine.
//!
//! On wgpu every step reads its logits back (the sampler runs on the host), so the times include the
//! device work.
//!
//! With BATCH > 1 it also generates BATCH copies of the prompt one after the other and then as one
//! batch (`generate_batch`), and prints both throughputs and their ratio (the batching speed-up).
//!
//! Prints prefill tokens/s (prompt incl. image tokens, vision tower included), decode tokens/s (greedy,
//! KV cache) and the process's peak resident memory. Thread count follows the backend's defaults
//! (set `RAYON_NUM_THREADS` to pin it when comparing with another implementation).

use burn::backend::NdArray;
use burn::module::Module;
use burn::tensor::backend::Backend;
use deper_vlm::caption::DEFAULT_CAPTION_PROMPT;
use deper_vlm::{GenerationConfig, MultimodalInput, Vlm};
use std::path::PathBuf;
use std::time::Instant;

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: bench MODEL_DIR IMAGE [NEW_TOKENS] [REPEATS] [BATCH] [cpu|wgpu|cuda]".into());
    }
    match args.get(5).map(String::as_str).unwrap_or("cpu") {
        "cpu" => run::<NdArray>(&args, Default::default()),
        #[cfg(feature = "wgpu")]
        "wgpu" => run::<burn::backend::Wgpu>(&args, Default::default()),
        #[cfg(feature = "cuda")]
        "cuda" => run::<burn::backend::Cuda>(&args, Default::default()),
        other => Err(format!("device `{other}`: cpu, or wgpu / cuda when built with that feature").into()),
    }
}

fn run<B: Backend>(args: &[String], device: B::Device) -> Result<(), Box<dyn std::error::Error>> {
    println!("device: {device:?}");
    let (dir, image) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let new_tokens: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let repeats: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let batch: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let t = Instant::now();
    let vlm = Vlm::<B>::load(&dir, &device)?;
    println!("load: {:.2} s", t.elapsed().as_secs_f64());

    let pixels = vlm.processor.preprocess_file(&image)?;
    let merge = vlm.config.vision.spatial_merge_size;
    let (_, ids) = vlm.tokenizer.caption_prompt(DEFAULT_CAPTION_PROMPT, pixels.grid_thw, merge)?;
    let input = MultimodalInput {
        input_ids: ids.clone(),
        pixel_values: Some(pixels.to_tensor(&device)),
        image_grid_thw: vec![pixels.grid_thw],
        persona: None,
    };
    let mut cache = vlm.model.new_cache(ids.len() + new_tokens);
    let (mut best_prefill, mut best_decode) = (f64::MAX, f64::MAX);
    for _ in 0..repeats {
        let t = Instant::now();
        let (logits, delta) = vlm.model.prefill(&input, &mut cache)?;
        let row = logits.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        best_prefill = best_prefill.min(t.elapsed().as_secs_f64());
        let mut token = deper_vlm::sampling::argmax(&row);
        let t = Instant::now();
        for _ in 0..new_tokens {
            let logits = vlm.model.decode_step(token, delta, &mut cache)?;
            let row = logits.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
            token = deper_vlm::sampling::argmax(&row);
        }
        best_decode = best_decode.min(t.elapsed().as_secs_f64());
    }
    // The public generate path once, as a check that it runs.
    let config = GenerationConfig { max_new_tokens: new_tokens, ..Default::default() };
    let out = vlm.model.generate(&input, &config, &mut |_| true)?;
    println!("prompt tokens: {} (image grid {:?})", ids.len(), pixels.grid_thw);
    println!(
        "prefill: {:.1} tokens/s ({:.1} ms, best of {repeats})",
        ids.len() as f64 / best_prefill,
        best_prefill * 1e3
    );
    println!(
        "decode: {:.1} tokens/s ({new_tokens} tokens, {:.1} ms)",
        new_tokens as f64 / best_decode,
        best_decode * 1e3
    );
    println!("generated: {} ids", out.generated_ids.len());
    // What one decode step must read from memory at least: every language-model weight once (the
    // embedding table only when it is also the head) and the KV cache up to the middle position.
    let text = &vlm.model.model;
    let embed = text.embed_tokens.num_params();
    let weights = text.weight_count() - if text.lm_head.is_some() { embed } else { 0 };
    let tc = &vlm.config.text;
    let kv_per_position = 2 * tc.num_hidden_layers * tc.num_key_value_heads * tc.head_dim();
    let mid = ids.len() + new_tokens / 2;
    let bytes = (weights + kv_per_position * mid) * std::mem::size_of::<B::FloatElem>();
    println!("decode bytes/token: {:.1} MB ({weights} weights, KV at position {mid})", bytes as f64 / 1e6);
    // DEPER_BENCH_BANDWIDTH_GBS: the device's measured memory bandwidth (GB/s), for the roofline.
    if let Some(gbs) = std::env::var("DEPER_BENCH_BANDWIDTH_GBS").ok().and_then(|v| v.parse::<f64>().ok()) {
        let roofline = gbs * 1e9 / bytes as f64;
        let measured = new_tokens as f64 / best_decode;
        println!(
            "decode roofline: {roofline:.1} tokens/s at {gbs:.0} GB/s; measured {measured:.1} tokens/s = {:.1} % of it",
            100.0 * measured / roofline
        );
    }
    if batch > 1 {
        // Stop tokens off so every row generates exactly `new_tokens`.
        let config = GenerationConfig { max_new_tokens: new_tokens, stop_tokens: Vec::new(), ..Default::default() };
        let inputs = vec![input.clone(); batch];
        let (mut best_seq, mut best_batch) = (f64::MAX, f64::MAX);
        for _ in 0..repeats {
            let t = Instant::now();
            for one in &inputs {
                vlm.model.generate(one, &config, &mut |_| true)?;
            }
            best_seq = best_seq.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let outs = vlm.model.generate_batch(&inputs, &config)?;
            best_batch = best_batch.min(t.elapsed().as_secs_f64());
            assert!(outs.iter().all(|o| o.generated_ids.len() == new_tokens));
        }
        let tokens = (batch * new_tokens) as f64;
        println!(
            "{batch} requests × {new_tokens} tokens: one at a time {:.1} tokens/s, batched {:.1} tokens/s, ratio {:.2}×",
            tokens / best_seq,
            tokens / best_batch,
            best_seq / best_batch
        );
    }
    if let Some(mib) = peak_rss_mib() {
        println!("peak RSS: {mib:.1} MiB");
    }
    Ok(())
}
