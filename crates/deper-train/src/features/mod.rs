//! Image patch features and their cache (`deper features extract`).
//!
//! DEPER reads images only through a frozen backbone's patch grid, so the grid is computed once per
//! image and cached next to the dataset ([`cache`]: `DATA/features/<name>/`, sharded, resumable,
//! read an image at a time). Extractors:
//! * [`PIXEL_STATS`]: a parameter-free descriptor for the synthetic world ([`pixel_stats`]).
//! * [`DINOV3`]: a Hugging Face DINOv3 checkpoint folder as downloaded, ViT or ConvNeXt (the
//!   authors' `facebook/dinov3-convnext-tiny-pretrain-lvd1689m`), through its own
//!   `preprocessor_config.json` at 448×448 by default; the tokens after the prefix (ConvNeXt: the
//!   pooled token; ViT: CLS and registers) form the grid, as the authors' `last_hidden_state[:, 1:]`.

pub mod cache;
mod image_file;
mod pixel_stats;

use burn::prelude::*;
use deper_core::dataset::Dataset;
use deper_model::backbone::{AnyBackbone, Dinov3ImageProcessor};
use std::path::{Path, PathBuf};

pub use cache::{cache_dir, is_complete, load, CacheDtype, CacheSource, CacheWriter, FeatureMeta, FeatureStore};
pub use image_file::decode_image;
pub use pixel_stats::{pixel_stats, PIXEL_STATS};

use crate::{Result, TrainError};

/// The DINOv3 extractor's name on the command line.
pub const DINOV3: &str = "dinov3";
/// The authors' input side.
pub const DEFAULT_IMAGE_SIZE: usize = 448;

/// How `deper features extract` runs.
#[derive(Debug, Clone)]
pub struct ExtractSettings {
    /// [`PIXEL_STATS`] or [`DINOV3`].
    pub backbone: String,
    /// The cache's name under `DATA/features/` (what stage 1's `--backbone` reads); defaults to
    /// `backbone`.
    pub name: Option<String>,
    /// The checkpoint folder ([`DINOV3`] only).
    pub model: Option<PathBuf>,
    /// Square input side in pixels ([`DINOV3`] only).
    pub image_size: usize,
    /// Images per forward pass.
    pub batch_size: usize,
    pub dtype: CacheDtype,
    /// Images per shard file (default: about 256 MiB of features); an interrupted extraction
    /// keeps the shards it finished.
    pub images_per_shard: Option<usize>,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        Self {
            backbone: PIXEL_STATS.into(),
            name: None,
            model: None,
            image_size: DEFAULT_IMAGE_SIZE,
            batch_size: 8,
            dtype: CacheDtype::F32,
            images_per_shard: None,
        }
    }
}

impl ExtractSettings {
    pub fn cache_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.backbone)
    }
}

/// The dataset's images that have files, in manifest order, with their paths (the manifest's
/// image folder, which an import with `--images` points outside the dataset).
fn image_files(ds: &Dataset) -> Result<Vec<ImageFile>> {
    let images: Vec<ImageFile> = ds
        .manifest
        .images
        .iter()
        .filter_map(|info| ds.image_path(&info.id).map(|path| (info.id.clone(), path)))
        .collect();
    if images.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: the dataset lists no image files (import with --images DIR)",
            ds.dir.display()
        )));
    }
    Ok(images)
}

/// Computes `pixel-stats` features of every image of `ds` and completes the cache (resuming one
/// an earlier run left unfinished). `progress(done, total)` is called after each image.
pub fn extract(ds: &Dataset, backbone: &str, progress: &mut dyn FnMut(usize, usize)) -> Result<FeatureMeta> {
    let settings = ExtractSettings { backbone: backbone.into(), ..ExtractSettings::default() };
    extract_pixel_stats(ds, &settings, progress)
}

fn extract_pixel_stats(
    ds: &Dataset,
    settings: &ExtractSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FeatureMeta> {
    if settings.backbone != PIXEL_STATS {
        return Err(unknown_backbone(&settings.backbone));
    }
    let size = pixel_stats::PIXEL_STATS_SIZE as usize;
    let meta = FeatureMeta {
        backbone: settings.cache_name().into(),
        grid_h: pixel_stats::PIXEL_STATS_GRID,
        grid_w: pixel_stats::PIXEL_STATS_GRID,
        dim: pixel_stats::PIXEL_STATS_DIM,
        images: 0,
        dtype: settings.dtype,
        source: CacheSource {
            extractor: PIXEL_STATS.into(),
            model_dir: String::new(),
            fingerprint: String::new(),
            image_size: [size, size],
        },
    };
    fill_cache(ds, meta, settings, progress, &mut |batch| batch.iter().map(|(_, path)| pixel_stats(path)).collect())
}

fn unknown_backbone(name: &str) -> TrainError {
    TrainError::Config(format!("unknown backbone `{name}` ({PIXEL_STATS} or {DINOV3})"))
}

/// One image of the dataset: its id and the file it lives in.
type ImageFile = (String, PathBuf);

/// Turns a batch of images into one feature row each.
type BatchFeatures<'a> = dyn FnMut(&[ImageFile]) -> Result<Vec<Vec<f32>>> + 'a;

/// Runs `compute` over the images the cache lacks, `settings.batch_size` at a time, and
/// completes the cache.
fn fill_cache(
    ds: &Dataset,
    meta: FeatureMeta,
    settings: &ExtractSettings,
    progress: &mut dyn FnMut(usize, usize),
    compute: &mut BatchFeatures<'_>,
) -> Result<FeatureMeta> {
    let images = image_files(ds)?;
    let mut writer = CacheWriter::open(&ds.dir, meta, settings.images_per_shard)?;
    let todo: Vec<ImageFile> = images.iter().filter(|(id, _)| !writer.is_done(id)).cloned().collect();
    let total = images.len();
    let mut done = total - todo.len();
    progress(done, total);
    for batch in todo.chunks(settings.batch_size.max(1)) {
        for (_, path) in batch {
            if !path.is_file() {
                return Err(TrainError::Image { path: path.clone(), message: "file not found".into() });
            }
        }
        let values = compute(batch)?;
        for ((id, _), v) in batch.iter().zip(values) {
            writer.push(id.clone(), v)?;
        }
        done += batch.len();
        progress(done, total);
    }
    writer.finish()
}

/// Computes DINOv3 features (`settings.backbone` = [`DINOV3`]) on `device` and completes the
/// cache, resuming one an earlier run left unfinished; `pixel-stats` needs no device and goes
/// through [`extract`].
pub fn extract_with<B: Backend>(
    ds: &Dataset,
    settings: &ExtractSettings,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FeatureMeta> {
    match settings.backbone.as_str() {
        PIXEL_STATS => extract_pixel_stats(ds, settings, progress),
        DINOV3 => extract_dinov3::<B>(ds, settings, device, progress),
        other => Err(unknown_backbone(other)),
    }
}

fn extract_dinov3<B: Backend>(
    ds: &Dataset,
    settings: &ExtractSettings,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FeatureMeta> {
    let model_dir = settings.model.as_deref().ok_or_else(|| {
        TrainError::Config(format!("--backbone {DINOV3} needs --model DIR (a Hugging Face DINOv3 checkpoint folder)"))
    })?;
    let model = AnyBackbone::<B>::load(model_dir, device)?;
    let size = settings.image_size;
    if size == 0 || size % model.stride() != 0 {
        return Err(TrainError::Config(format!(
            "--image-size {size}: {} needs a multiple of {} pixels",
            model.family(),
            model.stride()
        )));
    }
    let processor = image_processor(model_dir, size)?;
    let (grid_h, grid_w) = model.grid(size, size);
    let meta = FeatureMeta {
        backbone: settings.cache_name().into(),
        grid_h,
        grid_w,
        dim: model.hidden_size(),
        images: 0,
        dtype: settings.dtype,
        source: CacheSource {
            extractor: model.family().into(),
            model_dir: std::fs::canonicalize(model_dir).unwrap_or_else(|_| model_dir.into()).display().to_string(),
            fingerprint: fingerprint(model_dir)?,
            image_size: [size, size],
        },
    };
    let prefix = model.num_prefix_tokens();
    let dim = meta.dim;
    fill_cache(ds, meta, settings, progress, &mut |batch| {
        let mut pixels = Vec::with_capacity(batch.len() * 3 * size * size);
        for (_, path) in batch {
            let image = decode_image(path)?;
            let values = processor
                .preprocess_image(&image)
                .map_err(|e| TrainError::Image { path: path.clone(), message: e.to_string() })?;
            pixels.extend(values);
        }
        let n = batch.len();
        let input = Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, 3, size, size]), device);
        let tokens = model.forward(input); // [n, prefix + gh·gw, dim]
        let grid = tokens.slice([0..n, prefix..prefix + grid_h * grid_w, 0..dim]);
        let values: Vec<f32> = grid
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| TrainError::Config(format!("backbone output: {e:?}")))?;
        Ok(values.chunks_exact(grid_h * grid_w * dim).map(<[f32]>::to_vec).collect())
    })
}

/// The checkpoint's image processor at `size`×`size` (resize, rescale, ImageNet mean/std); the
/// defaults when the folder has no `preprocessor_config.json`.
fn image_processor(model_dir: &Path, size: usize) -> Result<Dinov3ImageProcessor> {
    let path = model_dir.join("preprocessor_config.json");
    let mut processor = if path.is_file() {
        Dinov3ImageProcessor::from_json_file(&path)?
    } else {
        Dinov3ImageProcessor::new(size, size)
    };
    processor.size.height = size;
    processor.size.width = size;
    processor.do_resize = true;
    Ok(processor)
}

/// FNV-1a over `config.json` and the weight files' names and sizes: enough to tell two
/// checkpoints apart without reading gigabytes.
fn fingerprint(model_dir: &Path) -> Result<String> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    let config = model_dir.join("config.json");
    feed(&std::fs::read(&config).map_err(|e| TrainError::Io { path: config.clone(), source: e })?);
    let mut weights: Vec<(String, u64)> = std::fs::read_dir(model_dir)
        .map_err(|e| TrainError::Io { path: model_dir.into(), source: e })?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect();
    weights.sort();
    for (name, len) in weights {
        feed(name.as_bytes());
        feed(&len.to_le_bytes());
    }
    Ok(format!("{hash:016x}"))
}
