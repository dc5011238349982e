//! How many trajectory steps can DEPER's scanpath latent `z_scan` carry to the decoder?
//!
//! DEPER (Xue et al., CVPR 2026, arXiv 2512.06662) pools the whole trajectory into one vector
//! `z_scan` with one learned query (`SubjectExtractor`), and the non-autoregressive decoder must
//! rebuild every step's box from it. This trains a small `Deper` on trajectories of `--steps`
//! boxes at uniformly random places over noise images and a constant (or, with `--caption-len`,
//! random) caption, with the trajectory loss alone, so the only way to a step's position is
//! through `z_scan`; then it prints each step's mean box-centre error, IoU and predicted width on
//! fresh samples. Always predicting the middle scores 0.225 (positions are uniform on [0.05, 0.95]).
//!
//! `cargo run -p deper-model --example scan_capacity -- --steps 10 --iters 1500`
//! (flags: `--steps`, `--min-steps`, `--iters`, `--lr`, `--heads`, `--dropout`, `--seed`, `--caption-len`,
//! `--scan-queries` (the model's `n_scan_queries`), `--loss-steps K` (box loss on the first K steps
//! only) and `--curriculum N` (box loss on the first `1 + iteration / N` steps, as stage 1's
//! `loss.box_curriculum_steps`)).
//! On the 2-core CPU (2026-11-27, seed 3, D = 64, 4 heads, lr 1e-3, no dropout): one step is
//! placed to 0.007 within 300 iterations; with 10 steps the loss sits on the middle's plateau
//! for ~600 iterations, then four steps (as many as the pooling query has attention heads) are
//! placed to 0.014–0.020 (IoU 0.23–0.34) by 1500 and the other six stay at the middle. With
//! lengths uniform on 2–18 (`--steps 18 --min-steps 2`) no step leaves the middle by 1500, but
//! with the box loss on step 1 alone (`--loss-steps 1`) step 1 is placed to 0.0099 by 800: fitting
//! every step at once is what holds the plateau.

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use deper_core::rng::Lcg;
use deper_core::{AttentionStep, BBox, Trajectory, TrajectorySource};
use deper_model::{Deper, DeperConfig, Stage1LossConfig, TrajectoryBatch};

type TrainBackend = Autodiff<NdArray>;

const GRID: usize = 8;
const PATCH_DIM: usize = 8;
const BATCH: usize = 32;
const BOX: f64 = 0.05;
const VOCAB: usize = 4;

struct Args {
    steps: usize,
    /// Shortest trajectory; lengths are uniform on `min_steps..=steps`.
    min_steps: Option<usize>,
    iters: usize,
    lr: f64,
    heads: usize,
    dropout: f64,
    seed: u64,
    caption_len: usize,
    scan_queries: usize,
    /// Only the first this many steps enter the box loss (all by default).
    loss_steps: Option<usize>,
    /// A curriculum: the box loss covers `1 + iteration / curriculum` steps.
    curriculum: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        steps: 10,
        min_steps: None,
        iters: 1500,
        lr: 1e-3,
        heads: 4,
        dropout: 0.0,
        seed: 3,
        caption_len: 2,
        scan_queries: 1,
        loss_steps: None,
        curriculum: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--steps" => args.steps = value.parse().map_err(|e| bad(&e))?,
            "--min-steps" => args.min_steps = Some(value.parse().map_err(|e| bad(&e))?),
            "--iters" => args.iters = value.parse().map_err(|e| bad(&e))?,
            "--lr" => args.lr = value.parse().map_err(|e| bad(&e))?,
            "--heads" => args.heads = value.parse().map_err(|e| bad(&e))?,
            "--dropout" => args.dropout = value.parse().map_err(|e| bad(&e))?,
            "--seed" => args.seed = value.parse().map_err(|e| bad(&e))?,
            "--caption-len" => args.caption_len = value.parse().map_err(|e| bad(&e))?,
            "--scan-queries" => args.scan_queries = value.parse().map_err(|e| bad(&e))?,
            "--loss-steps" => args.loss_steps = Some(value.parse().map_err(|e| bad(&e))?),
            "--curriculum" => args.curriculum = Some(value.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.steps == 0 || args.steps > deper_core::MAX_STEPS {
        return Err(format!("--steps must be 1..={}", deper_core::MAX_STEPS));
    }
    if args.min_steps.is_some_and(|m| m == 0 || m > args.steps) {
        return Err("--min-steps must be 1..=--steps".into());
    }
    if args.caption_len == 0 {
        return Err("--caption-len must be at least 1".into());
    }
    if args.curriculum == Some(0) || args.loss_steps == Some(0) {
        return Err("--curriculum and --loss-steps must be at least 1".into());
    }
    if args.scan_queries == 0 {
        return Err("--scan-queries must be at least 1".into());
    }
    if args.heads == 0 || 64 % args.heads != 0 {
        return Err("--heads must divide 64".into());
    }
    Ok(args)
}

struct Batch {
    patches: Tensor<TrainBackend, 4>,
    caption_ids: Tensor<TrainBackend, 2, Int>,
    caption_mask: Tensor<TrainBackend, 2, Bool>,
    traj: TrajectoryBatch<TrainBackend>,
    /// Per sample, the true centre of each step.
    centres: Vec<Vec<(f64, f64)>>,
}

/// A trajectory's length: `--steps`, or uniform on `--min-steps..=--steps`.
fn length(args: &Args, rng: &mut Lcg) -> usize {
    match args.min_steps {
        Some(min) if min < args.steps => {
            (min + (rng.next_unit() * (args.steps - min + 1) as f32) as usize).min(args.steps)
        }
        _ => args.steps,
    }
}

fn random_batch(n: usize, args: &Args, rng: &mut Lcg) -> Batch {
    let caption_len = args.caption_len;
    let device = Default::default();
    let patches: Vec<f32> = (0..n * GRID * GRID * PATCH_DIM).map(|_| rng.next_unit() - 0.5).collect();
    // Two tokens: the constant caption `[1, 1]`; longer: tokens drawn from the 4-word vocabulary.
    let caption_ids: Vec<i64> = if caption_len == 2 {
        vec![1; n * 2]
    } else {
        (0..n * caption_len).map(|_| (rng.next_unit() * VOCAB as f32) as i64 % VOCAB as i64).collect()
    };
    let mut trajectories = Vec::with_capacity(n);
    let mut centres = Vec::with_capacity(n);
    for _ in 0..n {
        let places: Vec<(f64, f64)> = (0..length(args, rng))
            .map(|_| (0.05 + 0.9 * rng.next_unit() as f64, 0.05 + 0.9 * rng.next_unit() as f64))
            .collect();
        let steps = places
            .iter()
            .map(|&(cx, cy)| AttentionStep {
                bbox: BBox::from_corners(cx - BOX / 2.0, cy - BOX / 2.0, cx + BOX / 2.0, cy + BOX / 2.0),
                duration: 0.5,
                start: None,
                words: vec![],
            })
            .collect();
        trajectories.push(Trajectory { source: TrajectorySource::Synthetic, steps });
        centres.push(places);
    }
    Batch {
        patches: Tensor::from_data(TensorData::new(patches, [n, GRID, GRID, PATCH_DIM]), &device),
        caption_ids: Tensor::from_data(TensorData::new(caption_ids, [n, caption_len]), &device),
        caption_mask: Tensor::from_data(TensorData::new(vec![true; n * caption_len], [n, caption_len]), &device),
        traj: TrajectoryBatch::from_trajectories_padded(&trajectories, deper_core::MAX_STEPS, &device),
        centres,
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("scan_capacity: {message}");
            std::process::exit(2);
        }
    };
    let device = Default::default();
    <TrainBackend as Backend>::seed(&device, args.seed);
    let mut model: Deper<TrainBackend> = DeperConfig::new(PATCH_DIM, VOCAB, 8, 1)
        .with_d_model(64)
        .with_n_heads(args.heads)
        .with_encoder_layers(2)
        .with_decoder_layers(2)
        .with_dropout(args.dropout)
        .with_n_scan_queries(args.scan_queries)
        .init(&device);
    let mut optim = AdamConfig::new().init();
    let loss_cfg = Stage1LossConfig::new().with_w_cls(0.0).with_w_con(0.0).with_bank_capacity(0);
    let bank = loss_cfg.init_bank();
    let mut rng = Lcg(args.seed.wrapping_add(8));
    for iter in 0..args.iters {
        let b = random_batch(BATCH, &args, &mut rng);
        let out = model.forward(b.patches, b.caption_ids, b.caption_mask, &b.traj);
        let box_steps = match (args.loss_steps, args.curriculum) {
            (Some(k), _) => k,
            (None, Some(every)) => 1 + iter / every,
            (None, None) => usize::MAX,
        };
        let losses = loss_cfg.loss_on_first_boxes(&out, &b.traj, &[0; BATCH], &bank, box_steps);
        if iter % 100 == 0 {
            println!("iteration {iter:5}  box loss {:.4}", losses.boxes.clone().into_scalar());
        }
        let grads = GradientsParams::from_grads(losses.total.backward(), &model);
        model = optim.step(args.lr, model, grads);
    }

    let test = random_batch(2 * BATCH, &args, &mut rng);
    let out = model.valid().forward(
        test.patches.inner(),
        test.caption_ids.inner(),
        test.caption_mask.inner(),
        &TrajectoryBatch {
            boxes: test.traj.boxes.inner(),
            durations: test.traj.durations.inner(),
            mask: test.traj.mask.inner(),
        },
    );
    let boxes: Vec<f32> = out.pred_boxes.into_data().convert::<f32>().to_vec().expect("boxes read back as f32");
    // IoU with the true box and the predicted width, beside the centre error: a box on the right
    // centre still scores little IoU unless its width is near the true 0.05.
    println!("step  centre error (middle: 0.225)  IoU  mean width (true {BOX})");
    for step in 0..args.steps {
        let (mut error, mut iou, mut width, mut n) = (0.0, 0.0, 0.0, 0usize);
        for (i, places) in test.centres.iter().enumerate() {
            let Some(&(cx, cy)) = places.get(step) else { continue };
            let p: Vec<f64> =
                boxes[(i * deper_core::MAX_STEPS + step) * 4..][..4].iter().map(|&v| f64::from(v)).collect();
            let predicted = BBox::from_corners(p[0], p[1], p[2], p[3]);
            let truth = BBox::from_corners(cx - BOX / 2.0, cy - BOX / 2.0, cx + BOX / 2.0, cy + BOX / 2.0);
            error += ((p[0] + p[2]) / 2.0 - cx).abs() + ((p[1] + p[3]) / 2.0 - cy).abs();
            iou += predicted.iou(&truth);
            width += predicted.width();
            n += 1;
        }
        if n == 0 {
            continue;
        }
        let n_f = n as f64;
        println!("{:4}  {:30.4}  {:.3}  {:.3}  ({n} samples)", step + 1, error / (2.0 * n_f), iou / n_f, width / n_f);
    }
}
