//! Whole-model tests: shapes of [`Deper`] in every mode, and a tiny overfit run.

use burn::backend::{Autodiff, NdArray};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use deper_core::rng::Lcg;
use deper_core::{AttentionStep, BBox, Trajectory, TrajectorySource};

use crate::{Deper, DeperConfig, EncoderForm, Stage1LossConfig, TrajectoryBatch};

type TestBackend = NdArray;
type TrainBackend = Autodiff<NdArray>;

const GRID: usize = 4;
const STEPS: usize = 40;
const PATCH_DIM: usize = 8;
const CAPTION_LEN: usize = 6;
const VOCAB: usize = 20;

fn tiny_config(num_subjects: usize) -> DeperConfig {
    DeperConfig::new(PATCH_DIM, VOCAB, 8, num_subjects)
        .with_d_model(32)
        .with_n_heads(2)
        .with_encoder_layers(2)
        .with_decoder_layers(2)
}

/// Inputs of one batch: patch features, caption ids and mask, trajectories, subjects.
struct Batch<B: Backend> {
    patches: Tensor<B, 4>,
    caption_ids: Tensor<B, 2, Int>,
    caption_mask: Tensor<B, 2, Bool>,
    traj: TrajectoryBatch<B>,
    trajectories: Vec<Trajectory>,
    subjects: Vec<usize>,
}

/// `n` samples, subject `i % subjects`; each subject looks at its own region of the image
/// with its own number of steps, each sample with its own jitter, patches and caption.
fn batch<B: Backend>(n: usize, subjects: usize, device: &B::Device) -> Batch<B> {
    let mut rng = Lcg(7);
    let patches: Vec<f32> = (0..n * GRID * GRID * PATCH_DIM).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    let mut trajectories = Vec::new();
    for i in 0..n {
        let s = i % subjects;
        let len = CAPTION_LEN - i % 3;
        for k in 0..CAPTION_LEN {
            ids.push(if k < len {
                (1 + (rng.next_unit() * (VOCAB - 1) as f32) as usize).min(VOCAB - 1) as i64
            } else {
                0
            });
            mask.push(k < len);
        }
        let n_steps = 3 + s * 2;
        let (ox, oy) = [(0.1, 0.1), (0.55, 0.2), (0.2, 0.6)][s % 3];
        let steps = (0..n_steps)
            .map(|k| {
                let x = ox + 0.05 * k as f64 + 0.05 * rng.next_unit() as f64;
                let y = oy + 0.03 * k as f64 + 0.05 * rng.next_unit() as f64;
                AttentionStep {
                    bbox: BBox::from_corners(x, y, x + 0.2, y + 0.15),
                    duration: 0.2 + 0.1 * s as f64,
                    start: None,
                    words: vec![],
                }
            })
            .collect();
        trajectories.push(Trajectory { source: TrajectorySource::Synthetic, steps });
    }
    Batch {
        patches: Tensor::from_data(TensorData::new(patches, [n, GRID, GRID, PATCH_DIM]), device),
        caption_ids: Tensor::from_data(TensorData::new(ids, [n, CAPTION_LEN]), device),
        caption_mask: Tensor::from_data(TensorData::new(mask, [n, CAPTION_LEN]), device),
        traj: TrajectoryBatch::from_trajectories_padded(&trajectories, 30, device),
        trajectories,
        subjects: (0..n).map(|i| i % subjects).collect(),
    }
}

#[test]
fn deper_output_shapes_in_every_mode() {
    let device = Default::default();
    let b = batch::<TestBackend>(3, 3, &device);
    let short = TrajectoryBatch {
        boxes: b.traj.boxes.clone().slice_dim(1, 0..7),
        durations: b.traj.durations.clone().slice_dim(1, 0..7),
        mask: b.traj.mask.clone().slice_dim(1, 0..7),
    };
    for (form, no_traj) in [
        (EncoderForm::Interleaved, false),
        (EncoderForm::Sequential, false),
        (EncoderForm::SequentialRefined, false),
        (EncoderForm::Interleaved, true),
    ] {
        let model: Deper<TestBackend> =
            tiny_config(5).with_encoder_form(form).with_no_trajectory(no_traj).init(&device);
        let out = model.forward(b.patches.clone(), b.caption_ids.clone(), b.caption_mask.clone(), &short);
        assert_eq!(out.z_s.dims(), [3, 32], "{form:?} {no_traj}");
        assert_eq!(out.z_scan.dims(), [3, 1, 32]);
        assert_eq!(out.subject_logits.dims(), [3, 5]);
        assert_eq!(out.pred_boxes.dims(), [3, 30, 4]);
        assert_eq!(out.pred_valid_logits.dims(), [3, 30]);
        let z: Vec<f32> = out.z_s.into_data().to_vec().unwrap();
        assert!(z.iter().all(|v| v.is_finite()));
    }
    // Several scan queries: `z_scan` is a set of tokens, everything else keeps its shape.
    let model: Deper<TestBackend> = tiny_config(5).with_n_scan_queries(4).init(&device);
    let out = model.forward(b.patches.clone(), b.caption_ids.clone(), b.caption_mask.clone(), &short);
    assert_eq!(out.z_s.dims(), [3, 32]);
    assert_eq!(out.z_scan.dims(), [3, 4, 32]);
    assert_eq!(out.pred_boxes.dims(), [3, 30, 4]);
    assert_eq!(out.pred_valid_logits.dims(), [3, 30]);
}

/// The browser's path (RoI pooling weights built on the host) gives exactly the outputs of the
/// native one (weights built from the boxes read back from the device).
#[test]
fn host_roi_weights_give_the_same_outputs() {
    let device = Default::default();
    let b = batch::<TestBackend>(3, 3, &device);
    let model: Deper<TestBackend> = tiny_config(3).init(&device);
    let weights = TrajectoryBatch::<TestBackend>::host_roi_weights(&b.trajectories, 30, GRID, GRID, &device);
    let native = model.forward(b.patches.clone(), b.caption_ids.clone(), b.caption_mask.clone(), &b.traj);
    let host = model.forward_with_roi_weights(b.patches, b.caption_ids, b.caption_mask, &b.traj, weights);
    let (x, y): (Vec<f32>, Vec<f32>) =
        (native.z_s.into_data().to_vec().unwrap(), host.z_s.into_data().to_vec().unwrap());
    assert_eq!(x, y);
    let diff = (native.pred_boxes - host.pred_boxes).abs().max().into_scalar();
    assert_eq!(diff, 0.0);
}

/// Changing what sits in padded trajectory steps and padded caption positions changes no
/// output: every attention masks them and the encoder zeroes them.
#[test]
fn padding_content_does_not_change_outputs() {
    let device = Default::default();
    let b = batch::<TestBackend>(3, 3, &device);
    let [n, steps, _] = b.traj.boxes.dims();
    let mask3 = b.traj.mask.clone().reshape([n, steps, 1]).expand([n, steps, 4]);
    let noisy = TrajectoryBatch {
        boxes: b.traj.boxes.clone().mask_fill(mask3.bool_not(), 0.7),
        durations: b.traj.durations.clone().mask_fill(b.traj.mask.clone().bool_not(), 3.0),
        mask: b.traj.mask.clone(),
    };
    let noisy_ids = b.caption_ids.clone().mask_fill(b.caption_mask.clone().bool_not(), 7);
    for (form, scan_queries) in [
        (EncoderForm::Interleaved, 1),
        (EncoderForm::Sequential, 1),
        (EncoderForm::SequentialRefined, 1),
        (EncoderForm::Interleaved, 3),
    ] {
        let model: Deper<TestBackend> =
            tiny_config(3).with_encoder_form(form).with_n_scan_queries(scan_queries).init(&device);
        let clean = model.forward(b.patches.clone(), b.caption_ids.clone(), b.caption_mask.clone(), &b.traj);
        let noisy = model.forward(b.patches.clone(), noisy_ids.clone(), b.caption_mask.clone(), &noisy);
        for (x, y) in [(clean.z_s, noisy.z_s), (clean.z_scan.flatten(1, 2), noisy.z_scan.flatten(1, 2))] {
            let diff = (x - y).abs().max().into_scalar();
            assert!(diff < 1e-5, "{form:?}: {diff}");
        }
        let diff = (clean.pred_boxes - noisy.pred_boxes).abs().max().into_scalar();
        assert!(diff < 1e-5, "{form:?}: {diff}");
    }
}

#[test]
fn stage1_loss_is_finite_with_short_targets() {
    let device = Default::default();
    let b = batch::<TestBackend>(4, 2, &device);
    let model: Deper<TestBackend> = tiny_config(2).init(&device);
    let out = model.forward(b.patches, b.caption_ids, b.caption_mask, &b.traj);
    let short = TrajectoryBatch {
        boxes: b.traj.boxes.slice_dim(1, 0..7),
        durations: b.traj.durations.slice_dim(1, 0..7),
        mask: b.traj.mask.slice_dim(1, 0..7),
    };
    let cfg = Stage1LossConfig::new();
    let losses = cfg.loss(&out, &short, &b.subjects, &cfg.init_bank());
    let total = losses.total.into_scalar();
    assert!(total.is_finite() && total > 0.0, "{total}");
}

/// A tiny DEPER (D = 32, 2 heads, one encoder and one decoder layer) overfits 6 fixed samples
/// of 3 subjects: after 40 Adam steps (lr 3e-3) the subject cross-entropy is below 0.05 and
/// the stage-1 total has fallen by more than 80% (seen: 2.07 → 0.08–0.10 over seeds 1, 2, 3, 42,
/// the floor being 0.1·ln 2 from SupCon).
///
/// Dropout is off. The bank keeps only the latest vector per subject (FIFO capacity 0): with
/// a FIFO of past steps every anchor has many positives and SupCon has a floor near
/// `ln(#positives)`, so the 80% drop would then measure the bank size, not learning.
#[test]
fn tiny_deper_overfits_a_fixed_batch() {
    let device = Default::default();
    <TrainBackend as Backend>::seed(&device, 42);
    let b = batch::<TrainBackend>(6, 3, &device);
    let mut model: Deper<TrainBackend> =
        tiny_config(3).with_encoder_layers(1).with_decoder_layers(1).with_dropout(0.0).init(&device);
    let mut optim = AdamConfig::new().init();
    let loss_cfg = Stage1LossConfig::new().with_bank_capacity(0);
    let mut bank = loss_cfg.init_bank();

    let (mut first, mut last_total, mut last_cls) = (None, f32::NAN, f32::NAN);
    for _ in 0..STEPS {
        let out = model.forward(b.patches.clone(), b.caption_ids.clone(), b.caption_mask.clone(), &b.traj);
        let losses = loss_cfg.loss(&out, &b.traj, &b.subjects, &bank);
        bank.update(out.z_s.clone(), &b.subjects);
        last_total = losses.total.clone().into_scalar();
        last_cls = losses.cls.clone().into_scalar();
        first.get_or_insert(last_total);
        let grads = GradientsParams::from_grads(losses.total.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    let first = first.unwrap();
    assert!(last_cls < 0.05, "classification loss {last_cls}");
    assert!(last_total < 0.2 * first, "total loss {first} → {last_total}, not an 80% drop");
}

/// Reversing the words of each caption leaves z_s unchanged without caption positions (every
/// attention over the caption is then order-blind) and changes it with them.
#[test]
fn caption_order_reaches_z_s_only_with_caption_positions() {
    let device = Default::default();
    let b = batch::<TestBackend>(3, 3, &device);
    let ids: Vec<i64> = b.caption_ids.clone().into_data().convert::<i64>().to_vec().unwrap();
    let mask: Vec<bool> = b.caption_mask.clone().into_data().to_vec().unwrap();
    let mut reversed = ids.clone();
    for (row, m) in reversed.chunks_mut(CAPTION_LEN).zip(mask.chunks(CAPTION_LEN)) {
        let len = m.iter().filter(|&&v| v).count();
        row[..len].reverse();
    }
    assert_ne!(ids, reversed);
    let reversed = Tensor::<TestBackend, 2, Int>::from_data(TensorData::new(reversed, [3, CAPTION_LEN]), &device);
    for positions in [false, true] {
        let model: Deper<TestBackend> =
            tiny_config(3).with_dropout(0.0).with_caption_positions(positions).init(&device);
        let z = |ids: Tensor<TestBackend, 2, Int>| -> Vec<f32> {
            let out = model.forward(b.patches.clone(), ids, b.caption_mask.clone(), &b.traj);
            out.z_s.into_data().to_vec().unwrap()
        };
        let (a, r) = (z(b.caption_ids.clone()), z(reversed.clone()));
        let diff = a.iter().zip(&r).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        if positions {
            assert!(diff > 1e-3, "z_s ignores the word order with caption positions ({diff})");
        } else {
            assert!(diff < 1e-5, "z_s depends on the word order without caption positions ({diff})");
        }
    }
}

/// The image tokens' position encoding is the trajectory tokens' box-centre encoding of a
/// box centred on the same patch, so a step and the patches under it line up: two one-step
/// trajectories over zero features differ only in their spatial terms.
#[test]
fn patch_positions_match_trajectory_centre_encoding() {
    let device = burn::backend::ndarray::NdArrayDevice::default();
    let (h, w, d) = (3, 5, 16);
    let pe: Vec<f32> =
        crate::model::patch_position_encoding::<TestBackend>(h, w, d, &device).into_data().to_vec().unwrap();
    let centred_on = |i: usize, j: usize| {
        let (cx, cy) = ((j as f64 + 0.5) / w as f64, (i as f64 + 0.5) / h as f64);
        let bbox = BBox::from_corners(cx - 0.01, cy - 0.02, cx + 0.01, cy + 0.02);
        let step = AttentionStep { bbox, duration: 0.3, start: None, words: vec![] };
        Trajectory { source: TrajectorySource::Synthetic, steps: vec![step] }
    };
    let (a, b) = ((2, 3), (0, 1));
    let traj =
        TrajectoryBatch::<TestBackend>::from_trajectories(&[centred_on(a.0, a.1), centred_on(b.0, b.1)], &device);
    let tokens = crate::traj_tokens::TrajTokensConfig::new(1, d).init::<TestBackend>(&device);
    let t: Vec<f32> = tokens.forward(Tensor::zeros([2, h, w, 1], &device), &traj).into_data().to_vec().unwrap();
    let patch = |(i, j): (usize, usize)| &pe[(i * w + j) * d..(i * w + j + 1) * d];
    for k in 0..d {
        let (token_diff, patch_diff) = (t[k] - t[d + k], patch(a)[k] - patch(b)[k]);
        assert!((token_diff - patch_diff).abs() < 1e-5, "dim {k}: {token_diff} vs {patch_diff}");
    }
    assert!(patch(a).iter().zip(patch(b)).any(|(x, y)| (x - y).abs() > 0.1));
}

/// The same weights and inputs on the CPU backend and on wgpu (a real GPU, or Mesa's lavapipe
/// Vulkan on the CPU in CI) give the same outputs within 1e-4, at the paper's sizes (D = 384,
/// 4 heads) in every encoder form.
#[cfg(feature = "wgpu")]
#[test]
fn cpu_and_wgpu_forward_agree() {
    use burn::backend::wgpu::Wgpu;
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};

    let Some(gpu) = wgpu_device() else { return };
    let cpu = Default::default();
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    for form in [EncoderForm::Interleaved, EncoderForm::Sequential, EncoderForm::SequentialRefined] {
        let config = DeperConfig::new(PATCH_DIM, VOCAB, 8, 5).with_encoder_form(form);
        assert_eq!((config.d_model, config.n_heads), (384, 4));
        // Both models load one record: parameters are initialised lazily, so a clone taken before
        // first use would draw its own random values.
        let bytes = recorder.record(config.init::<TestBackend>(&cpu).into_record(), ()).unwrap();
        let model: Deper<TestBackend> = config.init(&cpu).load_record(recorder.load(bytes.clone(), &cpu).unwrap());
        let model_gpu: Deper<Wgpu> = config.init(&gpu).load_record(recorder.load(bytes, &gpu).unwrap());
        let b = batch::<TestBackend>(4, 3, &cpu);
        let g = batch::<Wgpu>(4, 3, &gpu);
        let out = model.forward(b.patches, b.caption_ids, b.caption_mask, &b.traj);
        let out_gpu = model_gpu.forward(g.patches, g.caption_ids, g.caption_mask, &g.traj);
        let worst = |name: &str, a: Tensor<TestBackend, 2>, b: Vec<f32>| {
            let a: Vec<f32> = a.into_data().to_vec().unwrap();
            assert_eq!(a.len(), b.len(), "{name}");
            let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            println!("{form:?} {name}: max |cpu - wgpu| = {err:.2e}");
            assert!(err <= 1e-4, "{form:?} {name}: {err}");
        };
        let host = |t: Tensor<Wgpu, 2>| -> Vec<f32> { t.into_data().to_vec().unwrap() };
        worst("z_s", out.z_s, host(out_gpu.z_s));
        worst("z_scan", out.z_scan.flatten(1, 2), host(out_gpu.z_scan.flatten(1, 2)));
        worst("subject_logits", out.subject_logits, host(out_gpu.subject_logits));
        worst("pred_boxes", out.pred_boxes.flatten(1, 2), host(out_gpu.pred_boxes.flatten(1, 2)));
        worst("pred_valid_logits", out.pred_valid_logits, host(out_gpu.pred_valid_logits));
    }
}

/// burn's default wgpu device, or `None` after a loud SKIPPED line where the machine has no
/// adapter; with `DEPER_REQUIRE_GPU_TESTS=1` (CI) a missing adapter fails instead.
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Option<burn::backend::wgpu::WgpuDevice> {
    use burn::backend::wgpu::{Wgpu, WgpuDevice};

    let device = WgpuDevice::default();
    // burn sets the device up on first use and panics when no adapter is found.
    let probe =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Tensor::<Wgpu, 1>::zeros([1], &device).into_data()));
    match probe {
        Ok(_) => Some(device),
        Err(_) if std::env::var("DEPER_REQUIRE_GPU_TESTS").as_deref() == Ok("1") => {
            panic!("DEPER_REQUIRE_GPU_TESTS=1 but no wgpu adapter (install mesa-vulkan-drivers for lavapipe)")
        }
        Err(_) => {
            eprintln!("\n!!!!!!!! SKIPPED deper-model wgpu test: no wgpu adapter. Install mesa-vulkan-drivers (lavapipe) or set DEPER_REQUIRE_GPU_TESTS=1 to fail instead. !!!!!!!!\n");
            None
        }
    }
}

/// The RoI pooling kernel (shaders/roi_pool_weights.wgsl) against its host reference
/// [`crate::traj_tokens::roi_pool_weights`], on burn's wgpu backend and under `Autodiff`.
/// The module name keeps these in CI's `cpu_and_wgpu` filter.
#[cfg(feature = "wgpu")]
mod cpu_and_wgpu_roi {
    use burn::backend::wgpu::{Wgpu, WgpuDevice};
    use burn::module::{ModuleVisitor, Param};
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    use burn::tensor::backend::AutodiffBackend;

    use super::*;
    use crate::roi_kernel::{axis_bounds, try_device_weights};
    use crate::traj_tokens::{roi_pool_weights, TrajTokens, TrajTokensConfig};

    /// The patch grids: 448/16 patches, a single row, a non-square one, 512/16.
    const GRIDS: [(usize, usize); 4] = [(28, 28), (1, 10), (7, 5), (32, 32)];
    const BATCH: usize = 4;
    const STEPS: usize = 30;

    /// Host boxes and flags of one batch.
    struct Boxes {
        boxes: Vec<f32>,
        valid: Vec<bool>,
    }

    impl Boxes {
        fn batch<B: Backend>(&self, device: &B::Device) -> TrajectoryBatch<B> {
            let n = self.valid.len() / STEPS;
            TrajectoryBatch {
                boxes: Tensor::from_data(TensorData::new(self.boxes.clone(), [n, STEPS, 4]), device),
                durations: Tensor::zeros([n, STEPS], device),
                mask: Tensor::from_data(TensorData::new(self.valid.clone(), [n, STEPS]), device),
            }
        }
    }

    /// Padding as real batches have it: every sample its own length (30, 17, 1, 0 valid steps),
    /// with leftover boxes at the padded steps that must not show.
    fn valid_flags() -> Vec<bool> {
        [30, 17, 1, 0].iter().flat_map(|&len| (0..STEPS).map(move |s| s < len)).collect()
    }

    /// Random boxes, a third reaching outside [0, 1], some inverted or thin.
    fn random_boxes(rng: &mut Lcg) -> Boxes {
        let boxes = (0..BATCH * STEPS)
            .flat_map(|_| {
                let (x, y) = (rng.next_unit() * 1.4 - 0.2, rng.next_unit() * 1.4 - 0.2);
                let (w, h) = (rng.next_unit() * 0.6 - 0.05, rng.next_unit() * 0.6 - 0.05);
                [x, y, x + w, y + h]
            })
            .collect();
        Boxes { boxes, valid: valid_flags() }
    }

    /// Coordinates where a cell choice can flip on an axis of `n` cells: every boundary `k/n`,
    /// the points 1e-5 of a cell either side of it (the reference's epsilon) and the f32 values a
    /// few ulps around all of these, the `0.3·10 = 3.0000001` kind, and values outside [0, 1].
    fn edge_coords(n: usize) -> Vec<f32> {
        let mut coords = vec![-0.25, -0.0, 0.0, 0.1, 0.3, 0.7, 0.9, 1.0, 1.25];
        for k in 0..=n {
            for at in [k as f64, k as f64 - 1e-5, k as f64 + 1e-5] {
                let c = (at / n as f64) as f32;
                for ulps in -3i32..=3 {
                    coords.push(f32::from_bits(c.to_bits().wrapping_add_signed(ulps)));
                }
            }
        }
        coords.retain(|c| c.is_finite());
        coords
    }

    /// Batches whose boxes take every edge coordinate as each of `x1, y1, x2, y2`: proper boxes,
    /// points (`x1 = x2`), and inverted boxes.
    fn edge_boxes(h: usize, w: usize, rng: &mut Lcg) -> Vec<Boxes> {
        let (xs, ys) = (edge_coords(w), edge_coords(h));
        let pick = |rng: &mut Lcg, c: &[f32]| c[(rng.next_unit() * c.len() as f32) as usize % c.len()];
        let all = xs.len().max(ys.len());
        let mut batches = Vec::new();
        let mut next = 0;
        while next < all {
            let mut boxes = Vec::with_capacity(BATCH * STEPS * 4);
            for _ in 0..BATCH * STEPS {
                let (x1, y1) = (xs[next % xs.len()], ys[next % ys.len()]);
                let kind = next % 3;
                next += 1;
                let (x2, y2) = match kind {
                    0 => (pick(rng, &xs).max(x1), pick(rng, &ys).max(y1)),
                    1 => (x1, y1),
                    _ => (pick(rng, &xs).min(x1), pick(rng, &ys).min(y1)),
                };
                // The far corner also takes every edge coordinate: swap the roles every other box.
                boxes.extend(if next % 2 == 0 { [x2, y2, x1, y1] } else { [x1, y1, x2, y2] });
            }
            let valid = (0..BATCH * STEPS).map(|i| i % 29 != 28).collect();
            batches.push(Boxes { boxes, valid });
        }
        batches
    }

    /// The kernel's weights (through the dispatch in `TrajectoryBatch::roi_weights`) equal the
    /// host reference: the same cells, values within 1e-7 (WGSL's f32 division may be off by a
    /// few ulps).
    fn assert_kernel_matches(case: &str, data: &Boxes, h: usize, w: usize, device: &WgpuDevice) {
        let got: Vec<f32> = data.batch::<Wgpu>(device).roi_weights(h, w).into_data().to_vec().unwrap();
        let want = roi_pool_weights(&data.boxes, &data.valid, h, w);
        assert_eq!(got.len(), want.len(), "{case}");
        for (step, (g, r)) in got.chunks(h * w).zip(want.chunks(h * w)).enumerate() {
            let cells = |row: &[f32]| (0..h * w).filter(|&c| row[c] != 0.0).collect::<Vec<_>>();
            let bx = &data.boxes[step * 4..step * 4 + 4];
            assert_eq!(cells(g), cells(r), "{case} {h}×{w}, step {step}, box {bx:?}, valid {}", data.valid[step]);
            let err = g.iter().zip(r).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err <= 1e-7, "{case} {h}×{w}, step {step}, box {bx:?}: {err}");
        }
    }

    #[test]
    fn kernel_weights_equal_host_reference() {
        let Some(device) = wgpu_device() else { return };
        let mut rng = Lcg(11);
        let mut launches = 0;
        for (h, w) in GRIDS {
            for round in 0..3 {
                assert_kernel_matches(&format!("random round {round}"), &random_boxes(&mut rng), h, w, &device);
                launches += 1;
            }
            for (round, data) in edge_boxes(h, w, &mut rng).iter().enumerate() {
                assert_kernel_matches(&format!("edge round {round}"), data, h, w, &device);
                launches += 1;
            }
        }
        // The f32-rounding case of the reference's own test on a 1×10 grid: two columns.
        let data = Boxes { boxes: vec![0.1, 0.0, 0.3, 0.1], valid: vec![true] };
        let one: Vec<f32> = TrajectoryBatch::<Wgpu> {
            boxes: Tensor::from_data(TensorData::new(data.boxes.clone(), [1, 1, 4]), &device),
            durations: Tensor::zeros([1, 1], &device),
            mask: Tensor::from_data(TensorData::new(data.valid.clone(), [1, 1]), &device),
        }
        .roi_weights(1, 10)
        .into_data()
        .to_vec()
        .unwrap();
        assert_eq!(one, [0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        eprintln!("RoI kernel: {launches} batches on {} grids equal the host reference", GRIDS.len());
    }

    /// The kernel runs for `Wgpu` and `Autodiff<Wgpu>`, the host path for anything else.
    #[test]
    fn kernel_dispatch_by_backend() {
        let Some(device) = wgpu_device() else { return };
        let data = random_boxes(&mut Lcg(3));
        let gpu = data.batch::<Wgpu>(&device);
        assert!(try_device_weights(&gpu.boxes, &gpu.mask, 7, 5).is_some());
        let train = data.batch::<Autodiff<Wgpu>>(&device);
        let weights = try_device_weights(&train.boxes, &train.mask, 7, 5).expect("kernel under Autodiff");
        let want = roi_pool_weights(&data.boxes, &data.valid, 7, 5);
        let got: Vec<f32> = weights.into_data().to_vec().unwrap();
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(got.len() == want.len() && err <= 1e-7, "{err}");
        let cpu = data.batch::<TestBackend>(&Default::default());
        assert!(try_device_weights(&cpu.boxes, &cpu.mask, 7, 5).is_none());
    }

    /// The kernel's per-axis tables are the reference's cells: `cell_range` changes exactly at
    /// each bound (checked on the host, where both are plain Rust).
    #[test]
    fn axis_bounds_are_the_reference_boundaries() {
        for n in [1, 5, 7, 10, 28, 32] {
            let (first, last) = axis_bounds(n);
            for k in 1..n {
                let below = |v: f32| f32::from_bits(v.to_bits() - 1) as f64;
                assert!(crate::traj_tokens::cell_range(first[k] as f64, 1.0, n).0 >= k);
                assert!(crate::traj_tokens::cell_range(below(first[k]), 1.0, n).0 < k);
                assert!(crate::traj_tokens::cell_range(0.0, last[k] as f64, n).1 >= k);
                assert!(crate::traj_tokens::cell_range(0.0, below(last[k]), n).1 < k);
                // Near k/n, 1e-5 of a cell inside it.
                assert!((first[k] as f64 * n as f64 - (k as f64 - 1e-5)).abs() < 1e-5);
                assert!((last[k] as f64 * n as f64 - (k as f64 + 1e-5)).abs() < 1e-5);
            }
        }
    }

    /// `TrajTokens::roi_pool` with the kernel's weights equals the NdArray path within 1e-5.
    #[test]
    fn pooled_features_agree_with_ndarray() {
        let Some(device) = wgpu_device() else { return };
        let cpu = Default::default();
        let mut rng = Lcg(5);
        let c = 16;
        for (h, w) in GRIDS {
            let data = random_boxes(&mut rng);
            let patches: Vec<f32> = (0..BATCH * h * w * c).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
            let patches = TensorData::new(patches, [BATCH, h, w, c]);
            let pooled_cpu = TrajTokens::roi_pool(
                Tensor::<TestBackend, 4>::from_data(patches.clone(), &cpu),
                data.batch::<TestBackend>(&cpu).roi_weights(h, w),
            );
            let pooled_gpu = TrajTokens::roi_pool(
                Tensor::<Wgpu, 4>::from_data(patches, &device),
                data.batch::<Wgpu>(&device).roi_weights(h, w),
            );
            assert_eq!(pooled_gpu.dims(), [BATCH, STEPS, c]);
            let (a, b): (Vec<f32>, Vec<f32>) =
                (pooled_cpu.into_data().to_vec().unwrap(), pooled_gpu.into_data().to_vec().unwrap());
            let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(err <= 1e-5, "{h}×{w}: {err}");
            // Padded steps pool to zeros (the last sample is all padding).
            assert!(b[(BATCH - 1) * STEPS * c..].iter().all(|&v| v == 0.0));
        }
    }

    /// Gradients of every parameter of a module, by parameter path, flattened.
    struct Grads<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        path: Vec<String>,
        out: Vec<(String, Vec<f32>)>,
    }

    impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }

        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }

        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let grad = param.val().grad(self.grads).map(|g| g.into_data().convert::<f32>().to_vec().unwrap());
            self.out.push((self.path.join("."), grad.unwrap_or_default()));
        }
    }

    /// One backward pass through the token builder: parameter and patch gradients.
    fn token_grads<B: AutodiffBackend>(
        module: &TrajTokens<B>,
        patches: TensorData,
        target: TensorData,
        data: &Boxes,
        device: &B::Device,
    ) -> Vec<(String, Vec<f32>)> {
        let patches = Tensor::<B, 4>::from_data(patches, device).require_grad();
        let traj = data.batch::<B>(device);
        let tokens = module.forward(patches.clone(), &traj); // [batch, steps, d]
        let loss = (tokens * Tensor::from_data(target, device)).sum();
        let grads = loss.backward();
        let mut visitor = Grads::<B> { grads: &grads, path: vec![], out: vec![] };
        module.visit(&mut visitor);
        let patch_grad = patches.grad(&grads).expect("patch gradient").into_data().to_vec().unwrap();
        visitor.out.push(("patches".into(), patch_grad));
        visitor.out
    }

    /// Training on `Autodiff<Wgpu>` runs the kernel and gives the NdArray gradients within 1e-4,
    /// the projection's included.
    #[test]
    fn autodiff_wgpu_gradients_agree_with_ndarray() {
        let Some(device) = wgpu_device() else { return };
        let cpu = Default::default();
        let (h, w, c, d) = (7, 5, 8, 16);
        let config = TrajTokensConfig::new(c, d);
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = recorder.record(config.init::<TestBackend>(&cpu).into_record(), ()).unwrap();
        let module_cpu: TrajTokens<TrainBackend> =
            config.init(&cpu).load_record(recorder.load(bytes.clone(), &cpu).unwrap());
        let module_gpu: TrajTokens<Autodiff<Wgpu>> =
            config.init(&device).load_record(recorder.load(bytes, &device).unwrap());

        let mut rng = Lcg(9);
        let data = random_boxes(&mut rng);
        let patches: Vec<f32> = (0..BATCH * h * w * c).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
        let target: Vec<f32> = (0..BATCH * STEPS * d).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
        let (patches, target) =
            (TensorData::new(patches, [BATCH, h, w, c]), TensorData::new(target, [BATCH, STEPS, d]));
        let want = token_grads(&module_cpu, patches.clone(), target.clone(), &data, &cpu);
        let got = token_grads(&module_gpu, patches, target, &data, &device);

        let names: Vec<&str> = got.iter().map(|(name, _)| name.as_str()).collect();
        assert!(names.contains(&"proj.weight") && names.contains(&"patches"), "{names:?}");
        for ((name, g), (_, r)) in got.iter().zip(&want) {
            assert!(!r.is_empty() && g.len() == r.len(), "{name}: {} vs {}", g.len(), r.len());
            let err = g.iter().zip(r).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            eprintln!("gradient {name}: max |ndarray - wgpu| = {err:.2e}");
            assert!(err <= 1e-4, "{name}: {err}");
        }
    }
}
