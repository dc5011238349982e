//! Shared helpers for the parity tests against `tests/fixtures/qwen2_vl_tiny`.
#![allow(dead_code, clippy::unwrap_used)] // helpers panic on broken fixtures by design

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use deper_weights::Checkpoint;
use std::path::PathBuf;

pub type B = burn::backend::NdArray;

pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2_vl_tiny")
}

pub fn model_dir() -> PathBuf {
    fixture().join("model")
}

pub fn reference() -> Checkpoint {
    Checkpoint::open(&fixture().join("reference.safetensors")).unwrap()
}

pub fn reference_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap()
}

pub fn ids(reference: &Checkpoint, key: &str) -> Vec<u32> {
    reference.i64_any(key).unwrap().0.into_iter().map(|v| v as u32).collect()
}

pub fn tensor2(reference: &Checkpoint, key: &str) -> Tensor<B, 2> {
    let (values, shape) = reference.f32_any(key).unwrap();
    let cols = *shape.last().unwrap();
    let rows = values.len() / cols;
    Tensor::from_data(TensorData::new(values, [rows, cols]), &Default::default())
}

pub fn grid(reference: &Checkpoint) -> Vec<[usize; 3]> {
    let (v, _) = reference.i64_any("image_grid_thw").unwrap();
    v.chunks(3).map(|c| [c[0] as usize, c[1] as usize, c[2] as usize]).collect()
}

pub fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Max |a - b|, asserting equal lengths.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn check(name: &str, got: &[f32], want: &[f32], tol: f32) {
    let err = max_abs(got, want);
    println!("{name}: max abs err {err:.3e}");
    assert!(err <= tol, "{name}: max abs err {err} > {tol}");
}
