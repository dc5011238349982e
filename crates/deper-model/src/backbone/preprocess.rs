//! Image preprocessing of `DINOv3ViTImageProcessor` (transformers 5.24.0, torchvision backend).
//!
//! The hub's DINOv3 ConvNeXt checkpoints ship the same processor (their `preprocessor_config.json` was
//! written by `DINOv3ViTImageProcessorFast`, 224×224), so this one serves both backbone families.
//!
//! DINOv3's processor runs **rescale → resize → normalize** (not the usual resize first):
//!
//! 1. decode to RGB `u8`, convert to f32 `[3, H, W]` and multiply by `1/255`;
//! 2. resize the float image (no `u8` rounding) to `height × width` (448×448 here) with bilinear
//!    interpolation, `antialias=True`, half-pixel centres and edge clamping: torch's
//!    `upsample_bilinear2d_aa` (a PIL-style triangle filter whose support widens by the scale
//!    factor when downscaling; plain bilinear when upscaling), separable, width pass first, in f32;
//! 3. `(x - mean) / std` with the ImageNet mean and std.
//!
//! No centre crop; the aspect ratio is not kept. [`resize_bilinear_aa`] follows
//! `_compute_weights_aa` in ATen's `UpSampleKernel.cpp` step by step.
//!
//! Decoding uses the `image` crate with the formats enabled in the workspace (PNG); callers with
//! other formats can decode themselves and use [`Dinov3ImageProcessor::preprocess_rgb`].

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::BackboneError;

/// ImageNet mean (`IMAGENET_DEFAULT_MEAN`).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet std (`IMAGENET_DEFAULT_STD`).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `size` of a `preprocessor_config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSize {
    pub height: usize,
    pub width: usize,
}

/// The processor settings, deserializing the HF `preprocessor_config.json` fields it uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dinov3ImageProcessor {
    pub size: ImageSize,
    pub rescale_factor: f64,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub do_rescale: bool,
    pub do_resize: bool,
    pub do_normalize: bool,
}

impl Default for Dinov3ImageProcessor {
    /// 448×448 (the DEPER input size), ImageNet statistics, everything on.
    fn default() -> Self {
        Self::new(448, 448)
    }
}

impl Dinov3ImageProcessor {
    /// A processor resizing to `height × width` with the HF defaults otherwise.
    pub fn new(height: usize, width: usize) -> Self {
        Self {
            size: ImageSize { height, width },
            rescale_factor: 1.0 / 255.0,
            image_mean: IMAGENET_MEAN,
            image_std: IMAGENET_STD,
            do_rescale: true,
            do_resize: true,
            do_normalize: true,
        }
    }

    /// Reads a `preprocessor_config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self, BackboneError> {
        let text = std::fs::read_to_string(path).map_err(|e| BackboneError::Io { path: path.into(), source: e })?;
        serde_json::from_str(&text).map_err(|e| BackboneError::Config(e.to_string()).in_file(path))
    }

    /// Output `(height, width)`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        if self.do_resize {
            (self.size.height, self.size.width)
        } else {
            (height, width)
        }
    }

    /// Preprocesses interleaved RGB bytes (`height × width × 3`, row-major) into `[3, H', W']` f32.
    pub fn preprocess_rgb(&self, rgb: &[u8], width: usize, height: usize) -> Result<Vec<f32>, BackboneError> {
        if rgb.len() != width * height * 3 || width == 0 || height == 0 {
            return Err(BackboneError::Image(format!(
                "expected {width}×{height}×3 = {} RGB bytes (non-empty), got {}",
                width * height * 3,
                rgb.len()
            )));
        }
        // torch: float32 tensor * rescale_factor (the scalar is cast to f32).
        let factor = if self.do_rescale { self.rescale_factor as f32 } else { 1.0 };
        let (oh, ow) = self.output_size(height, width);
        let mut out = Vec::with_capacity(3 * oh * ow);
        let mut plane = vec![0f32; width * height];
        for c in 0..3 {
            for (v, px) in plane.iter_mut().zip(rgb.chunks_exact(3)) {
                *v = f32::from(px[c]) * factor;
            }
            let mut resized =
                if self.do_resize { resize_bilinear_aa(&plane, height, width, oh, ow) } else { plane.clone() };
            if self.do_normalize {
                let (m, s) = (self.image_mean[c], self.image_std[c]);
                resized.iter_mut().for_each(|v| *v = (*v - m) / s);
            }
            out.extend_from_slice(&resized);
        }
        Ok(out)
    }

    /// Preprocesses a decoded image (converted to RGB 8-bit first).
    pub fn preprocess_image(&self, image: &image::DynamicImage) -> Result<Vec<f32>, BackboneError> {
        let rgb = image.to_rgb8();
        let (w, h) = rgb.dimensions();
        self.preprocess_rgb(rgb.as_raw(), w as usize, h as usize)
    }

    /// Decodes an image file and preprocesses it into `[1, 3, H', W']` on `device`.
    pub fn load_tensor<B: Backend>(&self, path: &Path, device: &B::Device) -> Result<Tensor<B, 4>, BackboneError> {
        let image = image::open(path).map_err(|e| BackboneError::Image(format!("{}: {e}", path.display())))?;
        let (oh, ow) = self.output_size(image.height() as usize, image.width() as usize);
        let values = self.preprocess_image(&image)?;
        Ok(Tensor::from_data(TensorData::new(values, [1, 3, oh, ow]), device))
    }
}

/// Torch's `_compute_weights_aa` for one output index: `(xmin, weights)`, weights normalised.
/// `scale = in / out`; the triangle filter's support is `scale` when downscaling, 1 otherwise.
fn aa_weights(i: usize, input_size: usize, scale: f32, support: f32) -> (usize, Vec<f32>) {
    let center = (f64::from(scale) * (i as f64 + 0.5)) as f32;
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let xmin = ((f64::from(center) - f64::from(support) + 0.5) as i64).max(0);
    let xmax = ((f64::from(center) + f64::from(support) + 0.5) as i64).min(input_size as i64);
    // ATen clamps xsize to the kernel size `ceil(support) * 2 + 1`.
    let max_size = (support.ceil() as i64) * 2 + 1;
    let xsize = (xmax - xmin).clamp(0, max_size);
    let filter = |x: f32| {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    };
    let mut weights: Vec<f32> = (0..xsize)
        .map(|j| {
            // ATen: (j + xmin - center + 0.5) * invscale, the int-minus-float in f32, the rest in f64.
            let d = ((j + xmin) as f32 - center) as f64 + 0.5;
            filter((d * f64::from(invscale)) as f32)
        })
        .collect();
    let total: f32 = weights.iter().sum();
    if total != 0.0 {
        weights.iter_mut().for_each(|w| *w /= total);
    }
    (xmin as usize, weights)
}

/// Per-output-index `(start, weights)` for resizing `input_size` to `output_size`.
fn axis_weights(input_size: usize, output_size: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input_size as f32 / output_size as f32; // area_pixel_compute_scale, align_corners=False
    let support = if scale >= 1.0 { scale } else { 1.0 }; // interp_size / 2 = 1 for bilinear
    (0..output_size).map(|i| aa_weights(i, input_size, scale, support)).collect()
}

/// Resizes one `[h, w]` plane to `[out_h, out_w]` as torch
/// `F.interpolate(mode="bilinear", align_corners=False, antialias=True)` does on f32 (width pass
/// first, then height; a pass is skipped when its size does not change).
pub fn resize_bilinear_aa(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let horizontal = if out_w != w {
        let wx = axis_weights(w, out_w);
        let mut tmp = vec![0f32; h * out_w];
        for y in 0..h {
            let row = &src[y * w..(y + 1) * w];
            for (x, (start, ws)) in wx.iter().enumerate() {
                tmp[y * out_w + x] = ws.iter().zip(&row[*start..]).fold(0.0, |acc, (k, v)| acc + k * v);
            }
        }
        tmp
    } else {
        src.to_vec()
    };
    if out_h == h {
        return horizontal;
    }
    let wy = axis_weights(h, out_h);
    let mut out = vec![0f32; out_h * out_w];
    for (y, (start, ws)) in wy.iter().enumerate() {
        let dst = &mut out[y * out_w..(y + 1) * out_w];
        for (j, k) in ws.iter().enumerate() {
            let row = &horizontal[(start + j) * out_w..(start + j + 1) * out_w];
            for (o, v) in dst.iter_mut().zip(row) {
                *o += k * v;
            }
        }
    }
    out
}
