//! Image preprocessing of `Qwen2VLImageProcessor`: RGB image → `pixel_values [N, 1176]` and `grid_thw`.
//!
//! Steps: [`smart_resize`] to multiples of 28 (patch 14 × merge 2) within `min_pixels..=max_pixels`
//! (Python `round`, i.e. half-to-even); antialiased bicubic resize of the uint8 image as torch's uint8
//! CPU kernel does it ([`resize_bicubic_aa`]: PIL-style separable filter with a = -0.5, int16
//! fixed-point weights, horizontal pass first, uint8 in between); rescale and CLIP normalisation fused
//! as `(x - 255·mean) / (255·std)` in f32; the frame repeated to `temporal_patch_size`; patches emitted
//! in 2×2 merge-window order `(bh, bw, mh, mw)`, each row flattened as `(channel, t, y, x)`.
//!
//! Reference: transformers `models/qwen2_vl/image_processing_qwen2_vl.py` (torchvision backend);
//! `tests/fixtures/resize` checks the resize bit-exactly against torchvision (up- and downscaling).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;
use std::path::Path;

use crate::resample::resample_pass;
use crate::{Result, VlmError};

/// Settings from `preprocessor_config.json` (or the `image_processor` of `processor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub merge_size: usize,
    pub temporal_patch_size: usize,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    pub rescale_factor: f64,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
}

impl Default for ImageProcessor {
    /// Qwen2-VL's defaults.
    fn default() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 12_845_056,
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
            image_mean: [0.48145466, 0.4578275, 0.40821073],
            image_std: [0.26862954, 0.26130258, 0.27577711],
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: true,
            do_normalize: true,
        }
    }
}

/// Preprocessed image(s).
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    /// Row-major `[rows, cols]`.
    pub values: Vec<f32>,
    pub rows: usize,
    /// `channels · temporal_patch_size · patch²` (1176).
    pub cols: usize,
    /// `(t, h, w)` in patches.
    pub grid_thw: [usize; 3],
}

impl PixelValues {
    /// As a tensor `[rows, cols]`.
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(self.values.clone(), [self.rows, self.cols]), device)
    }
}

/// Target `(height, width)`: multiples of `factor` with area in `min_pixels..=max_pixels`, aspect kept.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if height == 0 || width == 0 {
        return Err(VlmError::Image(format!("empty image {width}×{height}")));
    }
    if h.max(w) / h.min(w) > 200.0 {
        return Err(VlmError::Image(format!(
            "absolute aspect ratio must be smaller than 200, got {}",
            h.max(w) / h.min(w)
        )));
    }
    // Python `round` rounds half to even.
    let mut hb = (h / f).round_ties_even() * f;
    let mut wb = (w / f).round_ties_even() * f;
    if hb * wb > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        hb = f.max((h / beta / f).floor() * f);
        wb = f.max((w / beta / f).floor() * f);
    } else if hb * wb < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        hb = (h * beta / f).ceil() * f;
        wb = (w * beta / f).ceil() * f;
    }
    Ok((hb as usize, wb as usize))
}

impl ImageProcessor {
    /// Reads `preprocessor_config.json`, else `processor_config.json`'s `image_processor`, else defaults.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        for (file, nested) in [("preprocessor_config.json", false), ("processor_config.json", true)] {
            let path = dir.join(file);
            if path.is_file() {
                let text =
                    std::fs::read_to_string(&path).map_err(|e| VlmError::Io { path: path.clone(), source: e })?;
                let v: Value =
                    serde_json::from_str(&text).map_err(|e| VlmError::Config(format!("{}: {e}", path.display())))?;
                let v = if nested { v.get("image_processor").cloned().unwrap_or(Value::Null) } else { v };
                if v.is_object() {
                    return Ok(Self::from_json(&v));
                }
            }
        }
        Ok(Self::default())
    }

    /// Parses processor settings; absent fields keep Qwen2-VL's defaults.
    pub fn from_json(v: &Value) -> Self {
        let d = Self::default();
        let uint = |key: &str| v.get(key).and_then(Value::as_u64).map(|x| x as usize);
        let boolean = |key: &str, default: bool| v.get(key).and_then(Value::as_bool).unwrap_or(default);
        let triple = |key: &str, default: [f64; 3]| -> [f64; 3] {
            match v.get(key).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<_>>()) {
                Some(a) if a.len() == 3 => [a[0], a[1], a[2]],
                _ => default,
            }
        };
        let size = v.get("size");
        let size_field = |key: &str| size.and_then(|s| s.get(key)).and_then(Value::as_u64).map(|x| x as usize);
        Self {
            // The hub files carry `min_pixels`/`max_pixels`; transformers ≥ 4.5x writes `size`.
            min_pixels: uint("min_pixels").or_else(|| size_field("shortest_edge")).unwrap_or(d.min_pixels),
            max_pixels: uint("max_pixels").or_else(|| size_field("longest_edge")).unwrap_or(d.max_pixels),
            patch_size: uint("patch_size").unwrap_or(d.patch_size),
            merge_size: uint("merge_size").unwrap_or(d.merge_size),
            temporal_patch_size: uint("temporal_patch_size").unwrap_or(d.temporal_patch_size),
            image_mean: triple("image_mean", d.image_mean),
            image_std: triple("image_std", d.image_std),
            rescale_factor: v.get("rescale_factor").and_then(Value::as_f64).unwrap_or(d.rescale_factor),
            do_resize: boolean("do_resize", true),
            do_rescale: boolean("do_rescale", true),
            do_normalize: boolean("do_normalize", true),
        }
    }

    /// Decodes an image file (any format the `image` crate was built with) and preprocesses it.
    pub fn preprocess_file(&self, path: &Path) -> Result<PixelValues> {
        let img = image::open(path).map_err(|e| VlmError::Image(format!("{}: {e}", path.display())))?;
        self.preprocess(&img.to_rgb8())
    }

    /// Preprocesses one RGB image.
    pub fn preprocess(&self, img: &image::RgbImage) -> Result<PixelValues> {
        let (w0, h0) = (img.width() as usize, img.height() as usize);
        let factor = self.patch_size * self.merge_size;
        let (h, w) =
            if self.do_resize { smart_resize(h0, w0, factor, self.min_pixels, self.max_pixels)? } else { (h0, w0) };
        if h % factor != 0 || w % factor != 0 {
            return Err(VlmError::Image(format!("image {w}×{h} is not a multiple of {factor} (do_resize is off)")));
        }
        let raw: Vec<u8> = img.as_raw().clone();
        let pixels = if (h, w) == (h0, w0) { raw } else { resize_bicubic_aa(&raw, h0, w0, h, w) };

        // Rescale + normalise fused, in f32, channel-planar [3, H, W].
        let (scale, mean, std) = self.fused_norm();
        let mut planes = vec![0f32; 3 * h * w];
        for (i, px) in pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planes[c * h * w + i] = (f32::from(px[c]) * scale - mean[c]) / std[c];
            }
        }

        let (p, m, tp) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (gh, gw) = (h / p, w / p);
        let cols = 3 * tp * p * p;
        let rows = gh * gw;
        let mut values = Vec::with_capacity(rows * cols);
        for bh in 0..gh / m {
            for bw in 0..gw / m {
                for mh in 0..m {
                    for mw in 0..m {
                        let (py0, px0) = ((bh * m + mh) * p, (bw * m + mw) * p);
                        for c in 0..3 {
                            // The single frame is repeated to every temporal slot.
                            for _ in 0..tp {
                                for y in 0..p {
                                    let start = c * h * w + (py0 + y) * w + px0;
                                    values.extend_from_slice(&planes[start..start + p]);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(PixelValues { values, rows, cols, grid_thw: [1, gh, gw] })
    }

    /// `(scale, mean, std)` such that the output is `(x·scale - mean) / std`, as transformers fuses
    /// rescale into normalisation (mean and std divided by the rescale factor, in f32).
    fn fused_norm(&self) -> (f32, [f32; 3], [f32; 3]) {
        match (self.do_rescale, self.do_normalize) {
            (true, true) => {
                // As torch does it: f32 mean and std tensors scaled by 1/rescale_factor in f32.
                let k = (1.0 / self.rescale_factor) as f32;
                (1.0, self.image_mean.map(|m| m as f32 * k), self.image_std.map(|s| s as f32 * k))
            }
            (true, false) => (self.rescale_factor as f32, [0.0; 3], [1.0; 3]),
            (false, true) => (1.0, self.image_mean.map(|m| m as f32), self.image_std.map(|s| s as f32)),
            (false, false) => (1.0, [0.0; 3], [1.0; 3]),
        }
    }
}

/// Bicubic kernel with a = -0.5 (PIL and torch's antialiased path).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index: first input index and normalised weights.
fn aa_weights(in_len: usize, out_len: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_len as f64 / out_len as f64;
    let support_scale = scale.max(1.0);
    let support = 2.0 * support_scale;
    (0..out_len)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let xmin = ((center - support + 0.5).floor().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).floor() as usize).min(in_len);
            let mut w: Vec<f64> = (xmin..xmax).map(|j| cubic((j as f64 - center + 0.5) / support_scale)).collect();
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|x| *x /= sum);
            }
            (xmin, w)
        })
        .collect()
}

/// Weights of one pass as torch's uint8 kernel stores them: int16 fixed point with the largest
/// precision (≤ 22 bits) at which the largest weight still fits.
fn fixed_point(weights: &[(usize, Vec<f64>)]) -> (u32, Vec<(usize, Vec<i64>)>) {
    let max_weight = weights.iter().flat_map(|(_, w)| w.iter().copied()).fold(0.0f64, f64::max);
    let mut precision = 0;
    while precision < 22 {
        let next = (0.5 + max_weight * f64::from(1u32 << (precision + 1))) as i64;
        if next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let scale = f64::from(1u32 << precision);
    let ints = weights
        .iter()
        .map(|(start, w)| {
            let w = w
                .iter()
                .map(|&x| x * scale)
                .map(|v| if v < 0.0 { (v - 0.5) as i64 } else { (v + 0.5) as i64 })
                .collect();
            (*start, w)
        })
        .collect();
    (precision, ints)
}

/// One separable pass over interleaved RGB: `along_x` resizes rows, else columns.
fn resize_pass(src: &[u8], h: usize, w: usize, out_len: usize, along_x: bool) -> Vec<u8> {
    let in_len = if along_x { w } else { h };
    let (precision, weights) = fixed_point(&aa_weights(in_len, out_len));
    resample_pass(src, h, w, &weights, precision, along_x)
}

/// Separable antialiased bicubic resize of interleaved RGB uint8 `[h0, w0, 3]` → `[h, w, 3]`, as
/// torch's uint8 CPU kernel does it: horizontal pass first, fixed-point weights, uint8 in between,
/// and a dimension whose size does not change is not filtered.
pub fn resize_bicubic_aa(src: &[u8], h0: usize, w0: usize, h: usize, w: usize) -> Vec<u8> {
    let mut img = src.to_vec();
    if w != w0 {
        img = resize_pass(&img, h0, w0, w, true);
    }
    if h != h0 {
        img = resize_pass(&img, h0, w, h, false);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_a_flat_image_flat() {
        let src = vec![100u8; 30 * 20 * 3];
        let out = resize_bicubic_aa(&src, 20, 30, 56, 28);
        assert!(out.iter().all(|&v| v == 100));
    }
}
