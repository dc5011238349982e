//! The trajectory decoder can place a box on what it sees only when the image tokens carry their
//! positions (`DeperConfig::image_positions`).
//!
//! Its own test binary: burn's NdArray backend has one RNG per process, so tests training beside
//! it would draw other initial weights and make the result depend on scheduling.
#![allow(clippy::unwrap_used)] // a broken read-back should fail the test loudly

use burn::backend::{Autodiff, NdArray};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use deper_core::rng::Lcg;
use deper_core::{AttentionStep, BBox, Trajectory, TrajectorySource};
use deper_model::{Deper, DeperConfig, Stage1LossConfig, TrajectoryBatch};

type TrainBackend = Autodiff<NdArray>;

const GRID: usize = 4;
const PATCH_DIM: usize = 8;

struct Batch {
    patches: Tensor<TrainBackend, 4>,
    caption_ids: Tensor<TrainBackend, 2, Int>,
    caption_mask: Tensor<TrainBackend, 2, Bool>,
    traj: TrajectoryBatch<TrainBackend>,
    centres: Vec<(f64, f64)>,
}

/// Samples where every patch is noise except one marked patch (channel 0 = 4), and the
/// trajectory is one 0.05-wide box on the marked patch's centre.
fn marked_patch_batch(n: usize, rng: &mut Lcg) -> Batch {
    let device = Default::default();
    let mut patches: Vec<f32> = (0..n * GRID * GRID * PATCH_DIM).map(|_| rng.next_unit() - 0.5).collect();
    let mut trajectories = Vec::new();
    let mut centres = Vec::new();
    for i in 0..n {
        let cell = ((rng.next_unit() * (GRID * GRID) as f32) as usize).min(GRID * GRID - 1);
        patches[(i * GRID * GRID + cell) * PATCH_DIM] = 4.0;
        let cx = ((cell % GRID) as f64 + 0.5) / GRID as f64;
        let cy = ((cell / GRID) as f64 + 0.5) / GRID as f64;
        let bbox = BBox::from_corners(cx - 0.025, cy - 0.025, cx + 0.025, cy + 0.025);
        let step = AttentionStep { bbox, duration: 0.5, start: None, words: vec![] };
        trajectories.push(Trajectory { source: TrajectorySource::Synthetic, steps: vec![step] });
        centres.push((cx, cy));
    }
    Batch {
        patches: Tensor::from_data(TensorData::new(patches, [n, GRID, GRID, PATCH_DIM]), &device),
        caption_ids: Tensor::from_data(TensorData::new(vec![1i64; n * 2], [n, 2]), &device),
        caption_mask: Tensor::from_data(TensorData::new(vec![true; n * 2], [n, 2]), &device),
        traj: TrajectoryBatch::from_trajectories_padded(&trajectories, 30, &device),
        centres,
    }
}

/// Mean |predicted − true| box centre coordinate on fresh samples after training the decoder
/// (no trajectory stream, so the boxes can only come from the image) to find the marked patch.
fn marked_patch_centre_error(image_positions: bool, seed: u64) -> f64 {
    let device = Default::default();
    <TrainBackend as Backend>::seed(&device, seed);
    let mut model: Deper<TrainBackend> = DeperConfig::new(PATCH_DIM, 4, 8, 1)
        .with_d_model(32)
        .with_n_heads(2)
        .with_encoder_layers(1)
        .with_decoder_layers(1)
        .with_dropout(0.0)
        .with_no_trajectory(true)
        .with_image_positions(image_positions)
        .init(&device);
    let mut optim = AdamConfig::new().init();
    let loss_cfg = Stage1LossConfig::new().with_w_cls(0.0).with_w_con(0.0).with_bank_capacity(0);
    let bank = loss_cfg.init_bank();
    let mut rng = Lcg(11);
    for _ in 0..900 {
        let b = marked_patch_batch(32, &mut rng);
        let out = model.forward(b.patches, b.caption_ids, b.caption_mask, &b.traj);
        let losses = loss_cfg.loss(&out, &b.traj, &[0; 32], &bank);
        let grads = GradientsParams::from_grads(losses.total.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    let b = marked_patch_batch(64, &mut rng);
    let out = model.forward(b.patches, b.caption_ids, b.caption_mask, &b.traj);
    let boxes: Vec<f32> = out.pred_boxes.into_data().to_vec().unwrap();
    let mut error = 0.0;
    for (i, (cx, cy)) in b.centres.iter().enumerate() {
        let p = &boxes[i * 30 * 4..i * 30 * 4 + 4];
        error += ((p[0] + p[2]) as f64 / 2.0 - cx).abs() + ((p[1] + p[3]) as f64 / 2.0 - cy).abs();
    }
    error / (2.0 * b.centres.len() as f64)
}

/// With image positions the decoder finds the marked patch (a cell is 0.25 wide) from either of two
/// initialisations; without them it can do no better than the grid's middle (mean error 0.25).
#[test]
fn decoder_places_boxes_from_image_positions() {
    for seed in [3, 4] {
        let with = marked_patch_centre_error(true, seed);
        eprintln!("seed {seed}: box centre error {with:.4} with image positions");
        assert!(with < 0.03, "seed {seed}: centre error with image positions {with}");
    }
    let without = marked_patch_centre_error(false, 3);
    eprintln!("seed 3: box centre error {without:.4} without image positions");
    assert!(without > 0.15, "centre error without image positions {without}");
}
