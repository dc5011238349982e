//! Data-parallel stage 1 on two CPU "devices" (two training threads on the NdArray backend).
//!
//! Its own test binary: NdArray has one random-number generator per process, and a test training
//! beside it would draw from it while this one initialises its weights.

#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::Tensor;
use deper_train::stage1;
use deper_train::{eval, features};
use std::path::Path;
use std::sync::atomic::AtomicBool;

mod common;
use common::{metrics_lines, tiny, world_seeded};

type Cpu = NdArray;
type Train = Autodiff<NdArray>;

/// Weights of a saved run, per parameter tensor in module order.
fn run_weights(run: &Path, data: &Path) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor<Cpu> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Cpu, D>>) {
            self.0.push(param.val().into_data().to_vec().unwrap());
        }
    }
    let (_, model, _) = eval::open_run::<Cpu>(run, data, &Default::default()).unwrap();
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

#[test]
fn data_parallel_training_on_two_devices_equals_one_device() {
    let dir = tempfile::tempdir().unwrap();
    // Seed 4 gives an even number of training triplets (checked below).
    let data = world_seeded(dir.path(), 4);
    let device = burn::backend::ndarray::NdArrayDevice::Cpu;
    let n_train = {
        let info_vocab = deper_train::text::WordVocab::from_words(vec!["a".into()]);
        let subjects: Vec<String> = ["s00", "s01", "s02"].map(String::from).to_vec();
        stage1::prepare(&data, features::PIXEL_STATS, &info_vocab, 16, &subjects).unwrap().partition.train.len()
    };
    assert!(n_train % 2 == 0 && n_train > 0, "the fixture needs an even training set, has {n_train}");

    // One global batch per epoch, split 50/50 between two devices. Without dropout, the memory
    // bank (kept per device) and the box loss (normalised per device by its valid steps), the
    // mean of the two devices' gradients is the one-device gradient, so both runs must agree.
    let mut cfg = tiny(3);
    cfg.train.batch_size = n_train;
    cfg.model.dropout = 0.0;
    cfg.loss.w_con = 0.0;
    cfg.loss.w_traj = 0.0;
    let never = AtomicBool::new(false);
    let single = dir.path().join("single");
    let one = stage1::train_data_parallel::<Train>(&data, &single, cfg.clone(), false, &[device], &mut |_| {}, &never)
        .unwrap();
    let ddp = dir.path().join("ddp");
    let mut batches = 0;
    let two = stage1::train_data_parallel::<Train>(
        &data,
        &ddp,
        cfg.clone(),
        false,
        &[device, device],
        &mut |p| batches += usize::from(matches!(p, stage1::Progress::Batch { .. })),
        &never,
    )
    .unwrap();
    assert_eq!(batches, 3, "progress comes from the leading device only");
    assert_eq!(two.len(), 3);
    assert_eq!(metrics_lines(&ddp).len(), 3);
    for (a, b) in one.iter().zip(&two) {
        assert!((a.train_loss - b.train_loss).abs() < 1e-4, "epoch {}: {} vs {}", a.epoch, a.train_loss, b.train_loss);
    }
    let (wa, wb) = (run_weights(&single, &data), run_weights(&ddp, &data));
    assert_eq!(wa.len(), wb.len());
    let worst = wa.iter().zip(&wb).flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs())).fold(0f32, f32::max);
    assert!(worst < 1e-4, "data-parallel weights differ from one-device weights by {worst}");

    // More devices than samples in a batch cannot share it out.
    cfg.train.batch_size = 1;
    let err = stage1::train_data_parallel::<Train>(
        &data,
        &dir.path().join("bad"),
        cfg,
        false,
        &[device, device],
        &mut |_| {},
        &never,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("2 devices") && err.contains("batch_size"), "{err}");
}
