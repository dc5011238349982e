//! Stage-1 training throughput of DEPER at the paper's sizes on the CPU (NdArray) backend, or on wgpu
//! or CUDA.
//!
//! ```text
//! cargo run --release -p deper-train --example stage1_bench -- [cpu|wgpu|cuda] [STEPS] [WARMUP] [BATCH] [PATCH_DIM]
//! cargo run --release -p deper-train --features wgpu --example stage1_bench -- wgpu 5 2
//! cargo run --release -p deper-train --features cuda --example stage1_bench -- cuda 20 3
//! ```
//!
//! `examples/stage1_bench_cuda.sh` runs the CUDA side against PyTorch on the same GPU.
//!
//! Each step is what `deper train stage1` does per batch with its default settings: forward, the
//! stage-1 loss (traj + 1.0·cls + 0.1·con, read back) and backward through
//! [`stage1::batch_gradients`], an AdamW step from [`stage1::TrainSettings::optimizer`] (lr 5e-4, weight
//! decay 0.01, gradient clipping 1.0), then the memory-bank update. The network is the paper
//! preset ([`ModelSettings::default`]: D = 384, 4 heads, 2 encoder layers, 4 decoder layers,
//! dropout 0.1, interleaved encoder). One fixed synthetic batch of realistic shapes is reused:
//! patch features on a 28×28 grid (DINOv3 ViT-S/16 on 448² images: PATCH_DIM 384 by default),
//! captions of 32–40 tokens, trajectories of 10–30 steps, the trainer's batch size (32). The
//! memory bank starts full (4096 + one per subject), as after the first epochs.
//!
//! Prints one `RESULT` line (`examples/stage1_bench_torch.py` prints the same format):
//! samples/s over STEPS timed steps after WARMUP untimed ones, and the process's peak resident
//! memory (VmHWM). On wgpu the loss read-back each step waits for the device; with Mesa's
//! lavapipe the "device" is the CPU and its buffers are host memory, so VmHWM counts them too.
//! Threads: `LP_NUM_THREADS` for lavapipe; NdArray runs on one core unless built with the
//! `ndarray-threads` feature (burn-ndarray's rayon and threaded matmul, off in this workspace), then
//! `RAYON_NUM_THREADS` and `MATMUL_NUM_THREADS`. The `threads` field says which applied.

use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use deper_core::rng::Lcg;
use deper_core::{AttentionStep, BBox, Trajectory, TrajectorySource};
use deper_model::run::{deper_config, DEFAULT_BATCH_SIZE};
use deper_model::{Deper, ModelInput};
use deper_train::data::Batch;
use deper_train::stage1::{self, ModelSettings, Stage1Config};

/// Patch grid of DINOv3 (patch 16) on the paper's 448×448 images.
const GRID: usize = 28;
/// Caption vocabulary: a word vocabulary of the synthetic world's order (the table is frozen, so
/// its size only changes the parameter count).
const VOCAB: usize = 1000;
/// Seen subjects of the synthetic world.
const SUBJECTS: usize = 9;

type Cpu = burn::backend::Autodiff<burn::backend::NdArray>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args.get(i).map(|s| s.parse()).transpose()?.unwrap_or(default))
    };
    let opts =
        Options { steps: arg(1, 5)?, warmup: arg(2, 2)?, batch: arg(3, DEFAULT_BATCH_SIZE)?, patch_dim: arg(4, 384)? };
    match args.first().map(String::as_str).unwrap_or("cpu") {
        "cpu" => run::<Cpu>("cpu", &opts, Default::default()),
        #[cfg(feature = "wgpu")]
        "wgpu" => run::<burn::backend::Autodiff<burn::backend::Wgpu>>("wgpu", &opts, Default::default()),
        #[cfg(feature = "cuda")]
        "cuda" => run::<burn::backend::Autodiff<burn::backend::Cuda>>("cuda", &opts, Default::default()),
        other => Err(format!("device `{other}`: cpu, or wgpu / cuda when built with that feature").into()),
    }
}

#[derive(Debug)]
struct Options {
    steps: usize,
    warmup: usize,
    batch: usize,
    patch_dim: usize,
}

fn run<B: AutodiffBackend>(name: &str, opts: &Options, device: B::Device) -> Result<(), Box<dyn std::error::Error>> {
    let config = Stage1Config::default();
    B::seed(&device, config.train.seed);
    let model_settings = ModelSettings::default();
    let mut model: Deper<B> =
        deper_config(&model_settings, [GRID, GRID, opts.patch_dim], VOCAB, SUBJECTS).init(&device);
    let (params, trainable) = (model.num_params(), trainable_params(&model));
    let mut optim = config.train.optimizer::<B>();
    let loss_config = config.loss_config();
    let batch = synthetic_batch::<B>(opts.batch, opts.patch_dim, &device)?;

    // A full bank: the contrast set every step sees once training is under way.
    let mut bank = loss_config.init_bank();
    let mut rng = Lcg(7);
    for i in 0..loss_config.bank_capacity {
        let v: Vec<f32> = (0..model_settings.d_model).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
        bank.push(&v, i % SUBJECTS);
    }

    let mut step = |model: Deper<B>| {
        let (losses, grads, z_s) = stage1::batch_gradients(&model, &batch, &loss_config, &bank, usize::MAX);
        let model = optim.step(config.train.lr, model, grads);
        bank.update(z_s, &batch.labels);
        (model, losses.total)
    };
    for _ in 0..opts.warmup {
        model = step(model).0;
    }
    let started = Instant::now();
    let mut loss = f64::NAN;
    for _ in 0..opts.steps {
        (model, loss) = step(model);
    }
    let seconds = started.elapsed().as_secs_f64();
    let threads = match name {
        "wgpu" => std::env::var("LP_NUM_THREADS").unwrap_or_else(|_| "default".into()),
        _ if cfg!(feature = "ndarray-threads") => {
            std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
        }
        _ => "1".into(),
    };
    println!(
        "RESULT impl=burn device={name} threads={threads} batch={} steps={} params={params} trainable={trainable} \
         samples_per_s={:.2} step_ms={:.1} peak_mib={:.1} loss={loss:.4}",
        opts.batch,
        opts.steps,
        (opts.batch * opts.steps) as f64 / seconds,
        1000.0 * seconds / opts.steps.max(1) as f64,
        peak_rss_mib().unwrap_or(f64::NAN),
    );
    Ok(())
}

/// Parameters that get gradients (all but the frozen caption table).
fn trainable_params<B: Backend, M: Module<B>>(module: &M) -> usize {
    struct Count(usize);
    impl<B: Backend> ModuleVisitor<B> for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let tensor = param.val();
            if tensor.is_require_grad() {
                self.0 += tensor.shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    module.visit(&mut count);
    count.0
}

/// A batch of `n` samples: uniform features in [-1, 1), caption `b` of `40 − (7b mod 9)` tokens,
/// trajectory `b` of `30 − (11b mod 21)` steps with boxes of 0.05–0.25 per side, subject `b mod 9`.
/// `stage1_bench_torch.py` builds the same lengths, boxes and labels.
fn synthetic_batch<B: Backend>(
    n: usize,
    patch_dim: usize,
    device: &B::Device,
) -> Result<Batch<B>, Box<dyn std::error::Error>> {
    let mut rng = Lcg(1);
    let patches: Vec<f32> = (0..n * GRID * GRID * patch_dim).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
    let captions: Vec<Vec<u32>> =
        (0..n).map(|b| (0..40 - (7 * b) % 9).map(|i| (2 + (b * 31 + i * 17) % (VOCAB - 2)) as u32).collect()).collect();
    let trajectories: Vec<Trajectory> = (0..n)
        .map(|b| Trajectory {
            source: TrajectorySource::Synthetic,
            steps: (0..30 - (11 * b) % 21)
                .map(|s| {
                    let (x, y) = (((b * 13 + s * 7) % 20) as f64 / 27.0, ((b * 5 + s * 11) % 20) as f64 / 27.0);
                    let side = 0.05 + ((b + s) % 5) as f64 * 0.05;
                    AttentionStep {
                        bbox: BBox::from_corners(x, y, x + side, y + side),
                        duration: 0.1 + ((b + 3 * s) % 8) as f64 * 0.1,
                        start: None,
                        words: vec![],
                    }
                })
                .collect(),
        })
        .collect();
    let refs: Vec<&[u32]> = captions.iter().map(Vec::as_slice).collect();
    let input = ModelInput::from_host(patches, [GRID, GRID, patch_dim], &refs, &trajectories, device)?;
    Ok(Batch {
        patches: input.patches,
        caption_ids: input.caption_ids,
        caption_mask: input.caption_mask,
        caption_embeddings: None,
        trajectory: input.trajectory,
        labels: (0..n).map(|b| b % SUBJECTS).collect(),
    })
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
