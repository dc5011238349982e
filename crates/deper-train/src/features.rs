//! Image patch features and their cache (`deper features extract`).
//!
//! DEPER reads images only through a frozen backbone's patch grid, so the
//! grid is computed once per image and cached next to the dataset:
//! `DIR/features/<backbone>.safetensors` holds one `[h, w, c]` tensor per
//! image id, and `<backbone>.json` says how it was made.
//!
//! Backbones:
//! * `pixel-stats`: a fixed, parameter-free descriptor for the synthetic
//!   world (no pretrained weights can be downloaded here). Each 32×32 patch of
//!   the 448×448 image gives 16 numbers: mean, standard deviation and maximum
//!   of R, G, B; mean absolute horizontal and vertical differences of R, G, B;
//!   and the standard deviation of luminance. Grid 14×14.
//! * DINOv3 (a Hugging Face checkpoint folder) arrives with the backbone port.

use deper_core::dataset::Dataset;
use deper_weights::{write_safetensors, Checkpoint, TensorData};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::TrainError;

pub const PIXEL_STATS: &str = "pixel-stats";
const PIXEL_STATS_SIZE: u32 = 448;
const PIXEL_STATS_PATCH: u32 = 32;
const PIXEL_STATS_DIM: usize = 16;

/// What a feature cache holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMeta {
    pub backbone: String,
    pub grid_h: usize,
    pub grid_w: usize,
    pub dim: usize,
    pub images: usize,
}

/// Patch features of every image of a dataset, in memory.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    pub meta: FeatureMeta,
    /// Image id → `[grid_h · grid_w · dim]`, row-major `[y, x, c]`.
    features: HashMap<String, Vec<f32>>,
}

impl FeatureStore {
    pub fn get(&self, image: &str) -> Option<&[f32]> {
        self.features.get(image).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Per-image values per patch.
    pub fn patch_len(&self) -> usize {
        self.meta.grid_h * self.meta.grid_w * self.meta.dim
    }
}

pub fn cache_paths(data_dir: &Path, backbone: &str) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("features");
    (dir.join(format!("{backbone}.safetensors")), dir.join(format!("{backbone}.json")))
}

/// The pixel-stats descriptor of one image file.
pub fn pixel_stats(path: &Path) -> Result<Vec<f32>, TrainError> {
    let img = image::open(path).map_err(|e| TrainError::Image { path: path.into(), message: e.to_string() })?.to_rgb8();
    let img = if img.dimensions() == (PIXEL_STATS_SIZE, PIXEL_STATS_SIZE) {
        img
    } else {
        image::imageops::resize(&img, PIXEL_STATS_SIZE, PIXEL_STATS_SIZE, image::imageops::FilterType::Triangle)
    };
    let grid = (PIXEL_STATS_SIZE / PIXEL_STATS_PATCH) as usize;
    let p = PIXEL_STATS_PATCH;
    let mut out = Vec::with_capacity(grid * grid * PIXEL_STATS_DIM);
    let px = |x: u32, y: u32| -> [f32; 3] {
        let v = img.get_pixel(x, y).0;
        [f32::from(v[0]) / 255.0, f32::from(v[1]) / 255.0, f32::from(v[2]) / 255.0]
    };
    for gy in 0..grid as u32 {
        for gx in 0..grid as u32 {
            let (mut sum, mut sq, mut max) = ([0f32; 3], [0f32; 3], [0f32; 3]);
            let (mut dx, mut dy) = ([0f32; 3], [0f32; 3]);
            let (mut lum_sum, mut lum_sq) = (0f32, 0f32);
            for y in gy * p..(gy + 1) * p {
                for x in gx * p..(gx + 1) * p {
                    let c = px(x, y);
                    let right = if x + 1 < (gx + 1) * p { px(x + 1, y) } else { c };
                    let below = if y + 1 < (gy + 1) * p { px(x, y + 1) } else { c };
                    for k in 0..3 {
                        sum[k] += c[k];
                        sq[k] += c[k] * c[k];
                        max[k] = max[k].max(c[k]);
                        dx[k] += (right[k] - c[k]).abs();
                        dy[k] += (below[k] - c[k]).abs();
                    }
                    let lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
                    lum_sum += lum;
                    lum_sq += lum * lum;
                }
            }
            let n = (p * p) as f32;
            let mean: Vec<f32> = sum.iter().map(|s| s / n).collect();
            out.extend(&mean);
            out.extend((0..3).map(|k| (sq[k] / n - mean[k] * mean[k]).max(0.0).sqrt()));
            out.extend(max);
            out.extend(dx.iter().map(|d| d / n));
            out.extend(dy.iter().map(|d| d / n));
            let lum_mean = lum_sum / n;
            out.push((lum_sq / n - lum_mean * lum_mean).max(0.0).sqrt());
        }
    }
    Ok(out)
}

/// Computes the features of every image with a file and writes the cache.
/// `progress(done, total)` is called after each image.
pub fn extract(
    ds: &Dataset,
    backbone: &str,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FeatureMeta, TrainError> {
    if backbone != PIXEL_STATS {
        return Err(TrainError::Config(format!(
            "unknown backbone `{backbone}`: this build extracts `{PIXEL_STATS}` (DINOv3 features come with the backbone port)"
        )));
    }
    let grid = (PIXEL_STATS_SIZE / PIXEL_STATS_PATCH) as usize;
    let images: Vec<_> = ds.manifest.images.iter().filter(|i| i.file.is_some()).collect();
    if images.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: the dataset lists no image files (import with --images DIR)",
            ds.dir.display()
        )));
    }
    let mut features = Vec::with_capacity(images.len());
    for (i, info) in images.iter().enumerate() {
        let path = ds.image_path(&info.id).ok_or_else(|| TrainError::MissingImage { image: info.id.clone() })?;
        if !path.is_file() {
            return Err(TrainError::Image { path, message: "file not found".into() });
        }
        features.push((info.id.clone(), pixel_stats(&path)?));
        progress(i + 1, images.len());
    }
    let meta = FeatureMeta {
        backbone: backbone.into(),
        grid_h: grid,
        grid_w: grid,
        dim: PIXEL_STATS_DIM,
        images: features.len(),
    };
    let (tensor_path, meta_path) = cache_paths(&ds.dir, backbone);
    if let Some(dir) = tensor_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::Io { path: dir.into(), source: e })?;
    }
    let shape = [grid, grid, PIXEL_STATS_DIM];
    let tensors: Vec<(&str, TensorData<'_>)> =
        features.iter().map(|(id, v)| (id.as_str(), TensorData::F32(v.as_slice(), &shape))).collect();
    write_safetensors(&tensor_path, &tensors)?;
    deper_core::dataset::write_json_atomic(&meta_path, &meta)?;
    Ok(meta)
}

/// Loads a feature cache written by [`extract`].
pub fn load(data_dir: &Path, backbone: &str) -> Result<FeatureStore, TrainError> {
    let (tensor_path, meta_path) = cache_paths(data_dir, backbone);
    if !meta_path.is_file() {
        return Err(TrainError::Config(format!(
            "no `{backbone}` features for {}: run `deper features extract --data {} --backbone {backbone}`",
            data_dir.display(),
            data_dir.display()
        )));
    }
    let text =
        std::fs::read_to_string(&meta_path).map_err(|e| TrainError::Io { path: meta_path.clone(), source: e })?;
    let meta: FeatureMeta =
        serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", meta_path.display())))?;
    let ck = Checkpoint::open(&tensor_path)?;
    let shape = [meta.grid_h, meta.grid_w, meta.dim];
    let mut features = HashMap::new();
    for key in ck.keys() {
        // A wrong width here names the image and both shapes.
        features.insert(key.clone(), ck.f32(&key, &shape)?);
    }
    Ok(FeatureStore { meta, features })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_stats_of_a_flat_and_a_split_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.png");
        // Left half red, right half blue: patches are flat except none straddle (448/32 = 14, split at 224 = 7·32).
        let img =
            image::RgbImage::from_fn(
                448,
                448,
                |x, _| if x < 224 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) },
            );
        img.save(&path).unwrap();
        let f = pixel_stats(&path).unwrap();
        assert_eq!(f.len(), 14 * 14 * 16);
        let patch = |gy: usize, gx: usize| &f[(gy * 14 + gx) * 16..(gy * 14 + gx + 1) * 16];
        let left = patch(3, 0);
        assert_eq!(&left[0..3], &[1.0, 0.0, 0.0], "mean rgb");
        assert!(left[3..6].iter().all(|s| s.abs() < 1e-6), "flat patch has no spread");
        assert_eq!(&left[6..9], &[1.0, 0.0, 0.0], "max rgb");
        assert!(left[9..15].iter().all(|d| *d == 0.0), "no gradients");
        let right = patch(3, 13);
        assert_eq!(&right[0..3], &[0.0, 0.0, 1.0]);
    }

    #[test]
    fn gradients_and_spread_inside_a_patch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stripes.png");
        // Vertical stripes of width 1: every horizontal neighbour differs by 1 in all channels.
        let img = image::RgbImage::from_fn(448, 448, |x, _| {
            if x % 2 == 0 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        img.save(&path).unwrap();
        let f = pixel_stats(&path).unwrap();
        let p = &f[0..16];
        assert!((p[0] - 0.5).abs() < 1e-6, "mean {}", p[0]);
        assert!((p[3] - 0.5).abs() < 1e-5, "std {}", p[3]);
        // 31 of 32 columns have a right neighbour inside the patch.
        assert!((p[9] - 31.0 / 32.0).abs() < 1e-6, "dx {}", p[9]);
        assert_eq!(p[12], 0.0, "dy");
        assert!((p[15] - 0.5).abs() < 1e-4, "luminance std {}", p[15]);
    }
}
