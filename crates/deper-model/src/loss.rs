//! Stage-1 losses of DEPER (Xue et al., CVPR 2026, arXiv 2512.06662).
//!
//! `L₁ = w_traj·L_traj + w_cls·L_cls + w_con·L_con` (weights 1, 1, 0.1 by default):
//! - `L_cls`: cross-entropy of the subject logits.
//! - `L_con`: supervised contrastive loss (Khosla et al., 2020) of the subject embeddings
//!   against the batch and a [`SubjectMemoryBank`] (see [`supcon_loss`]).
//! - `L_traj`: Smooth-L1 (β = 1/9) on the four box coordinates of the valid steps (mean over
//!   valid coordinates) plus BCE-with-logits on validity over all decoded positions.
//!
//! The bank and the SupCon form follow `SubjectMemoryBank` and `supervised_contrastive_loss` in
//! the authors' `src/loss.py` (commit 1526bed), except that here the batch itself (minus the
//! anchor) joins the contrast set, as in SupCon. The authors' box loss sums the four coordinates
//! per step before averaging over valid steps, i.e. it is 4× the mean used here.

use std::collections::{BTreeMap, VecDeque};

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::model::DeperOutput;
use crate::traj_tokens::TrajectoryBatch;

/// Latest embedding per subject plus a FIFO of recent embeddings, all detached and
/// L2-normalised, kept on the host outside the autodiff graph.
#[derive(Debug, Clone)]
pub struct SubjectMemoryBank {
    capacity: usize,
    latest: BTreeMap<usize, Vec<f32>>,
    fifo: VecDeque<(Vec<f32>, usize)>,
}

impl SubjectMemoryBank {
    /// An empty bank whose FIFO keeps at most `capacity` vectors (the authors use 4096).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, latest: BTreeMap::new(), fifo: VecDeque::new() }
    }

    /// Adds one vector (normalised here) for `label`.
    pub fn push(&mut self, vector: &[f32], label: usize) {
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        let v: Vec<f32> = vector.iter().map(|x| x / norm).collect();
        self.latest.insert(label, v.clone());
        if self.capacity > 0 {
            self.fifo.push_back((v, label));
            while self.fifo.len() > self.capacity {
                self.fifo.pop_front();
            }
        }
    }

    /// Adds a batch of embeddings `[n, d]` (detached, read back to the host).
    ///
    /// # Panics
    /// If `labels.len()` differs from `n`.
    pub fn update<B: Backend>(&mut self, embeddings: Tensor<B, 2>, labels: &[usize]) {
        let [n, d] = embeddings.dims();
        assert_eq!(n, labels.len(), "one label per embedding");
        let data: Vec<f32> =
            embeddings.detach().into_data().convert::<f32>().to_vec().expect("embeddings read back as f32");
        for (row, &label) in data.chunks_exact(d.max(1)).zip(labels) {
            self.push(row, label);
        }
    }

    /// Number of vectors in the contrast set (latest per subject + FIFO).
    pub fn len(&self) -> usize {
        self.latest.len() + self.fifo.len()
    }

    /// Whether the bank holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All vectors (latest per subject, by subject, then the FIFO, oldest first) with labels.
    pub fn entries(&self) -> impl Iterator<Item = (&[f32], usize)> {
        self.latest.iter().map(|(&l, v)| (v.as_slice(), l)).chain(self.fifo.iter().map(|(v, l)| (v.as_slice(), *l)))
    }
}

/// Cross-entropy of `logits` `[n, classes]` against class indices; mean over `n`.
///
/// # Panics
/// If a target is not below `classes`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: &[usize]) -> Tensor<B, 1> {
    let [n, classes] = logits.dims();
    let mut one_hot = vec![0f32; n * classes];
    for (i, &t) in targets.iter().enumerate() {
        one_hot[i * classes + t] = 1.0;
    }
    let one_hot = Tensor::<B, 2>::from_data(TensorData::new(one_hot, [n, classes]), &logits.device());
    (log_softmax(logits, 1) * one_hot).sum_dim(1).mean().neg()
}

/// Supervised contrastive loss of batch embeddings against the batch and a memory bank.
///
/// With `z_a` the L2-normalised anchors (the batch), the contrast set `K = batch ∪ bank`,
/// cosine similarity `s_ak = z_a·z_k` and temperature `τ`:
///
/// `L = mean_{a : |P(a)| ≥ 1} −1/|P(a)| Σ_{p∈P(a)} log( exp(s_ap/τ) / Σ_{k∈K, k≠a} exp(s_ak/τ) )`
///
/// where `P(a)` holds the same-subject entries of `K` other than `a` itself. Gradients flow
/// through the anchors (also where they act as batch keys), not through the bank. Returns a
/// zero when no anchor has a positive. Update the bank after computing this loss.
///
/// # Shapes
/// - `z`: `[n, d]`; output `[1]`
pub fn supcon_loss<B: Backend>(z: Tensor<B, 2>, labels: &[usize], bank: &SubjectMemoryBank, tau: f64) -> Tensor<B, 1> {
    let [n, d] = z.dims();
    let device = z.device();
    let z = z.clone() / z.powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12); // [n, d]

    let (bank_vecs, bank_labels): (Vec<&[f32]>, Vec<usize>) = bank.entries().unzip();
    let m = bank_vecs.len();
    let keys = if m == 0 {
        z.clone()
    } else {
        let flat: Vec<f32> = bank_vecs.concat();
        Tensor::cat(vec![z.clone(), Tensor::from_data(TensorData::new(flat, [m, d]), &device)], 0)
    }; // [n + m, d]
    let key_labels: Vec<usize> = labels.iter().copied().chain(bank_labels).collect();
    let k = n + m;

    // Host-side masks: the anchor itself, and positives with their per-anchor weights.
    let mut self_mask = vec![false; n * k];
    let mut weights = vec![0f32; n * k];
    let counts: Vec<usize> = (0..n).map(|a| (0..k).filter(|&j| j != a && key_labels[j] == labels[a]).count()).collect();
    let n_valid = counts.iter().filter(|&&c| c > 0).count();
    if n_valid == 0 {
        return Tensor::zeros([1], &device);
    }
    for a in 0..n {
        self_mask[a * k + a] = true;
        for j in 0..k {
            if j != a && key_labels[j] == labels[a] {
                weights[a * k + j] = 1.0 / (counts[a] * n_valid) as f32;
            }
        }
    }
    let self_mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(self_mask, [n, k]), &device);
    let weights = Tensor::<B, 2>::from_data(TensorData::new(weights, [n, k]), &device);

    let logits = z.matmul(keys.transpose()).div_scalar(tau).mask_fill(self_mask, -1e9); // [n, k]
    let max = logits.clone().max_dim(1).detach(); // [n, 1]
    let log_norm = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max; // [n, 1]
    let log_prob = logits - log_norm; // [n, k]
    (log_prob * weights).sum().neg()
}

/// Smooth-L1 on the box coordinates of valid steps, mean over valid coordinates.
///
/// Per coordinate with `δ = |pred − target|`: `0.5·δ²/β` if `δ < β`, else `δ − 0.5·β`.
///
/// # Shapes
/// - `pred`, `target`: `[batch, steps, 4]`, `valid`: `[batch, steps]` (`true` = valid); out `[1]`
pub fn box_smooth_l1<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
    valid: Tensor<B, 2, Bool>,
    beta: f64,
) -> Tensor<B, 1> {
    let [batch, steps, _] = pred.dims();
    let delta = (pred - target).abs(); // [batch, steps, 4]
    let quadratic = delta.clone().powi_scalar(2).mul_scalar(0.5 / beta);
    let linear = delta.clone().sub_scalar(0.5 * beta);
    let per_coord = linear.mask_where(delta.lower_elem(beta), quadratic); // [batch, steps, 4]
    let weight = valid.float().reshape([batch, steps, 1]).expand([batch, steps, 4]); // [batch, steps, 4]
    (per_coord * weight.clone()).sum() / weight.sum().clamp_min(1.0)
}

/// Binary cross-entropy with logits, mean over all elements:
/// `max(x, 0) − x·y + log(1 + exp(−|x|))`.
///
/// # Shapes
/// - `logits`, `targets`: `[batch, steps]`; out `[1]`
pub fn bce_with_logits<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    let softplus = logits.clone().abs().neg().exp().add_scalar(1.0).log();
    (logits.clone().clamp_min(0.0) - logits * targets + softplus).mean()
}

/// Weights and hyperparameters of the stage-1 loss.
#[derive(Config, Debug)]
pub struct Stage1LossConfig {
    /// Weight of the trajectory reconstruction loss.
    #[config(default = 1.0)]
    pub w_traj: f64,
    /// Weight of the subject cross-entropy.
    #[config(default = 1.0)]
    pub w_cls: f64,
    /// Weight of the supervised contrastive loss.
    #[config(default = 0.1)]
    pub w_con: f64,
    /// SupCon temperature.
    #[config(default = 0.07)]
    pub temperature: f64,
    /// Smooth-L1 β.
    #[config(default = "1.0 / 9.0")]
    pub smooth_l1_beta: f64,
    /// FIFO capacity of the memory bank.
    #[config(default = 4096)]
    pub bank_capacity: usize,
}

/// Stage-1 loss terms; `total` is the weighted sum.
#[derive(Debug, Clone)]
pub struct Stage1Losses<B: Backend> {
    pub total: Tensor<B, 1>,
    /// `boxes + validity`.
    pub traj: Tensor<B, 1>,
    pub boxes: Tensor<B, 1>,
    pub validity: Tensor<B, 1>,
    pub cls: Tensor<B, 1>,
    pub con: Tensor<B, 1>,
}

impl Stage1LossConfig {
    /// A memory bank with this config's capacity.
    pub fn init_bank(&self) -> SubjectMemoryBank {
        SubjectMemoryBank::new(self.bank_capacity)
    }

    /// Computes the stage-1 losses. `target` may have fewer steps than the decoder; it is
    /// padded (as invalid steps) to the decoded length. Does not update `bank`.
    pub fn loss<B: Backend>(
        &self,
        out: &DeperOutput<B>,
        target: &TrajectoryBatch<B>,
        subjects: &[usize],
        bank: &SubjectMemoryBank,
    ) -> Stage1Losses<B> {
        self.loss_on_first_boxes(out, target, subjects, bank, usize::MAX)
    }

    /// [`Stage1LossConfig::loss`] with the box term over the first `box_steps` steps of each
    /// trajectory only (the validity term still covers every step): the step of a box-loss
    /// curriculum. Fitting all steps at once from the start holds the decoder at the steps'
    /// mean place, since each step's gradient pulls the scan query towards a different token;
    /// one step alone is learned (`examples/scan_capacity.rs --curriculum`).
    pub fn loss_on_first_boxes<B: Backend>(
        &self,
        out: &DeperOutput<B>,
        target: &TrajectoryBatch<B>,
        subjects: &[usize],
        bank: &SubjectMemoryBank,
        box_steps: usize,
    ) -> Stage1Losses<B> {
        let [batch, n_steps, _] = out.pred_boxes.dims();
        let [_, steps, _] = target.boxes.dims();
        let device = out.pred_boxes.device();
        let (boxes, valid) = if steps < n_steps {
            let extra = n_steps - steps;
            (
                Tensor::cat(vec![target.boxes.clone(), Tensor::zeros([batch, extra, 4], &device)], 1),
                Tensor::cat(vec![target.mask.clone().float(), Tensor::zeros([batch, extra], &device)], 1),
            )
        } else {
            (target.boxes.clone().slice_dim(1, 0..n_steps), target.mask.clone().float().slice_dim(1, 0..n_steps))
        };
        let box_valid = if box_steps < n_steps {
            let first: Vec<bool> = (0..batch * n_steps).map(|i| i % n_steps < box_steps).collect();
            valid.clone().bool().bool_and(Tensor::from_data(TensorData::new(first, [batch, n_steps]), &device))
        } else {
            valid.clone().bool()
        };
        let box_loss = box_smooth_l1(out.pred_boxes.clone(), boxes, box_valid, self.smooth_l1_beta);
        let validity = bce_with_logits(out.pred_valid_logits.clone(), valid);
        let traj = box_loss.clone() + validity.clone();
        let cls = cross_entropy(out.subject_logits.clone(), subjects);
        let con = supcon_loss(out.z_s.clone(), subjects, bank, self.temperature);
        let total = traj.clone().mul_scalar(self.w_traj)
            + cls.clone().mul_scalar(self.w_cls)
            + con.clone().mul_scalar(self.w_con);
        Stage1Losses { total, traj, boxes: box_loss, validity, cls, con }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestBackend = burn::backend::NdArray;
    const TOL: f64 = 1e-5;

    fn scalar(t: Tensor<TestBackend, 1>) -> f64 {
        t.into_scalar() as f64
    }

    fn t2(rows: &[[f32; 3]]) -> Tensor<TestBackend, 2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 3]), &Default::default())
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let logits = [[1.0f32, 2.0, 3.0], [0.5, -1.0, 0.0]];
        let targets = [2usize, 1];
        // −log softmax by hand: row 0 → ln(e¹+e²+e³) − 3, row 1 → ln(e^0.5+e^−1+e⁰) + 1.
        let want =
            ((1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 3.0 + ((0.5f64).exp() + (-1f64).exp() + 1.0).ln() + 1.0)
                / 2.0;
        let got = scalar(cross_entropy(t2(&logits), &targets));
        assert!((got - want).abs() < TOL, "got {got}, want {want}");
        assert!((want - 1.2559).abs() < 1e-3); // ≈ (0.4076 + 2.1041) / 2
    }

    #[test]
    fn bce_with_logits_matches_hand_computation() {
        let x = [[2.0f32, -1.0, 0.0], [-3.0, 0.5, 4.0]];
        let y = [[1.0f32, 0.0, 1.0], [1.0, 1.0, 0.0]];
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let mut want = 0.0;
        for (xr, yr) in x.iter().zip(&y) {
            for (&xv, &yv) in xr.iter().zip(yr) {
                let (xv, yv) = (xv as f64, yv as f64);
                want -= yv * sig(xv).ln() + (1.0 - yv) * (1.0 - sig(xv)).ln();
            }
        }
        want /= 6.0;
        let got = scalar(bce_with_logits(t2(&x), t2(&y)));
        assert!((got - want).abs() < TOL, "got {got}, want {want}");
    }

    #[test]
    fn smooth_l1_uses_valid_steps_only() {
        let device = Default::default();
        // Two steps; the second is padding and its huge error must not count.
        let pred = Tensor::<TestBackend, 3>::from_data(
            TensorData::new(vec![0.1f32, 0.2, 0.5, 0.9, 0.0, 0.0, 0.0, 0.0], [1, 2, 4]),
            &device,
        );
        let target = Tensor::<TestBackend, 3>::from_data(
            TensorData::new(vec![0.15f32, 0.2, 0.2, 0.3, 1.0, 1.0, 1.0, 1.0], [1, 2, 4]),
            &device,
        );
        let valid = Tensor::<TestBackend, 2, Bool>::from_data(TensorData::new(vec![true, false], [1, 2]), &device);
        let beta = 1.0 / 9.0;
        // δ = 0.05 (< β: 0.5·δ²/β = 0.01125), 0 (0), 0.3 (≥ β: 0.3 − β/2), 0.6 (0.6 − β/2).
        let want = (0.5 * 0.05f64.powi(2) / beta + 0.0 + (0.3 - 0.5 * beta) + (0.6 - 0.5 * beta)) / 4.0;
        let got = scalar(box_smooth_l1(pred, target, valid, beta));
        assert!((got - want).abs() < TOL, "got {got}, want {want}");
    }

    /// The curriculum's box term covers the first `box_steps` steps only; validity and the
    /// subject terms do not change, and a large `box_steps` is the plain loss.
    #[test]
    fn box_term_covers_the_first_steps_only() {
        let device = Default::default();
        // Three decoded steps, all valid in the target, with errors 0 (step 1), 0.3 and 0.6.
        let pred = vec![0.2f32; 12];
        let mut target = vec![0.2f32; 12];
        for v in &mut target[4..8] {
            *v = 0.5;
        }
        for v in &mut target[8..12] {
            *v = 0.8;
        }
        let out = DeperOutput::<TestBackend> {
            z_s: Tensor::from_data(TensorData::new(vec![1.0f32, 0.0], [1, 2]), &device),
            z_scan: Tensor::zeros([1, 1, 2], &device),
            subject_logits: Tensor::from_data(TensorData::new(vec![0.0f32, 1.0], [1, 2]), &device),
            pred_boxes: Tensor::from_data(TensorData::new(pred, [1, 3, 4]), &device),
            pred_valid_logits: Tensor::from_data(TensorData::new(vec![1.0f32, -1.0, 0.5], [1, 3]), &device),
        };
        let traj = TrajectoryBatch::<TestBackend> {
            boxes: Tensor::from_data(TensorData::new(target, [1, 3, 4]), &device),
            durations: Tensor::ones([1, 3], &device),
            mask: Tensor::from_data(TensorData::new(vec![true; 3], [1, 3]), &device),
        };
        let cfg = Stage1LossConfig::new().with_bank_capacity(0);
        let bank = cfg.init_bank();
        let beta = cfg.smooth_l1_beta;
        let all = cfg.loss(&out, &traj, &[1], &bank);
        let first = cfg.loss_on_first_boxes(&out, &traj, &[1], &bank, 1);
        let two = cfg.loss_on_first_boxes(&out, &traj, &[1], &bank, 2);
        let wide = cfg.loss_on_first_boxes(&out, &traj, &[1], &bank, 30);
        assert!(scalar(first.boxes.clone()).abs() < TOL, "step 1 has no error");
        let (e2, e3) = (0.3 - 0.5 * beta, 0.6 - 0.5 * beta);
        assert!((scalar(two.boxes) - e2 / 2.0).abs() < TOL);
        assert!((scalar(all.boxes.clone()) - (e2 + e3) / 3.0).abs() < TOL);
        assert_eq!(scalar(wide.boxes), scalar(all.boxes));
        assert_eq!(scalar(first.validity), scalar(all.validity.clone()));
        assert_eq!(scalar(first.cls), scalar(all.cls));
        assert!((scalar(first.traj) - scalar(all.validity)).abs() < TOL);
    }

    /// Reference SupCon by plain loops over the formula in [`supcon_loss`].
    fn supcon_reference(z: &[[f32; 2]], labels: &[usize], bank: &[([f32; 2], usize)], tau: f64) -> f64 {
        let norm = |v: &[f32; 2]| {
            let n = ((v[0] as f64).powi(2) + (v[1] as f64).powi(2)).sqrt();
            [v[0] as f64 / n, v[1] as f64 / n]
        };
        let keys: Vec<([f64; 2], usize)> =
            z.iter().zip(labels).map(|(v, &l)| (norm(v), l)).chain(bank.iter().map(|(v, l)| (norm(v), *l))).collect();
        let (mut total, mut anchors) = (0.0, 0);
        for a in 0..z.len() {
            let za = norm(&z[a]);
            let s: Vec<f64> = keys.iter().map(|(k, _)| (za[0] * k[0] + za[1] * k[1]) / tau).collect();
            let denom: f64 = (0..keys.len()).filter(|&k| k != a).map(|k| s[k].exp()).sum();
            let pos: Vec<usize> = (0..keys.len()).filter(|&k| k != a && keys[k].1 == labels[a]).collect();
            if pos.is_empty() {
                continue;
            }
            total += -pos.iter().map(|&p| (s[p].exp() / denom).ln()).sum::<f64>() / pos.len() as f64;
            anchors += 1;
        }
        total / anchors as f64
    }

    #[test]
    fn supcon_matches_hand_computation_with_bank() {
        let z = [[1.0f32, 0.2], [0.8, 0.5], [-0.3, 1.0]];
        let labels = [0usize, 0, 1];
        let mut bank = SubjectMemoryBank::new(4096);
        bank.push(&[0.1, 1.0], 1);
        bank.push(&[1.0, -0.4], 2);
        // The bank holds latest-per-subject (2 vectors) plus the FIFO (the same 2 again).
        assert_eq!(bank.len(), 4);
        let bank_ref = [([0.1f32, 1.0], 1usize), ([1.0, -0.4], 2), ([0.1, 1.0], 1), ([1.0, -0.4], 2)];
        let want = supcon_reference(&z, &labels, &bank_ref, 0.07);
        let zt = Tensor::<TestBackend, 2>::from_data(
            TensorData::new(z.iter().flatten().copied().collect::<Vec<_>>(), [3, 2]),
            &Default::default(),
        );
        let got = scalar(supcon_loss(zt, &labels, &bank, 0.07));
        assert!((got - want).abs() < TOL, "got {got}, want {want}");
    }

    #[test]
    fn supcon_without_bank_and_without_positives() {
        let device = Default::default();
        let z = [[1.0f32, 0.0], [0.6, 0.8]];
        let zt = Tensor::<TestBackend, 2>::from_data(
            TensorData::new(z.iter().flatten().copied().collect::<Vec<_>>(), [2, 2]),
            &device,
        );
        let bank = SubjectMemoryBank::new(16);
        // Two anchors of one subject, each the other's only key: log(1) = 0.
        assert!(scalar(supcon_loss(zt.clone(), &[3, 3], &bank, 0.07)).abs() < TOL);
        // No positives at all: defined as zero.
        assert_eq!(scalar(supcon_loss(zt, &[0, 1], &bank, 0.07)), 0.0);
        let want = supcon_reference(&z, &[0, 0], &[([0.0, 1.0], 1)], 0.5);
        let mut bank = SubjectMemoryBank::new(0);
        bank.push(&[0.0, 2.0], 1);
        assert_eq!(bank.len(), 1);
        let zt = Tensor::<TestBackend, 2>::from_data(
            TensorData::new(z.iter().flatten().copied().collect::<Vec<_>>(), [2, 2]),
            &device,
        );
        let got = scalar(supcon_loss(zt, &[0, 0], &bank, 0.5));
        assert!((got - want).abs() < TOL, "got {got}, want {want}");
    }

    #[test]
    fn bank_keeps_latest_per_subject_and_bounded_fifo() {
        let mut bank = SubjectMemoryBank::new(3);
        for i in 0..5 {
            bank.push(&[i as f32 + 1.0, 0.0], i % 2);
        }
        assert_eq!(bank.len(), 2 + 3);
        let labels: Vec<usize> = bank.entries().map(|(_, l)| l).collect();
        assert_eq!(labels, vec![0, 1, 0, 1, 0]);
        assert!(bank.entries().all(|(v, _)| (v[0] - 1.0).abs() < 1e-6));
    }
}
