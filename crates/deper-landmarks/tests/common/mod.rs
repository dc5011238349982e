//! Shared test helpers: fixture paths, PNG loading and a minimal `.npy` reader for the TFLite
//! reference outputs written by scripts/convert_mediapipe.py. Each test binary uses a subset.
#![allow(dead_code)]

use std::path::PathBuf;

use deper_landmarks::FaceMesh;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("manifest.json")).expect("read manifest.json");
    serde_json::from_str(&text).expect("parse manifest.json")
}

/// RGB bytes and size of a fixture PNG.
pub fn rgb(name: &str) -> (Vec<u8>, u32, u32) {
    let img = image::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}")).to_rgb8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w, h)
}

/// A little-endian float32 `.npy` file (format 1.0, C order): shape and values.
pub fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{name}: not an .npy file");
    assert_eq!(bytes[6], 1, "{name}: only .npy format 1.x is read");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("npy header is ASCII");
    assert!(header.contains("'descr': '<f4'"), "{name}: {header}");
    assert!(header.contains("'fortran_order': False"), "{name}: {header}");
    let shape_text = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).expect("npy shape");
    let shape: Vec<usize> =
        shape_text.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().expect("npy dim")).collect();
    let data: Vec<f32> =
        bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{name}: data length");
    (shape, data)
}

pub fn mesh() -> FaceMesh {
    FaceMesh::bundled().expect("load bundled models")
}
