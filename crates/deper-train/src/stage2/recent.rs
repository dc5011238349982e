//! The persona a training batch is made from (DEPER): the partner triplet's z_s averaged with the
//! subject's most recent z_s from earlier batches ([`super::Stage2Config::persona_shots`]), as
//! evaluation feeds the adapter means too.

use burn::prelude::*;
use deper_model::SubjectMemoryBank;
use std::collections::BTreeMap;

use crate::{Result, TrainError};

/// The last `keep` raw (unnormalised) z_s of each subject, newest last: the detached part of the
/// mean a training persona is made from ([`super::Stage2Config::persona_shots`]).
#[derive(Debug, Clone, Default)]
pub struct RecentEmbeddings {
    keep: usize,
    by_subject: BTreeMap<usize, std::collections::VecDeque<Vec<f32>>>,
}

impl RecentEmbeddings {
    pub fn new(keep: usize) -> Self {
        Self { keep, by_subject: BTreeMap::new() }
    }

    /// Adds one embedding of subject `label`, dropping that subject's oldest beyond `keep`.
    pub fn push(&mut self, z: &[f32], label: usize) {
        if self.keep == 0 {
            return;
        }
        let queue = self.by_subject.entry(label).or_default();
        queue.push_back(z.to_vec());
        while queue.len() > self.keep {
            queue.pop_front();
        }
    }

    /// `(sum of the stored vectors, how many)` for `label`, or `None` when it has none.
    pub fn sum(&self, label: usize) -> Option<(Vec<f32>, usize)> {
        let queue = self.by_subject.get(&label).filter(|q| !q.is_empty())?;
        let mut sum = vec![0.0f32; queue[0].len()];
        for v in queue {
            sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        }
        Some((sum, queue.len()))
    }

    /// Per row `i`: `(z_i + Σ recent z of labels[i]) / (1 + count)`, with gradient through `z` only.
    pub fn mean_with<B: Backend>(&self, z: Tensor<B, 2>, labels: &[usize]) -> Tensor<B, 2> {
        let [n, d] = z.dims();
        let (mut scale, mut offset) = (Vec::with_capacity(n), Vec::with_capacity(n * d));
        for &label in labels {
            match self.sum(label).filter(|(s, _)| s.len() == d) {
                Some((sum, count)) => {
                    let w = 1.0 / (1 + count) as f32;
                    scale.push(w);
                    offset.extend(sum.iter().map(|x| x * w));
                }
                None => {
                    scale.push(1.0);
                    offset.extend(std::iter::repeat_n(0.0, d));
                }
            }
        }
        let device = z.device();
        let scale = Tensor::<B, 2>::from_data(TensorData::new(scale, [n, 1]), &device);
        let offset = Tensor::<B, 2>::from_data(TensorData::new(offset, [n, d]), &device);
        z * scale + offset
    }
}

/// Adds a batch of z_s `[n, d]` (one label per row) to the contrastive bank and to the recent
/// embeddings, read back from the device once for both.
pub(super) fn remember<B: Backend>(
    z: Tensor<B, 2>,
    labels: &[usize],
    bank: &mut SubjectMemoryBank,
    recent: &mut RecentEmbeddings,
) -> Result<()> {
    let [n, d] = z.dims();
    if n != labels.len() {
        return Err(TrainError::Config(format!("{n} embeddings but {} labels", labels.len())));
    }
    let values =
        z.detach().into_data().convert::<f32>().to_vec::<f32>().map_err(|e| TrainError::Config(format!("{e:?}")))?;
    for (row, &label) in values.chunks_exact(d.max(1)).zip(labels) {
        bank.push(row, label);
        recent.push(row, label);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type B = Autodiff<NdArray>;

    fn rows(t: Tensor<B, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    #[test]
    fn training_personas_average_the_subjects_recent_embeddings() {
        let device = Default::default();
        let mut recent = RecentEmbeddings::new(2);
        let mut bank = SubjectMemoryBank::new(16);
        // Subject 0 gets three vectors; only the last two stay. Subject 1 gets one.
        let seen = Tensor::<B, 2>::from_data(
            TensorData::new(vec![100.0f32, 100.0, 1.0, 2.0, 3.0, 4.0, 10.0, 20.0], [4, 2]),
            &device,
        );
        remember(seen, &[0, 0, 0, 1], &mut bank, &mut recent).unwrap();
        // The contrastive bank got the same batch (latest per subject + all four in its FIFO).
        assert_eq!(bank.len(), 2 + 4);
        assert_eq!(recent.sum(0), Some((vec![4.0, 6.0], 2)));
        assert_eq!(recent.sum(1), Some((vec![10.0, 20.0], 1)));
        assert_eq!(recent.sum(2), None);

        let z = Tensor::<B, 2>::from_data(TensorData::new(vec![7.0f32, 9.0, 2.0, 2.0, 5.0, 5.0], [3, 2]), &device)
            .require_grad();
        let mean = recent.mean_with(z.clone(), &[0, 1, 2]);
        let got = rows(mean.clone());
        // (z + 4, 6 … ) / 3; (z + 10, 20) / 2; a subject with nothing stored keeps its own z.
        let want = [11.0 / 3.0, 15.0 / 3.0, 6.0, 11.0, 5.0, 5.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        // The gradient reaches z scaled by its weight in the mean; the stored vectors get none.
        let grads = mean.sum().backward();
        let dz = rows(z.grad(&grads).map(Tensor::from_inner).unwrap());
        let want = [1.0 / 3.0, 1.0 / 3.0, 0.5, 0.5, 1.0, 1.0];
        for (g, w) in dz.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{dz:?} vs {want:?}");
        }

        // persona_shots = 1 keeps nothing: the persona is the partner's z_s alone.
        let mut none = RecentEmbeddings::new(0);
        none.push(&[1.0, 1.0], 0);
        assert_eq!(none.sum(0), None);
        assert!(remember(Tensor::<B, 2>::ones([2, 2], &device), &[0], &mut bank, &mut recent).is_err());
    }
}
