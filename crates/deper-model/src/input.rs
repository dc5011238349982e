//! Padded model inputs from host data: patch features, caption token ids and trajectories.
//!
//! Training and evaluation (deper-train's `make_batch`) and the browser (deper-web) build
//! [`Deper::forward`](crate::Deper::forward)'s inputs with [`ModelInput::from_host`], so both
//! pad captions and trajectories the same way.

use burn::prelude::*;
use deper_core::Trajectory;

use crate::traj_tokens::TrajectoryBatch;

/// One batch of model inputs on a device.
#[derive(Debug, Clone)]
pub struct ModelInput<B: Backend> {
    /// `[batch, h, w, c]`
    pub patches: Tensor<B, 4>,
    /// `[batch, len]`, `len` = the longest caption (at least 1), zero-padded.
    pub caption_ids: Tensor<B, 2, Int>,
    /// `[batch, len]`, `true` = token.
    pub caption_mask: Tensor<B, 2, Bool>,
    /// Padded to the longest trajectory (cut to 30 steps), see [`TrajectoryBatch::from_trajectories`].
    pub trajectory: TrajectoryBatch<B>,
}

impl<B: Backend> ModelInput<B> {
    /// Packs `n` samples: `patches` holds their `[h, w, c]` feature grids (`grid`) one after the
    /// other, `captions[i]` and `trajectories[i]` belong to sample `i`.
    ///
    /// Errors (instead of panicking in tensor construction) when the lengths disagree.
    pub fn from_host(
        patches: Vec<f32>,
        grid: [usize; 3],
        captions: &[&[u32]],
        trajectories: &[Trajectory],
        device: &B::Device,
    ) -> Result<Self, String> {
        let n = captions.len();
        let [h, w, c] = grid;
        if trajectories.len() != n {
            return Err(format!("{n} captions but {} trajectories", trajectories.len()));
        }
        if patches.len() != n * h * w * c {
            return Err(format!(
                "{} feature values for {n} samples of grid {grid:?} (expected {})",
                patches.len(),
                n * h * w * c
            ));
        }
        let len = captions.iter().map(|ids| ids.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![0i64; n * len];
        let mut mask = vec![false; n * len];
        for (b, caption) in captions.iter().enumerate() {
            for (i, &id) in caption.iter().enumerate() {
                ids[b * len + i] = i64::from(id);
                mask[b * len + i] = true;
            }
        }
        Ok(Self {
            patches: Tensor::from_data(TensorData::new(patches, [n, h, w, c]), device),
            caption_ids: Tensor::from_data(TensorData::new(ids, [n, len]), device),
            caption_mask: Tensor::from_data(TensorData::new(mask, [n, len]), device),
            trajectory: TrajectoryBatch::from_trajectories(trajectories, device),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deper_core::{AttentionStep, BBox, TrajectorySource};

    type TestBackend = burn::backend::NdArray;

    #[test]
    fn pads_captions_and_checks_lengths() {
        let device = Default::default();
        let step =
            AttentionStep { bbox: BBox::from_corners(0.1, 0.1, 0.4, 0.4), duration: 0.3, start: None, words: vec![] };
        let t = Trajectory { source: TrajectorySource::Mouse, steps: vec![step; 2] };
        let input = ModelInput::<TestBackend>::from_host(
            vec![0.5; 2 * 2 * 3 * 4],
            [2, 3, 4],
            &[&[5, 6, 7], &[8]],
            &[t.clone(), t.clone()],
            &device,
        )
        .unwrap();
        assert_eq!(input.patches.dims(), [2, 2, 3, 4]);
        let ids: Vec<i64> = input.caption_ids.into_data().to_vec().unwrap();
        assert_eq!(ids, [5, 6, 7, 8, 0, 0]);
        let mask: Vec<bool> = input.caption_mask.into_data().to_vec().unwrap();
        assert_eq!(mask, [true, true, true, true, false, false]);
        assert_eq!(input.trajectory.boxes.dims(), [2, 2, 4]);

        let err = ModelInput::<TestBackend>::from_host(vec![0.0; 5], [2, 3, 4], &[&[1]], &[t], &device).unwrap_err();
        assert!(err.contains("5 feature values"), "{err}");
        let err = ModelInput::<TestBackend>::from_host(vec![0.0; 24], [2, 3, 4], &[&[1]], &[], &device).unwrap_err();
        assert!(err.contains("0 trajectories"), "{err}");
    }
}
