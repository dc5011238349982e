//! The feature cache on disk: `DATA/features/<backbone>/`, safetensors shards and an index.
//!
//! COCO-LN has ~118k images and a 448² ViT-S/16 grid is 1.2 MB in f32, so the cache can never be
//! loaded whole: a shard holds a few hundred images (one `[h, w, c]` tensor each, keyed by image
//! id), `index.json` lists the finished shards, and readers fetch one image at a time with a
//! positioned read (not a memory map, whose touched pages would count as the reader's memory).
//!
//! Writing is resumable: a shard is written to a temporary file and renamed, then the index is
//! rewritten atomically, so after an interruption every shard the index names is whole and the
//! images in it are skipped by the next run. `complete` turns true only when every image is in.

use deper_core::dataset::write_json_atomic;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::{Result, TrainError};

pub const INDEX_FILE: &str = "index.json";
const FORMAT: &str = "deper-features";
const VERSION: u32 = 2;
/// Shards of about this size: large enough that COCO needs a few hundred files, small enough that
/// an interrupted extraction loses little.
pub const DEFAULT_SHARD_BYTES: usize = 256 << 20;

/// Element type on disk. Readers always get f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheDtype {
    #[default]
    F32,
    /// Half the disk; DINOv3 features lose ~3 decimal digits, far below their spread.
    F16,
}

impl CacheDtype {
    fn bytes(self) -> usize {
        match self {
            CacheDtype::F32 => 4,
            CacheDtype::F16 => 2,
        }
    }

    fn safetensors_name(self) -> &'static str {
        match self {
            CacheDtype::F32 => "F32",
            CacheDtype::F16 => "F16",
        }
    }
}

impl std::str::FromStr for CacheDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(CacheDtype::F32),
            "f16" => Ok(CacheDtype::F16),
            _ => Err(format!("unknown feature dtype `{s}` (f32 or f16)")),
        }
    }
}

/// Which extractor made a cache: a cache is only resumed or read by the same one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheSource {
    /// `pixel-stats`, or the checkpoint's `model_type` (`dinov3_vit`, `dinov3_convnext`).
    pub extractor: String,
    /// The checkpoint folder, absolute; empty for `pixel-stats`.
    #[serde(default)]
    pub model_dir: String,
    /// A digest of the checkpoint's `config.json` and weight file sizes; empty for `pixel-stats`.
    #[serde(default)]
    pub fingerprint: String,
    /// Input `[height, width]` after preprocessing.
    pub image_size: [usize; 2],
}

/// What a feature cache holds (`index.json` minus the shard list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMeta {
    pub backbone: String,
    pub grid_h: usize,
    pub grid_w: usize,
    pub dim: usize,
    /// Images in the cache so far.
    pub images: usize,
    #[serde(default)]
    pub dtype: CacheDtype,
    pub source: CacheSource,
}

impl FeatureMeta {
    /// "dinov3_convnext from /models/x, 14×14×768 f16 at 448×448": what tells two caches apart.
    pub fn describe(&self) -> String {
        let [h, w] = self.source.image_size;
        let from =
            if self.source.model_dir.is_empty() { String::new() } else { format!(" from {}", self.source.model_dir) };
        let dtype = format!("{:?}", self.dtype).to_lowercase();
        format!("{}{from}, {}×{}×{} {dtype} at {h}×{w}", self.source.extractor, self.grid_h, self.grid_w, self.dim)
    }

    /// Values per image.
    pub fn patch_len(&self) -> usize {
        self.grid_h * self.grid_w * self.dim
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Shard {
    file: String,
    images: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Index {
    format: String,
    version: u32,
    #[serde(flatten)]
    meta: FeatureMeta,
    complete: bool,
    shards: Vec<Shard>,
}

pub fn cache_dir(data_dir: &Path, backbone: &str) -> PathBuf {
    data_dir.join("features").join(backbone)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io { path: path.into(), source: e }
}

fn read_index(dir: &Path) -> Result<Option<Index>> {
    let path = dir.join(INDEX_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let index: Index = serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: not a deper feature index: {e}", path.display())))?;
    if index.format != FORMAT || index.version != VERSION {
        return Err(TrainError::Config(format!(
            "{}: format {} v{} (this build reads {FORMAT} v{VERSION}); delete the folder and extract again",
            path.display(),
            index.format,
            index.version
        )));
    }
    Ok(Some(index))
}

/// Appends images to a cache, a shard at a time.
#[derive(Debug)]
pub struct CacheWriter {
    dir: PathBuf,
    index: Index,
    done: HashSet<String>,
    pending: Vec<(String, Vec<f32>)>,
    images_per_shard: usize,
}

impl CacheWriter {
    /// Opens the cache of `meta.backbone` in `data_dir` to add to it, or starts one, writing
    /// shards of `images_per_shard` images (default: about [`DEFAULT_SHARD_BYTES`]). An existing
    /// cache made by another source, or with another grid, is an error naming its index.
    pub fn open(data_dir: &Path, meta: FeatureMeta, images_per_shard: Option<usize>) -> Result<Self> {
        let dir = cache_dir(data_dir, &meta.backbone);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let index = match read_index(&dir)? {
            Some(old) => {
                let same = old.meta.source == meta.source
                    && (old.meta.grid_h, old.meta.grid_w, old.meta.dim) == (meta.grid_h, meta.grid_w, meta.dim)
                    && old.meta.dtype == meta.dtype;
                if !same {
                    return Err(TrainError::Config(format!(
                        "{}: this cache holds {}, not {}; delete the folder or extract under another --name",
                        dir.join(INDEX_FILE).display(),
                        old.meta.describe(),
                        meta.describe(),
                    )));
                }
                old
            }
            None => Index {
                format: FORMAT.into(),
                version: VERSION,
                meta: FeatureMeta { images: 0, ..meta },
                complete: false,
                shards: vec![],
            },
        };
        remove_stale_temporaries(&dir)?;
        let done = index.shards.iter().flat_map(|s| s.images.iter().cloned()).collect();
        let per_image = index.meta.patch_len() * index.meta.dtype.bytes();
        let images_per_shard = images_per_shard.unwrap_or(DEFAULT_SHARD_BYTES / per_image.max(1)).max(1);
        Ok(Self { dir, index, done, pending: vec![], images_per_shard })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_done(&self, image: &str) -> bool {
        self.done.contains(image)
    }

    /// Images already in finished shards.
    pub fn images_done(&self) -> usize {
        self.done.len()
    }

    /// Adds one image; writes a shard when enough are pending.
    pub fn push(&mut self, image: String, values: Vec<f32>) -> Result<()> {
        let want = self.index.meta.patch_len();
        if values.len() != want {
            return Err(TrainError::Config(format!(
                "image `{image}`: {} feature values, the cache holds {want} per image",
                values.len()
            )));
        }
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(TrainError::Config(format!("image `{image}`: feature {bad} is not finite")));
        }
        self.pending.push((image, values));
        if self.pending.len() >= self.images_per_shard {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending images as a shard and records it in the index.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let name = format!("shard-{:05}.safetensors", self.index.shards.len());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let meta = &self.index.meta;
        write_shard(&tmp, &self.pending, [meta.grid_h, meta.grid_w, meta.dim], meta.dtype)?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        let images: Vec<String> = self.pending.drain(..).map(|(id, _)| id).collect();
        self.done.extend(images.iter().cloned());
        self.index.meta.images += images.len();
        self.index.shards.push(Shard { file: name, images });
        write_json_atomic(&self.dir.join(INDEX_FILE), &self.index)?;
        Ok(())
    }

    /// Flushes and marks the cache complete.
    pub fn finish(mut self) -> Result<FeatureMeta> {
        self.flush()?;
        self.index.complete = true;
        write_json_atomic(&self.dir.join(INDEX_FILE), &self.index)?;
        Ok(self.index.meta)
    }
}

/// A `.tmp` shard is what an interrupted run was writing: never listed, safe to remove.
fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

fn write_shard(path: &Path, images: &[(String, Vec<f32>)], shape: [usize; 3], dtype: CacheDtype) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<Vec<u8>> = images
        .iter()
        .map(|(_, values)| match dtype {
            CacheDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            CacheDtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        })
        .collect();
    let st_dtype = match dtype {
        CacheDtype::F32 => Dtype::F32,
        CacheDtype::F16 => Dtype::F16,
    };
    let mut views = Vec::with_capacity(images.len());
    for ((id, _), data) in images.iter().zip(&bytes) {
        let view = TensorView::new(st_dtype, shape.to_vec(), data)
            .map_err(|e| TrainError::Config(format!("{}: image `{id}`: {e}", path.display())))?;
        views.push((id.clone(), view));
    }
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| TrainError::Config(format!("{}: cannot write a feature shard: {e}", path.display())))
}

/// Where one image's values sit.
#[derive(Debug, Clone, Copy)]
struct Location {
    shard: usize,
    offset: u64,
}

/// A finished cache, read an image at a time.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    pub meta: FeatureMeta,
    shards: Vec<PathBuf>,
    locations: HashMap<String, Location>,
}

/// Opens a finished cache. Only shard headers are read here.
pub fn load(data_dir: &Path, backbone: &str) -> Result<FeatureStore> {
    let dir = cache_dir(data_dir, backbone);
    let hint = || format!("run `deper features extract --data {} --backbone {backbone}`", data_dir.display());
    let index = read_index(&dir)?.ok_or_else(|| {
        TrainError::Config(format!("no `{backbone}` features for {}: {}", data_dir.display(), hint()))
    })?;
    if !index.complete {
        return Err(TrainError::Config(format!(
            "{}: the extraction was interrupted ({} images so far); {} to finish it",
            dir.display(),
            index.meta.images,
            hint()
        )));
    }
    let mut shards = Vec::with_capacity(index.shards.len());
    let mut locations = HashMap::with_capacity(index.meta.images);
    let want_shape = [index.meta.grid_h, index.meta.grid_w, index.meta.dim];
    for (s, shard) in index.shards.iter().enumerate() {
        let path = dir.join(&shard.file);
        let header = read_header(&path)?;
        for image in &shard.images {
            let entry = header.get(image).ok_or_else(|| {
                TrainError::Config(format!("{}: the index lists image `{image}`, the shard lacks it", path.display()))
            })?;
            let want_bytes = (index.meta.patch_len() * index.meta.dtype.bytes()) as u64;
            if entry.shape != want_shape
                || entry.dtype != index.meta.dtype.safetensors_name()
                || entry.end - entry.start != want_bytes
            {
                return Err(TrainError::Config(format!(
                    "{}: image `{image}` is {} {:?}, the index says {} {want_shape:?}",
                    path.display(),
                    entry.dtype,
                    entry.shape,
                    index.meta.dtype.safetensors_name()
                )));
            }
            locations.insert(image.clone(), Location { shard: s, offset: entry.data_start + entry.start });
        }
        shards.push(path);
    }
    Ok(FeatureStore { meta: index.meta, shards, locations })
}

/// Whether a finished cache of `backbone` exists (a cache an extraction is still filling is not).
pub fn is_complete(data_dir: &Path, backbone: &str) -> bool {
    matches!(read_index(&cache_dir(data_dir, backbone)), Ok(Some(index)) if index.complete)
}

struct HeaderEntry {
    dtype: String,
    shape: [usize; 3],
    data_start: u64,
    start: u64,
    end: u64,
}

/// The tensor table of a safetensors file, read without its data.
fn read_header(path: &Path) -> Result<HashMap<String, HeaderEntry>> {
    use std::io::Read;
    let bad = |m: String| TrainError::Config(format!("{}: not a valid feature shard: {m}", path.display()));
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io_err(path))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(bad(format!("header of {n} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io_err(path))?;
    let table: HashMap<String, serde_json::Value> = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let data_start = 8 + n;
    let mut out = HashMap::with_capacity(table.len());
    for (key, info) in table {
        if key == "__metadata__" {
            continue;
        }
        #[derive(Deserialize)]
        struct Info {
            dtype: String,
            shape: Vec<usize>,
            data_offsets: [u64; 2],
        }
        let info: Info = serde_json::from_value(info).map_err(|e| bad(format!("`{key}`: {e}")))?;
        let shape: [usize; 3] =
            info.shape.as_slice().try_into().map_err(|_| bad(format!("`{key}` has shape {:?}", info.shape)))?;
        let [start, end] = info.data_offsets;
        if start > end || data_start + end > file_len {
            return Err(bad(format!("`{key}` lies outside the file (truncated?)")));
        }
        out.insert(key, HeaderEntry { dtype: info.dtype, shape, data_start, start, end });
    }
    Ok(out)
}

impl FeatureStore {
    pub fn contains(&self, image: &str) -> bool {
        self.locations.contains_key(image)
    }

    pub fn len(&self) -> usize {
        self.locations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Values per image.
    pub fn patch_len(&self) -> usize {
        self.meta.patch_len()
    }

    /// One image's `[grid_h · grid_w · dim]` values, row-major `[y, x, c]`, as f32.
    pub fn read(&self, image: &str) -> Result<Vec<f32>> {
        use std::io::{Read, Seek, SeekFrom};
        let at = self.locations.get(image).ok_or_else(|| TrainError::MissingImage { image: image.into() })?;
        let path = &self.shards[at.shard];
        let width = self.meta.dtype.bytes();
        let mut bytes = vec![0u8; self.patch_len() * width];
        let mut file = std::fs::File::open(path).map_err(io_err(path))?;
        file.seek(SeekFrom::Start(at.offset)).map_err(io_err(path))?;
        file.read_exact(&mut bytes).map_err(io_err(path))?;
        Ok(match self.meta.dtype {
            CacheDtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            CacheDtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(extractor: &str, dtype: CacheDtype) -> FeatureMeta {
        FeatureMeta {
            backbone: "test".into(),
            grid_h: 2,
            grid_w: 3,
            dim: 4,
            images: 0,
            dtype,
            source: CacheSource {
                extractor: extractor.into(),
                model_dir: "/m".into(),
                fingerprint: "f".into(),
                image_size: [64, 96],
            },
        }
    }

    fn values(seed: usize) -> Vec<f32> {
        (0..24).map(|i| (seed * 100 + i) as f32 * 0.25 - 3.0).collect()
    }

    #[test]
    fn shards_round_trip_and_resume_skips_finished_images() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = CacheWriter::open(dir.path(), meta("x", CacheDtype::F32), Some(2)).unwrap();
        for i in 0..3 {
            w.push(format!("img{i}"), values(i)).unwrap();
        }
        // Interrupted: one full shard on disk, one image pending and lost.
        drop(w);
        let err = load(dir.path(), "test").unwrap_err().to_string();
        assert!(err.contains("interrupted (2 images so far)"), "{err}");
        assert!(!is_complete(dir.path(), "test"));
        // A temporary shard of the interrupted run is removed on reopening.
        std::fs::write(cache_dir(dir.path(), "test").join("shard-00001.safetensors.tmp"), b"half").unwrap();
        let mut w = CacheWriter::open(dir.path(), meta("x", CacheDtype::F32), Some(2)).unwrap();
        assert!(!cache_dir(dir.path(), "test").join("shard-00001.safetensors.tmp").exists());
        assert_eq!(w.images_done(), 2);
        assert!(w.is_done("img1") && !w.is_done("img2"));
        for i in 2..5 {
            w.push(format!("img{i}"), values(i)).unwrap();
        }
        let done = w.finish().unwrap();
        assert_eq!(done.images, 5);
        let store = load(dir.path(), "test").unwrap();
        assert_eq!(store.len(), 5);
        assert_eq!(store.shards.len(), 3, "2 + 2 + 1 images");
        for i in 0..5 {
            assert_eq!(store.read(&format!("img{i}")).unwrap(), values(i));
        }
        assert!(matches!(store.read("nope"), Err(TrainError::MissingImage { .. })));
    }

    #[test]
    fn half_precision_shards_read_back_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = CacheWriter::open(dir.path(), meta("x", CacheDtype::F16), None).unwrap();
        w.push("a".into(), values(1)).unwrap();
        w.finish().unwrap();
        let got = load(dir.path(), "test").unwrap().read("a").unwrap();
        for (g, v) in got.iter().zip(values(1)) {
            assert!((g - v).abs() <= v.abs() * 1e-3, "{g} vs {v}");
        }
        let header = read_header(&cache_dir(dir.path(), "test").join("shard-00000.safetensors")).unwrap();
        assert_eq!((header["a"].dtype.as_str(), header["a"].end - header["a"].start), ("F16", 24 * 2));
    }

    #[test]
    fn another_source_bad_values_and_a_truncated_shard_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = CacheWriter::open(dir.path(), meta("dinov3_vit", CacheDtype::F32), None).unwrap();
        let err = w.push("short".into(), vec![0.0; 5]).unwrap_err().to_string();
        assert!(err.contains("`short`") && err.contains("24 per image"), "{err}");
        let mut bad = values(0);
        bad[3] = f32::INFINITY;
        assert!(w.push("inf".into(), bad).unwrap_err().to_string().contains("not finite"));
        w.push("a".into(), values(0)).unwrap();
        w.finish().unwrap();
        let err =
            CacheWriter::open(dir.path(), meta("dinov3_convnext", CacheDtype::F32), None).err().unwrap().to_string();
        assert!(err.contains("index.json") && err.contains("dinov3_vit") && err.contains("dinov3_convnext"), "{err}");
        let shard = cache_dir(dir.path(), "test").join("shard-00000.safetensors");
        let bytes = std::fs::read(&shard).unwrap();
        std::fs::write(&shard, &bytes[..bytes.len() - 8]).unwrap();
        let err = load(dir.path(), "test").unwrap_err().to_string();
        assert!(err.contains("shard-00000.safetensors") && err.contains("truncated"), "{err}");
    }
}
