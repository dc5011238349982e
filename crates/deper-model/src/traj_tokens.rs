//! Trajectory tokens: one token per attention step of a viewing trajectory.
//!
//! DEPER (Xue et al., CVPR 2026, arXiv 2512.06662) turns each step of a
//! trajectory (a box and a dwell time) into a token:
//!
//! `t_s = W·RoIMean(V, box_s) + PE₂(centre_s) + E_order[s] + PE₁(100·duration_s)`
//!
//! - **RoIMean**: mean of the patch features whose patch cell overlaps the box (the authors'
//!   `_roi_pool_tokens_xyxy`, `src/model.py` at commit 1526bed). Cell `(i, j)` of an `H×W`
//!   grid covers `[j/W, (j+1)/W] × [i/H, (i+1)/H]`; it is included when it overlaps the box
//!   with positive area, and a box smaller than a cell (even a point) still takes its cell.
//!   The pooling is a weights matrix `[B, S, H·W]` (rows summing to 1) followed by a batched
//!   matmul. With the `wgpu` feature, on burn's `Wgpu` and `Autodiff<Wgpu>` backends, the
//!   weights are built on the device by `shaders/roi_pool_weights.wgsl` (see `roi_kernel`);
//!   on any other backend they are built on the host by [`roi_pool_weights`], the plain
//!   reference the kernel is tested against, from the boxes read back from the device.
//! - **PE₂**: 2-D sinusoidal encoding of the box centre in patch-grid units
//!   (`cx·W`, `cy·H`), `D/2` dimensions for x and `D/2` for y. The authors index a table with
//!   the floored grid cell; this uses the continuous position.
//! - **E_order**: learned embedding of the step index (30 positions, [`MAX_STEPS`]).
//! - **PE₁**: sinusoidal encoding of the dwell time in centiseconds.

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use deper_core::{Trajectory, MAX_STEPS};

use crate::layers::sinusoidal;

/// A padded batch of trajectories.
#[derive(Debug, Clone)]
pub struct TrajectoryBatch<B: Backend> {
    /// `[batch, steps, 4]`, normalised `x1, y1, x2, y2`; zeros at padded steps.
    pub boxes: Tensor<B, 3>,
    /// `[batch, steps]`, dwell time in seconds; zero at padded steps.
    pub durations: Tensor<B, 2>,
    /// `[batch, steps]`, `true` = valid step.
    pub mask: Tensor<B, 2, Bool>,
}

impl<B: Backend> TrajectoryBatch<B> {
    /// Packs trajectories into padded tensors, keeping at most [`MAX_STEPS`] steps each.
    ///
    /// `steps` is the padded length: the longest trajectory (cut to 30), at least 1;
    /// [`TrajectoryBatch::from_trajectories_padded`] fixes it instead.
    pub fn from_trajectories(trajectories: &[Trajectory], device: &B::Device) -> Self {
        let steps = trajectories.iter().map(|t| t.steps.len().min(MAX_STEPS)).max().unwrap_or(0).max(1);
        Self::from_trajectories_padded(trajectories, steps, device)
    }

    /// Packs trajectories into tensors padded (or cut) to exactly `steps` steps.
    pub fn from_trajectories_padded(trajectories: &[Trajectory], steps: usize, device: &B::Device) -> Self {
        let batch = trajectories.len();
        let (boxes, durations, mask) = pack(trajectories, steps);
        Self {
            boxes: Tensor::from_data(TensorData::new(boxes, [batch, steps, 4]), device),
            durations: Tensor::from_data(TensorData::new(durations, [batch, steps]), device),
            mask: Tensor::from_data(TensorData::new(mask, [batch, steps]), device),
        }
    }

    /// The RoI pooling weights [`TrajectoryBatch::roi_weights`] computes for
    /// `from_trajectories_padded(trajectories, steps)`, built from the trajectories on the host
    /// instead of reading the device back (a synchronous read is impossible on WebGPU).
    ///
    /// # Shapes
    /// - output: `[batch, steps, h·w]`
    pub fn host_roi_weights(
        trajectories: &[Trajectory],
        steps: usize,
        h: usize,
        w: usize,
        device: &B::Device,
    ) -> Tensor<B, 3> {
        let (boxes, _, mask) = pack(trajectories, steps);
        let weights = roi_pool_weights(&boxes, &mask, h, w);
        Tensor::from_data(TensorData::new(weights, [trajectories.len(), steps, h * w]), device)
    }

    /// RoI mean-pooling weights on an `h×w` patch grid (see [`roi_pool_weights`]): on the device
    /// by the WGSL kernel for `Wgpu` and `Autodiff<Wgpu>` with the `wgpu` feature (no gradient
    /// flows into them), otherwise on the host, reading the boxes and mask back from the device.
    ///
    /// # Shapes
    /// - output: `[batch, steps, h·w]`
    pub fn roi_weights(&self, h: usize, w: usize) -> Tensor<B, 3> {
        #[cfg(feature = "wgpu")]
        if let Some(weights) = crate::roi_kernel::try_device_weights(&self.boxes, &self.mask, h, w) {
            return weights;
        }
        let [batch, steps, _] = self.boxes.dims();
        let boxes: Vec<f32> = self.boxes.to_data().convert::<f32>().to_vec().expect("boxes read back as f32");
        // Backends store bools differently (CUDA as u8): read the mask back as integers.
        let valid: Vec<bool> = self
            .mask
            .clone()
            .int()
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .expect("mask read back as integers")
            .into_iter()
            .map(|v| v != 0)
            .collect();
        let weights = roi_pool_weights(&boxes, &valid, h, w);
        Tensor::from_data(TensorData::new(weights, [batch, steps, h * w]), &self.boxes.device())
    }
}

/// Host buffers of `trajectories` padded (or cut) to `steps` steps: boxes `[batch·steps·4]`
/// (`f32`, as on the device), durations and the valid mask `[batch·steps]`.
fn pack(trajectories: &[Trajectory], steps: usize) -> (Vec<f32>, Vec<f32>, Vec<bool>) {
    let batch = trajectories.len();
    let mut boxes = vec![0f32; batch * steps * 4];
    let mut durations = vec![0f32; batch * steps];
    let mut mask = vec![false; batch * steps];
    for (b, traj) in trajectories.iter().enumerate() {
        for (s, step) in traj.steps.iter().take(steps.min(MAX_STEPS)).enumerate() {
            let i = b * steps + s;
            for (k, v) in step.bbox.to_array().into_iter().enumerate() {
                boxes[i * 4 + k] = v as f32;
            }
            durations[i] = step.duration as f32;
            mask[i] = true;
        }
    }
    (boxes, durations, mask)
}

/// Range of grid cells `[lo, hi]` along one axis of `n` cells that overlap `[a, b]` (normalised)
/// with positive length (above 1e-5 of a cell); a degenerate or sub-cell interval takes the
/// cell it lies in.
pub(crate) fn cell_range(a: f64, b: f64, n: usize) -> (usize, usize) {
    // Overlaps under 1e-5 of a cell count as none, so that f32 rounding (0.3f32·10 =
    // 3.0000001) does not pull in a neighbouring cell.
    const EPS: f64 = 1e-5;
    let (a, b) = (a.clamp(0.0, 1.0) * n as f64, b.clamp(0.0, 1.0) * n as f64);
    let last = n as f64 - 1.0;
    let lo = (a + EPS).floor().clamp(0.0, last);
    let hi = ((b - EPS).ceil() - 1.0).clamp(lo, last);
    (lo as usize, hi as usize)
}

/// Host-side RoI mean-pooling weights on an `h×w` patch grid.
///
/// `boxes` holds `x1, y1, x2, y2` per step (`[batch·steps·4]`, row-major), `valid` one flag per
/// step. Returns `[batch·steps·h·w]` weights: for a valid step, `1/n` on each of the `n` cells
/// overlapping its box (row-major cell index `i·w + j`), for a padded step all zeros.
pub fn roi_pool_weights(boxes: &[f32], valid: &[bool], h: usize, w: usize) -> Vec<f32> {
    let mut weights = vec![0f32; valid.len() * h * w];
    for (step, (bx, &ok)) in boxes.chunks_exact(4).zip(valid).enumerate() {
        if !ok {
            continue;
        }
        let (j0, j1) = cell_range(bx[0] as f64, bx[2] as f64, w);
        let (i0, i1) = cell_range(bx[1] as f64, bx[3] as f64, h);
        let share = 1.0 / ((j1 - j0 + 1) * (i1 - i0 + 1)) as f32;
        let row = &mut weights[step * h * w..(step + 1) * h * w];
        for i in i0..=i1 {
            for j in j0..=j1 {
                row[i * w + j] = share;
            }
        }
    }
    weights
}

/// Config of [`TrajTokens`].
#[derive(Config, Debug)]
pub struct TrajTokensConfig {
    /// Channels of the patch features (`C`).
    pub patch_dim: usize,
    /// Token width (`D`, a multiple of 4).
    pub d_model: usize,
    /// Learned order positions.
    #[config(default = 30)]
    pub max_steps: usize,
}

/// Trajectory token builder; see the module docs.
#[derive(Module, Debug)]
pub struct TrajTokens<B: Backend> {
    proj: Linear<B>,
    order: Embedding<B>,
    d_model: usize,
}

impl TrajTokensConfig {
    /// Builds the module.
    ///
    /// # Panics
    /// If `d_model` is not a multiple of 4 (each half of the 2-D encoding interleaves sin/cos).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TrajTokens<B> {
        assert!(self.d_model % 4 == 0, "d_model must be a multiple of 4, got {}", self.d_model);
        TrajTokens {
            proj: LinearConfig::new(self.patch_dim, self.d_model).init(device),
            order: EmbeddingConfig::new(self.max_steps, self.d_model).init(device),
            d_model: self.d_model,
        }
    }
}

impl<B: Backend> TrajTokens<B> {
    /// RoI mean of the patch features for every step: `weights · patches`.
    ///
    /// # Shapes
    /// - `patches`: `[batch, h, w, c]`
    /// - `weights`: `[batch, steps, h·w]`, from [`TrajectoryBatch::roi_weights`]
    /// - output: `[batch, steps, c]` (zeros at padded steps)
    pub fn roi_pool(patches: Tensor<B, 4>, weights: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, h, w, c] = patches.dims();
        weights.matmul(patches.reshape([batch, h * w, c])) // [batch, steps, c]
    }

    /// Trajectory tokens, with the pooling weights built from `traj`'s boxes by
    /// [`TrajectoryBatch::roi_weights`] (on the device for burn's wgpu backend, otherwise read
    /// back to the host; see [`TrajTokens::forward_with_weights`] to avoid that).
    ///
    /// # Shapes
    /// - `patches`: `[batch, h, w, c]`
    /// - `traj.boxes`: `[batch, steps, 4]`, `traj.durations`, `traj.mask`: `[batch, steps]`
    ///   with `steps <= max_steps`
    /// - output: `[batch, steps, d_model]`
    pub fn forward(&self, patches: Tensor<B, 4>, traj: &TrajectoryBatch<B>) -> Tensor<B, 3> {
        let [_, h, w, _] = patches.dims();
        let weights = traj.roi_weights(h, w); // [batch, steps, h·w]
        self.forward_with_weights(patches, weights, traj)
    }

    /// Trajectory tokens with precomputed pooling weights (e.g. from [`roi_pool_weights`] on
    /// host data, where reading the device back is not possible, as with WebGPU in a browser).
    ///
    /// # Shapes
    /// - `patches`: `[batch, h, w, c]`, `weights`: `[batch, steps, h·w]`
    /// - `traj`: as in [`TrajTokens::forward`]
    /// - output: `[batch, steps, d_model]`
    pub fn forward_with_weights(
        &self,
        patches: Tensor<B, 4>,
        weights: Tensor<B, 3>,
        traj: &TrajectoryBatch<B>,
    ) -> Tensor<B, 3> {
        let [batch, h, w, _] = patches.dims();
        let [_, steps, _] = traj.boxes.dims();
        let d = self.d_model;
        let pooled = Self::roi_pool(patches, weights); // [batch, steps, c]
        let content = self.proj.forward(pooled); // [batch, steps, d]

        let cx = (traj.boxes.clone().slice_dim(2, 0..1) + traj.boxes.clone().slice_dim(2, 2..3))
            .reshape([batch, steps])
            .mul_scalar(0.5 * w as f64); // [batch, steps], patch-grid units
        let cy = (traj.boxes.clone().slice_dim(2, 1..2) + traj.boxes.clone().slice_dim(2, 3..4))
            .reshape([batch, steps])
            .mul_scalar(0.5 * h as f64);
        let spatial = Tensor::cat(vec![sinusoidal(cx, d / 2), sinusoidal(cy, d / 2)], 2); // [batch, steps, d]

        let order = self.order.weight.val().slice_dim(0, 0..steps).reshape([1, steps, d]); // [1, steps, d]
        let duration = sinusoidal(traj.durations.clone().mul_scalar(100.0), d); // [batch, steps, d]

        content + spatial + order + duration
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deper_core::{AttentionStep, BBox, TrajectorySource};

    type TestBackend = burn::backend::NdArray;

    fn step(x1: f64, y1: f64, x2: f64, y2: f64) -> AttentionStep {
        AttentionStep { bbox: BBox { x1, y1, x2, y2 }, duration: 0.25, start: None, words: vec![] }
    }

    /// 4×4 grid with one channel holding the cell index `i·4 + j`.
    fn index_grid(device: &burn::backend::ndarray::NdArrayDevice) -> Tensor<TestBackend, 4> {
        let values: Vec<f32> = (0..16).map(|v| v as f32).collect();
        Tensor::from_data(TensorData::new(values, [1, 4, 4, 1]), device)
    }

    #[test]
    fn roi_pool_matches_hand_computed_means() {
        let device = Default::default();
        let traj = Trajectory {
            source: TrajectorySource::Mouse,
            steps: vec![
                // Exactly cells (1,1), (1,2), (2,1), (2,2): mean of 5, 6, 9, 10 = 7.5.
                step(0.25, 0.25, 0.75, 0.75),
                // Straddles: x in [0.2, 0.3] → columns 0, 1; y in [0.6, 0.9] → rows 2, 3:
                // cells 8, 9, 12, 13 → mean 10.5.
                step(0.2, 0.6, 0.3, 0.9),
                // Tiny box inside cell (3, 0) = 12.
                step(0.01, 0.8, 0.02, 0.81),
                // A point on no boundary, inside cell (0, 3) = 3.
                step(0.9, 0.1, 0.9, 0.1),
            ],
        };
        let batch = TrajectoryBatch::<TestBackend>::from_trajectories(&[traj], &device);
        let weights = batch.roi_weights(4, 4);
        let pooled: Vec<f32> = TrajTokens::roi_pool(index_grid(&device), weights).into_data().to_vec().unwrap();
        let expected = [7.5f32, 10.5, 12.0, 3.0];
        assert_eq!(pooled.len(), expected.len());
        for (got, want) in pooled.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "got {got}, want {want}");
        }
    }

    #[test]
    fn roi_weights_rows_sum_to_one_and_padding_is_zero() {
        let boxes = [0.0, 0.0, 1.0, 1.0, 0.3, 0.3, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0];
        let w = roi_pool_weights(&boxes, &[true, true, false], 4, 4);
        let sums: Vec<f32> = w.chunks(16).map(|r| r.iter().sum()).collect();
        assert!((sums[0] - 1.0).abs() < 1e-6 && (sums[1] - 1.0).abs() < 1e-6 && sums[2] == 0.0);
        assert!(w[..16].iter().all(|&v| (v - 1.0 / 16.0).abs() < 1e-7));
        assert_eq!(w[16 + 5], 1.0); // 0.3·4 = 1.2 → cell (1, 1)
                                    // f32 rounding: 0.3f32·10 = 3.0000001 must not reach column 3 of a 10-wide grid.
        let w = roi_pool_weights(&[0.1, 0.0, 0.3, 0.1], &[true], 1, 10);
        assert_eq!(w.iter().filter(|&&v| v > 0.0).count(), 2);
    }

    #[test]
    fn pack_cuts_to_thirty_steps_and_pads() {
        let device = Default::default();
        let long = Trajectory { source: TrajectorySource::Gaze, steps: vec![step(0.1, 0.1, 0.2, 0.2); 40] };
        let short = Trajectory { source: TrajectorySource::Gaze, steps: vec![step(0.1, 0.1, 0.2, 0.2); 3] };
        let batch = TrajectoryBatch::<TestBackend>::from_trajectories(&[long, short], &device);
        assert_eq!(batch.boxes.dims(), [2, 30, 4]);
        assert_eq!(batch.durations.dims(), [2, 30]);
        let mask: Vec<bool> = batch.mask.into_data().to_vec().unwrap();
        assert_eq!(mask.iter().filter(|&&m| m).count(), 33);
        assert!(mask[30..33].iter().all(|&m| m) && !mask[33]);
    }

    #[test]
    fn tokens_have_model_width() {
        let device = Default::default();
        let traj = Trajectory { source: TrajectorySource::Mouse, steps: vec![step(0.1, 0.1, 0.6, 0.4); 5] };
        let batch = TrajectoryBatch::<TestBackend>::from_trajectories(&[traj.clone(), traj], &device);
        let module = TrajTokensConfig::new(6, 32).init::<TestBackend>(&device);
        let patches = Tensor::<TestBackend, 4>::ones([2, 4, 4, 6], &device);
        let tokens = module.forward(patches, &batch);
        assert_eq!(tokens.dims(), [2, 5, 32]);
    }
}
