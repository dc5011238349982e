//! Image preprocessing and prompt expansion of `Idefics3ImageProcessor` / `Idefics3Processor`.
//!
//! Image steps (PIL backend, on the uint8 RGB image): resize so the longest edge is
//! `size.longest_edge` (the other edge rounded up to even, everything capped at 4096); with
//! `do_image_splitting`, resize again so both edges are multiples of `max_image_size`, cut row-major
//! `max_image_size²` tiles and append the whole image resized to one tile (the global image); without
//! it, one tile of the whole image. Rescale (`u8 · 1/255` in f64, then f32) and normalise
//! (`(x - mean) / std` in f32); pad to the largest tile with a pixel mask. Every resize is PIL's
//! `Image.resize` ([`resize_pil`]): separable filter (Lanczos a = 3 by default, bicubic, bilinear), the
//! horizontal pass first, 22-bit fixed-point weights, uint8 between the passes, and an axis whose size
//! does not change is not filtered.
//!
//! Prompt: each `<image>` of the rendered chat template becomes, per tile `(r, c)`,
//! `<fake_token_around_image><row_r_col_c>` + `<image>`×`image_seq_len`, a `\n` after each tile row,
//! then `\n<fake_token_around_image><global-img>` + `<image>`×`image_seq_len` +
//! `<fake_token_around_image>` ([`expand_image_tokens`]).
//!
//! Reference: transformers `models/idefics3/image_processing_pil_idefics3.py`, `processing_idefics3.py`;
//! Pillow `src/libImaging/Resample.c`. The torchvision backend of transformers resizes differently
//! (one uint8 level apart on the fixture image); this matches the PIL one.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;
use std::path::Path;

use crate::resample::resample_pass;
use crate::{Result, VlmError};

/// transformers' absolute cap on an edge after the first resize.
pub const MAX_IMAGE_SIZE: usize = 4096;
pub const IMAGE_TOKEN: &str = "<image>";
pub const FAKE_IMAGE_TOKEN: &str = "<fake_token_around_image>";
pub const GLOBAL_IMAGE_TOKEN: &str = "<global-img>";

/// PIL resampling filters (`Image.Resampling` codes 1, 2, 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Lanczos,
    Bilinear,
    Bicubic,
}

impl Resample {
    /// From PIL's integer code.
    pub fn from_pil(code: u64) -> Result<Self> {
        match code {
            1 => Ok(Self::Lanczos),
            2 => Ok(Self::Bilinear),
            3 => Ok(Self::Bicubic),
            other => {
                Err(VlmError::Config(format!("resample {other} is not supported (1 LANCZOS, 2 BILINEAR, 3 BICUBIC)")))
            }
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Lanczos => 3.0,
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
            Self::Bicubic => {
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
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Fixed-point precision of Pillow's 8-bit resampler.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output index, the first input index and
/// the integer weights.
fn pil_coefficients(in_len: usize, out_len: usize, filter: Resample) -> Vec<(usize, Vec<i64>)> {
    let scale = in_len as f64 / out_len as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_len)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C `(int)` truncates toward zero; negatives are clamped to 0 right after.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_len as i64) as usize;
            let mut w: Vec<f64> =
                (xmin..xmax.max(xmin)).map(|x| filter.weight((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            let one = f64::from(1u32 << PRECISION_BITS);
            let ints =
                w.iter().map(|&v| if v < 0.0 { (-0.5 + v * one) as i64 } else { (0.5 + v * one) as i64 }).collect();
            (xmin, ints)
        })
        .collect()
}

/// One Pillow pass over interleaved RGB `[h, w, 3]`: `along_x` resizes rows to `out_len`, else columns.
fn pil_pass(src: &[u8], h: usize, w: usize, out_len: usize, along_x: bool, filter: Resample) -> Vec<u8> {
    let in_len = if along_x { w } else { h };
    resample_pass(src, h, w, &pil_coefficients(in_len, out_len, filter), PRECISION_BITS, along_x)
}

/// `Image.resize((w, h), filter)` of Pillow on interleaved RGB uint8 `[h0, w0, 3]` → `[h, w, 3]`.
pub fn resize_pil(src: &[u8], h0: usize, w0: usize, h: usize, w: usize, filter: Resample) -> Vec<u8> {
    let mut img = src.to_vec();
    if w != w0 {
        img = pil_pass(&img, h0, w0, w, true, filter);
    }
    if h != h0 {
        img = pil_pass(&img, h0, w, h, false, filter);
    }
    img
}

/// `(height, width)` after the first resize: longest edge to `longest_edge` (other edge truncated, then
/// rounded up to even), then both capped by [`MAX_IMAGE_SIZE`] (transformers' `get_resize_output_image_size`).
pub fn resize_output_size(height: usize, width: usize, longest_edge: usize) -> (usize, usize) {
    let (mut h, mut w) = (height, width);
    let aspect = w as f64 / h as f64;
    if w >= h {
        w = longest_edge;
        h = (w as f64 / aspect) as usize;
        h += h % 2;
    } else {
        h = longest_edge;
        w = (h as f64 * aspect) as usize;
        w += w % 2;
    }
    let (mut h, mut w) = (h.max(1), w.max(1));
    let aspect = w as f64 / h as f64;
    if w >= h && w > MAX_IMAGE_SIZE {
        w = MAX_IMAGE_SIZE;
        h = (w as f64 / aspect) as usize;
    } else if h > w && h > MAX_IMAGE_SIZE {
        h = MAX_IMAGE_SIZE;
        w = (h as f64 * aspect) as usize;
    }
    (h.max(1), w.max(1))
}

/// `(height, width)` rounded up to multiples of `tile` along the long edge, the short edge following the
/// aspect ratio and rounded up too (transformers' `resize_for_vision_encoder`).
pub fn vision_encoder_size(height: usize, width: usize, tile: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let up = |v: usize| v.div_ceil(tile) * tile;
    if width >= height {
        let w = up(width);
        (up((w as f64 / aspect) as usize), w)
    } else {
        let h = up(height);
        (h, up((h as f64 * aspect) as usize))
    }
}

/// Settings of `preprocessor_config.json` (or the `image_processor` of `processor_config.json`) and
/// the processor's `image_seq_len`.
#[derive(Debug, Clone, PartialEq)]
pub struct Idefics3ImageProcessor {
    pub do_resize: bool,
    /// `size.longest_edge`.
    pub longest_edge: usize,
    pub do_image_splitting: bool,
    /// `max_image_size.longest_edge`: the tile side.
    pub max_image_size: usize,
    pub resample: Resample,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    /// `<image>` tokens per tile, from `processor_config.json` (`None`: derive from the model config).
    pub image_seq_len: Option<usize>,
}

impl Default for Idefics3ImageProcessor {
    /// transformers' defaults for Idefics3.
    fn default() -> Self {
        Self {
            do_resize: true,
            longest_edge: 4 * 364,
            do_image_splitting: true,
            max_image_size: 364,
            resample: Resample::Lanczos,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            image_seq_len: None,
        }
    }
}

/// The tiles of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Idefics3Pixels {
    /// `[tiles, 3, height, width]` row-major.
    pub values: Vec<f32>,
    pub tiles: usize,
    pub height: usize,
    pub width: usize,
    /// `[tiles, height, width]`, `true` for real pixels (false only where a smaller tile was padded).
    pub pixel_attention_mask: Vec<bool>,
    /// Tile grid of the split image; `(0, 0)` when it was not split (one tile).
    pub rows: usize,
    pub cols: usize,
}

impl Idefics3Pixels {
    /// As a tensor `[tiles, 3, height, width]`.
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 4> {
        Tensor::from_data(TensorData::new(self.values.clone(), [self.tiles, 3, self.height, self.width]), device)
    }
}

/// A decoded uint8 RGB image `[h, w, 3]`.
struct Rgb {
    data: Vec<u8>,
    h: usize,
    w: usize,
}

impl Rgb {
    fn resize(&self, h: usize, w: usize, filter: Resample) -> Rgb {
        let data = if (h, w) == (self.h, self.w) {
            self.data.clone()
        } else {
            resize_pil(&self.data, self.h, self.w, h, w, filter)
        };
        Rgb { data, h, w }
    }

    fn crop(&self, y0: usize, x0: usize, h: usize, w: usize) -> Rgb {
        let mut data = Vec::with_capacity(h * w * 3);
        for y in y0..y0 + h {
            data.extend_from_slice(&self.data[(y * self.w + x0) * 3..(y * self.w + x0 + w) * 3]);
        }
        Rgb { data, h, w }
    }
}

impl Idefics3ImageProcessor {
    /// Reads `preprocessor_config.json`, else `processor_config.json`'s `image_processor`, else
    /// defaults; `image_seq_len` comes from `processor_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |file: &str| -> Result<Option<Value>> {
            let path = dir.join(file);
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path).map_err(|e| VlmError::Io { path: path.clone(), source: e })?;
            serde_json::from_str(&text).map(Some).map_err(|e| VlmError::Config(format!("{}: {e}", path.display())))
        };
        let processor = read("processor_config.json")?;
        let image = match read("preprocessor_config.json")? {
            Some(v) => Some(v),
            None => processor.as_ref().and_then(|p| p.get("image_processor")).cloned(),
        };
        let mut this = match image {
            Some(v) => Self::from_json(&v).map_err(|e| match e {
                VlmError::Config(m) => VlmError::Config(format!("{}: {m}", dir.display())),
                other => other,
            })?,
            None => Self::default(),
        };
        this.image_seq_len =
            processor.as_ref().and_then(|p| p.get("image_seq_len")).and_then(Value::as_u64).map(|v| v as usize);
        Ok(this)
    }

    /// Parses processor settings; absent fields keep transformers' defaults.
    pub fn from_json(v: &Value) -> Result<Self> {
        let d = Self::default();
        let boolean = |key: &str, default: bool| v.get(key).and_then(Value::as_bool).unwrap_or(default);
        let triple = |key: &str, default: [f64; 3]| -> Result<[f64; 3]> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(default[0]); 3]),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
                    let f: Vec<f64> = a.iter().filter_map(Value::as_f64).collect();
                    Ok([f[0], f[1], f[2]])
                }
                Some(other) => Err(VlmError::Config(format!("`{key}` must be 3 numbers, found {other}"))),
            }
        };
        let edge = |key: &str, default: usize| -> Result<usize> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(s) => s
                    .get("longest_edge")
                    .and_then(Value::as_u64)
                    .filter(|&e| e > 0)
                    .map(|e| e as usize)
                    .ok_or_else(|| {
                        VlmError::Config(format!("`{key}` must be {{\"longest_edge\": <positive integer>}}, found {s}"))
                    }),
            }
        };
        let resample = match v.get("resample").and_then(Value::as_u64) {
            Some(code) => Resample::from_pil(code)?,
            None => d.resample,
        };
        Ok(Self {
            do_resize: boolean("do_resize", d.do_resize),
            longest_edge: edge("size", d.longest_edge)?,
            do_image_splitting: boolean("do_image_splitting", d.do_image_splitting),
            max_image_size: edge("max_image_size", d.max_image_size)?,
            resample,
            do_rescale: boolean("do_rescale", d.do_rescale),
            rescale_factor: v.get("rescale_factor").and_then(Value::as_f64).unwrap_or(d.rescale_factor),
            do_normalize: boolean("do_normalize", d.do_normalize),
            image_mean: triple("image_mean", d.image_mean)?,
            image_std: triple("image_std", d.image_std)?,
            image_seq_len: None,
        })
    }

    /// Decodes an image file (any format the `image` crate was built with) and preprocesses it.
    pub fn preprocess_file(&self, path: &Path) -> Result<Idefics3Pixels> {
        let img = image::open(path).map_err(|e| VlmError::Image(format!("{}: {e}", path.display())))?;
        self.preprocess(&img.to_rgb8())
    }

    /// Preprocesses one RGB image into its tiles.
    pub fn preprocess(&self, img: &image::RgbImage) -> Result<Idefics3Pixels> {
        let (w0, h0) = (img.width() as usize, img.height() as usize);
        if w0 == 0 || h0 == 0 {
            return Err(VlmError::Image(format!("empty image {w0}×{h0}")));
        }
        let mut image = Rgb { data: img.as_raw().clone(), h: h0, w: w0 };
        if self.do_resize {
            let (h, w) = resize_output_size(h0, w0, self.longest_edge);
            image = image.resize(h, w, self.resample);
        }
        let m = self.max_image_size;
        let (frames, rows, cols) = if self.do_image_splitting {
            let (h, w) = vision_encoder_size(image.h, image.w, m);
            let image = image.resize(h, w, self.resample);
            if h > m || w > m {
                let (rows, cols) = ((h - m) / m + 1, (w - m) / m + 1);
                let mut frames = Vec::with_capacity(rows * cols + 1);
                for r in 0..rows {
                    for c in 0..cols {
                        frames.push(image.crop(r * m, c * m, m, m));
                    }
                }
                frames.push(image.resize(m, m, self.resample));
                (frames, rows, cols)
            } else {
                (vec![image], 0, 0)
            }
        } else {
            (vec![image.resize(m, m, self.resample)], 0, 0)
        };

        // Rescale in f64 then f32, normalise in f32 (numpy's order); pad bottom/right with zeros.
        let (height, width) =
            (frames.iter().map(|f| f.h).max().unwrap_or(m), frames.iter().map(|f| f.w).max().unwrap_or(m));
        let mean = self.image_mean.map(|v| v as f32);
        let std = self.image_std.map(|v| v as f32);
        let mut values = vec![0f32; frames.len() * 3 * height * width];
        let mut mask = vec![false; frames.len() * height * width];
        for (t, f) in frames.iter().enumerate() {
            for y in 0..f.h {
                for x in 0..f.w {
                    mask[(t * height + y) * width + x] = true;
                    for c in 0..3 {
                        let u = f.data[(y * f.w + x) * 3 + c];
                        let mut v =
                            if self.do_rescale { (f64::from(u) * self.rescale_factor) as f32 } else { f32::from(u) };
                        if self.do_normalize {
                            v = (v - mean[c]) / std[c];
                        }
                        values[((t * 3 + c) * height + y) * width + x] = v;
                    }
                }
            }
        }
        Ok(Idefics3Pixels { values, tiles: frames.len(), height, width, pixel_attention_mask: mask, rows, cols })
    }
}

/// Replaces the `i`-th `<image>` of `text` by the token layout of an image split into `grids[i] =
/// (rows, cols)` tiles (`(0, 0)`: a single global tile), with `image_seq_len` `<image>` tokens per tile.
pub fn expand_image_tokens(text: &str, grids: &[(usize, usize)], image_seq_len: usize) -> Result<String> {
    let pieces: Vec<&str> = text.split(IMAGE_TOKEN).collect();
    if pieces.len() - 1 != grids.len() {
        return Err(VlmError::Input(format!(
            "the prompt has {} {IMAGE_TOKEN} placeholders but {} images were given",
            pieces.len() - 1,
            grids.len()
        )));
    }
    let tile = IMAGE_TOKEN.repeat(image_seq_len);
    let global = format!("{FAKE_IMAGE_TOKEN}{GLOBAL_IMAGE_TOKEN}{tile}{FAKE_IMAGE_TOKEN}");
    let mut out = String::with_capacity(text.len());
    for (i, piece) in pieces.iter().enumerate() {
        out.push_str(piece);
        let Some(&(rows, cols)) = grids.get(i) else { continue };
        if rows == 0 && cols == 0 {
            out.push_str(&global);
            continue;
        }
        for r in 1..=rows {
            for c in 1..=cols {
                out.push_str(&format!("{FAKE_IMAGE_TOKEN}<row_{r}_col_{c}>{tile}"));
            }
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&global);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_images_stay_flat_under_every_filter() {
        let src = vec![77u8; 30 * 20 * 3];
        for f in [Resample::Lanczos, Resample::Bicubic, Resample::Bilinear] {
            assert!(resize_pil(&src, 20, 30, 57, 11, f).iter().all(|&v| v == 77));
        }
    }

    #[test]
    fn expansion_matches_the_processor_layout() {
        let out = expand_image_tokens("a<image>b", &[(1, 2)], 2).unwrap();
        let f = FAKE_IMAGE_TOKEN;
        let t = "<image><image>";
        assert_eq!(out, format!("a{f}<row_1_col_1>{t}{f}<row_1_col_2>{t}\n\n{f}<global-img>{t}{f}b"));
        assert_eq!(expand_image_tokens("<image>", &[(0, 0)], 1).unwrap(), format!("{f}<global-img><image>{f}"));
        assert!(expand_image_tokens("no image", &[(0, 0)], 1).is_err());
    }
}
