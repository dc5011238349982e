//! CPU speed of the DINOv3 backbones (`AnyBackbone` on burn's NdArray backend): images/s at given batch
//! sizes, and the peak resident memory of the process. Not a test; `backbone_bench.sh` runs it beside
//! transformers (`backbone_bench_torch.py`) on the same checkpoints and thread count.
//!
//!     cargo run --release -p deper-model --example backbone_bench -- MODEL_DIR [IMAGES] [SIZE] [BATCHES]
//!
//! MODEL_DIR is a Hugging Face folder (`dinov3_vit` or `dinov3_convnext`); IMAGES (default 16) are timed
//! per batch size, after one warm-up batch; SIZE (default 448) is the square input side; BATCHES is a
//! comma list (default `1,8`). The input is seeded noise (the speed does not depend on it). Prints one
//! `RESULT` line per batch size and a final `PEAK` line with VmHWM.
//!
//! burn-ndarray runs on one core in this workspace; build with `--features ndarray-threads` for its
//! rayon and threaded matmul (then `RAYON_NUM_THREADS` and `MATMUL_NUM_THREADS` set the threads).

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use deper_model::backbone::AnyBackbone;

type B = burn::backend::NdArray;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: backbone_bench MODEL_DIR [IMAGES] [SIZE] [BATCHES]");
        std::process::exit(2);
    };
    let images: usize = args.get(2).map_or(16, |v| v.parse().expect("IMAGES"));
    let size: usize = args.get(3).map_or(448, |v| v.parse().expect("SIZE"));
    let batches: Vec<usize> =
        args.get(4).map_or("1,8", String::as_str).split(',').map(|b| b.trim().parse().expect("BATCHES")).collect();
    let device = Default::default();
    B::seed(&device, 7);

    let t = Instant::now();
    let backbone = AnyBackbone::<B>::load(&dir, &device).expect("load the backbone");
    let load_s = t.elapsed().as_secs_f64();
    let (gh, gw) = backbone.grid(size, size);
    println!(
        "loaded {} from {} in {load_s:.2} s: {} prefix + {gh}x{gw} tokens of {}",
        backbone.family(),
        dir.display(),
        backbone.num_prefix_tokens(),
        backbone.hidden_size()
    );

    for &batch in &batches {
        let input = Tensor::<B, 4>::random([batch, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
        let run = |x: Tensor<B, 4>| {
            let out = backbone.forward(x);
            // Reading one value waits for the whole forward pass on any backend.
            out.slice([0..1, 0..1, 0..1]).into_scalar()
        };
        run(input.clone()); // warm-up
        let calls = images.div_ceil(batch);
        let t = Instant::now();
        for _ in 0..calls {
            run(input.clone());
        }
        let secs = t.elapsed().as_secs_f64();
        let done = calls * batch;
        println!(
            "RESULT impl=deper family={} batch={batch} size={size} images={done} seconds={secs:.3} images_per_s={:.3}",
            backbone.family(),
            done as f64 / secs
        );
    }
    println!("PEAK impl=deper family={} peak_mib={:.0}", backbone.family(), peak_rss_mib());
}
