//! Helpers shared by the DINOv3 parity tests: reference tensors of the committed fixtures.

#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;

use burn::prelude::*;
use deper_weights::Checkpoint;

pub type B = burn::backend::NdArray;

/// A reference tensor as a burn tensor.
pub fn reference_tensor<const D: usize>(ck: &Checkpoint, key: &str) -> Tensor<B, D> {
    let (values, shape) = ck.f32_any(key).expect(key);
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

pub fn max_abs_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar()
}

/// The exact pixel input stored as int8 codes `key` of a reference file: `pixel = code / 64`.
pub fn pixel_codes(path: &Path, key: &str) -> Tensor<B, 4> {
    let (codes, shape) = Checkpoint::open(path).expect("reference file").i64_any(key).expect(key);
    let values: Vec<f32> = codes.iter().map(|&c| c as f32 / 64.0).collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}
