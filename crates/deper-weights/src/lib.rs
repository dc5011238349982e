//! Hugging Face safetensors checkpoints as plain buffers.
//!
//! [`Checkpoint::open`] takes a `*.safetensors` file, a sharded checkpoint's
//! `model.safetensors.index.json`, or a model folder holding either. Files are
//! memory-mapped natively (a 4 GB VLM costs no copy until a tensor is read) and
//! read into memory on wasm32. Tensors come out as `Vec<f32>` (from f32, f16,
//! bf16 or f64) or `Vec<i64>`, after a shape check; every error names the key,
//! the file and the expected and found shapes, so a wrong checkpoint is easy to
//! diagnose. No burn here: model crates turn the buffers into tensors.

use safetensors::tensor::{Dtype as StDtype, Metadata, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a valid safetensors file: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{}: no `{SINGLE_FILE}` or `{INDEX_FILE}` in this folder", path.display())]
    NoCheckpoint { path: PathBuf },
    #[error("missing tensor `{key}` (expected shape {expected:?}) in {checkpoint}")]
    Missing { key: String, expected: Vec<usize>, checkpoint: String },
    #[error("tensor `{key}` in {}: expected shape {expected:?}, found {found:?}", file.display())]
    Shape { key: String, file: PathBuf, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor `{key}` in {}: dtype {found} cannot be read as {wanted}", file.display())]
    Dtype { key: String, file: PathBuf, found: String, wanted: &'static str },
    /// [`Checkpoint::f32_rows`] on a tensor that is not 2-D, or a row past its end.
    #[error("tensor `{key}` in {}: {message}", file.display())]
    Rows { key: String, file: PathBuf, message: String },
}

pub type Result<T, E = WeightsError> = std::result::Result<T, E>;

/// The bytes of one shard.
enum Bytes {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

struct Shard {
    path: PathBuf,
    bytes: Bytes,
    /// Start of the data section (after the 8-byte length and the JSON header).
    data_start: usize,
    metadata: Metadata,
}

impl Shard {
    fn open(path: &Path) -> Result<Self> {
        let bytes = read_bytes(path)?;
        Self::from_bytes(path, bytes)
    }

    fn from_bytes(path: &Path, bytes: Bytes) -> Result<Self> {
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| WeightsError::Format { path: path.into(), message: e.to_string() })?;
        Ok(Self { path: path.into(), data_start: 8 + header_len, bytes, metadata })
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn read_bytes(path: &Path) -> Result<Bytes> {
    let file = std::fs::File::open(path).map_err(|e| WeightsError::Io { path: path.into(), source: e })?;
    #[allow(unsafe_code)]
    // SAFETY: the map is read-only and private to this process. Checkpoints are
    // not modified while a model loads; if one were truncated underneath us the
    // process could fault, which is the accepted trade-off of memory-mapping
    // (the same as the reference loaders in Python and candle).
    let map = unsafe { memmap2::Mmap::map(&file) };
    match map {
        Ok(m) => Ok(Bytes::Mapped(m)),
        // Some filesystems cannot map; fall back to reading.
        Err(_) => std::fs::read(path).map(Bytes::Owned).map_err(|e| WeightsError::Io { path: path.into(), source: e }),
    }
}

#[cfg(target_arch = "wasm32")]
fn read_bytes(path: &Path) -> Result<Bytes> {
    std::fs::read(path).map(Bytes::Owned).map_err(|e| WeightsError::Io { path: path.into(), source: e })
}

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I8,
    U8,
    Bool,
    Other,
}

impl From<StDtype> for Dtype {
    fn from(d: StDtype) -> Self {
        match d {
            StDtype::F32 => Dtype::F32,
            StDtype::F16 => Dtype::F16,
            StDtype::BF16 => Dtype::BF16,
            StDtype::F64 => Dtype::F64,
            StDtype::I64 => Dtype::I64,
            StDtype::I32 => Dtype::I32,
            StDtype::I8 => Dtype::I8,
            StDtype::U8 => Dtype::U8,
            StDtype::BOOL => Dtype::Bool,
            _ => Dtype::Other,
        }
    }
}

impl Dtype {
    /// Bytes per value of a floating-point dtype (what [`Checkpoint::f32`] reads); `None` otherwise.
    fn float_bytes(self) -> Option<usize> {
        match self {
            Dtype::F32 => Some(4),
            Dtype::F16 | Dtype::BF16 => Some(2),
            Dtype::F64 => Some(8),
            _ => None,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A checkpoint of one or more safetensors shards.
pub struct Checkpoint {
    /// What was opened, for messages.
    origin: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → shard index.
    index: HashMap<String, usize>,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint").field("origin", &self.origin).field("tensors", &self.index.len()).finish()
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens a `.safetensors` file, an index JSON, or a folder holding either.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let single = path.join(SINGLE_FILE);
            let index = path.join(INDEX_FILE);
            if single.is_file() {
                return Self::open(&single);
            }
            if index.is_file() {
                return Self::open(&index);
            }
            return Err(WeightsError::NoCheckpoint { path: path.into() });
        }
        if path.extension().is_some_and(|e| e == "json") {
            return Self::open_index(path);
        }
        let shard = Shard::open(path)?;
        Ok(Self::from_shards(path, vec![shard]))
    }

    /// A checkpoint from bytes already in memory (e.g. fetched by a browser).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        let shard = Shard::from_bytes(Path::new(name), Bytes::Owned(bytes))?;
        Ok(Self::from_shards(Path::new(name), vec![shard]))
    }

    fn open_index(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| WeightsError::Io { path: path.into(), source: e })?;
        let index: ShardIndex = serde_json::from_str(&text)
            .map_err(|e| WeightsError::Format { path: path.into(), message: format!("bad shard index: {e}") })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<&String> = index.weight_map.values().collect();
        files.sort();
        files.dedup();
        let mut shards = Vec::with_capacity(files.len());
        for file in files {
            if file.contains('/') || file.contains('\\') || file.contains("..") {
                return Err(WeightsError::Format {
                    path: path.into(),
                    message: format!("shard name `{file}` is not a plain file name"),
                });
            }
            let shard_path = dir.join(file);
            if !shard_path.is_file() {
                return Err(WeightsError::Io {
                    path: shard_path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("shard listed in {INDEX_FILE} is missing"),
                    ),
                });
            }
            shards.push(Shard::open(&shard_path)?);
        }
        let checkpoint = Self::from_shards(path, shards);
        // Every tensor the index promises must be in the shard it names.
        for key in index.weight_map.keys() {
            if !checkpoint.index.contains_key(key) {
                return Err(WeightsError::Format {
                    path: path.into(),
                    message: format!("the index lists `{key}` but no shard holds it"),
                });
            }
        }
        Ok(checkpoint)
    }

    fn from_shards(origin: &Path, shards: Vec<Shard>) -> Self {
        let mut index = HashMap::new();
        for (i, shard) in shards.iter().enumerate() {
            for name in shard.metadata.tensors().keys() {
                index.insert(name.clone(), i);
            }
        }
        Self { origin: origin.into(), shards, index }
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.index.keys().cloned().collect();
        keys.sort();
        keys
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Shape and dtype of a tensor.
    pub fn info(&self, key: &str) -> Option<(Vec<usize>, Dtype)> {
        let shard = &self.shards[*self.index.get(key)?];
        let info = shard.metadata.info(key)?;
        Some((info.shape.clone(), info.dtype.into()))
    }

    fn raw(&self, key: &str, expected: &[usize]) -> Result<(&Shard, Dtype, &[u8])> {
        let missing = || WeightsError::Missing {
            key: key.into(),
            expected: expected.to_vec(),
            checkpoint: self.origin.display().to_string(),
        };
        let shard = &self.shards[*self.index.get(key).ok_or_else(missing)?];
        let info = shard.metadata.info(key).ok_or_else(missing)?;
        if info.shape != expected {
            return Err(WeightsError::Shape {
                key: key.into(),
                file: shard.path.clone(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        let (start, end) = info.data_offsets;
        let bytes = shard.bytes.get(shard.data_start + start..shard.data_start + end).ok_or_else(|| {
            WeightsError::Format { path: shard.path.clone(), message: format!("data of `{key}` lies outside the file") }
        })?;
        Ok((shard, info.dtype.into(), bytes))
    }

    /// A floating-point tensor as f32, checked against `expected` shape.
    pub fn f32(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let (shard, dtype, bytes) = self.raw(key, expected)?;
        match dtype.float_bytes() {
            Some(_) => Ok(decode_f32(dtype, bytes)),
            None => Err(dtype_error(key, shard, dtype, "f32")),
        }
    }

    /// Rows `rows` (in that order, repeats allowed) of a 2-D floating-point tensor `[n, width]`,
    /// as f32 `[rows.len(), width]`. Only those rows' bytes are read, so on a memory-mapped
    /// checkpoint a large table (a VLM's input embeddings) costs the pages of the rows used.
    /// A tensor that is not 2-D or a row `>= n` is an error naming the key and the file.
    pub fn f32_rows(&self, key: &str, rows: &[usize]) -> Result<Vec<f32>> {
        let shape = self.info(key).map(|(s, _)| s).unwrap_or_default();
        let (shard, dtype, bytes) = self.raw(key, &shape)?;
        let rows_error = |message: String| WeightsError::Rows { key: key.into(), file: shard.path.clone(), message };
        let &[n, width] = shape.as_slice() else {
            return Err(rows_error(format!("shape {shape:?} is not 2-D (rows are read from a matrix)")));
        };
        let size = dtype.float_bytes().ok_or_else(|| dtype_error(key, shard, dtype, "f32"))?;
        let mut out = Vec::with_capacity(rows.len() * width);
        for &row in rows {
            if row >= n {
                return Err(rows_error(format!("row {row} is out of range (the tensor has {n} rows)")));
            }
            let row_bytes = bytes
                .get(row * width * size..(row + 1) * width * size)
                .ok_or_else(|| rows_error(format!("row {row} lies outside the stored data")))?;
            out.extend(decode_f32(dtype, row_bytes));
        }
        Ok(out)
    }

    /// An integer tensor as i64, checked against `expected` shape.
    pub fn i64(&self, key: &str, expected: &[usize]) -> Result<Vec<i64>> {
        let (shard, dtype, bytes) = self.raw(key, expected)?;
        Ok(match dtype {
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            Dtype::I32 => {
                bytes.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
            }
            Dtype::I8 => bytes.iter().map(|&b| i64::from(b as i8)).collect(),
            Dtype::U8 | Dtype::Bool => bytes.iter().map(|&b| i64::from(b)).collect(),
            other => return Err(dtype_error(key, shard, other, "i64")),
        })
    }

    /// A tensor of any shape as f32 with its shape (for reference data in tests and tools).
    pub fn f32_any(&self, key: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let shape = self.info(key).map(|(s, _)| s).unwrap_or_default();
        Ok((self.f32(key, &shape)?, shape))
    }

    /// A tensor of any shape as i64 with its shape.
    pub fn i64_any(&self, key: &str) -> Result<(Vec<i64>, Vec<usize>)> {
        let shape = self.info(key).map(|(s, _)| s).unwrap_or_default();
        Ok((self.i64(key, &shape)?, shape))
    }
}

/// `key` of `shard` holds `found`, which cannot be read as `wanted`.
fn dtype_error(key: &str, shard: &Shard, found: Dtype, wanted: &'static str) -> WeightsError {
    WeightsError::Dtype { key: key.into(), file: shard.path.clone(), found: found.to_string(), wanted }
}

/// Little-endian values of a floating-point `dtype` as f32 (another dtype gives nothing: callers check first).
fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    let le2 = |c: &[u8]| [c[0], c[1]];
    match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes(le2(c)).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes(le2(c)).to_f32()).collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Writes f32 / i64 tensors to a safetensors file (for `deper vlm forward` outputs and for checkpoints).
pub fn write_safetensors(path: &Path, tensors: &[(&str, TensorData<'_>)]) -> Result<()> {
    use safetensors::tensor::TensorView;
    let mut owned: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, data) in tensors {
        let (dtype, shape, bytes) = match data {
            TensorData::F32(values, shape) => {
                (StDtype::F32, shape.to_vec(), values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
            }
            TensorData::I64(values, shape) => {
                (StDtype::I64, shape.to_vec(), values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
            }
        };
        owned.push((name.to_string(), dtype, shape, bytes));
    }
    let mut views = Vec::with_capacity(owned.len());
    for (name, dtype, shape, bytes) in &owned {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| WeightsError::Format { path: path.into(), message: format!("tensor `{name}`: {e}") })?;
        views.push((name.clone(), view));
    }
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| WeightsError::Format { path: path.into(), message: e.to_string() })
}

/// Data for [`write_safetensors`]: values and shape.
#[derive(Debug, Clone, Copy)]
pub enum TensorData<'a> {
    F32(&'a [f32], &'a [usize]),
    I64(&'a [i64], &'a [usize]),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path) {
        write_safetensors(
            path,
            &[
                ("a.weight", TensorData::F32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])),
                ("ids", TensorData::I64(&[7, -8], &[2])),
            ],
        )
        .unwrap();
    }

    #[test]
    fn round_trip_and_shape_checks_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SINGLE_FILE);
        write(&path);
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ck.keys(), ["a.weight", "ids"]);
        assert_eq!(ck.f32("a.weight", &[2, 3]).unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(ck.i64("ids", &[2]).unwrap(), [7, -8]);
        let err = ck.f32("a.weight", &[3, 2]).unwrap_err().to_string();
        assert!(err.contains("`a.weight`") && err.contains("[3, 2]") && err.contains("[2, 3]"), "{err}");
        let err = ck.f32("b.weight", &[4]).unwrap_err().to_string();
        assert!(err.contains("missing tensor `b.weight`") && err.contains("[4]"), "{err}");
        let err = ck.f32("ids", &[2]).unwrap_err().to_string();
        assert!(err.contains("dtype I64"), "{err}");
    }

    #[test]
    fn half_precision_is_widened() {
        use safetensors::tensor::TensorView;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.safetensors");
        let bf: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        let f16: Vec<u8> = [0.25f32, 3.0].iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        let views = vec![
            ("bf".to_string(), TensorView::new(StDtype::BF16, vec![2], &bf).unwrap()),
            ("h".to_string(), TensorView::new(StDtype::F16, vec![2], &f16).unwrap()),
        ];
        safetensors::serialize_to_file(views, None, &path).unwrap();
        let ck = Checkpoint::open(&path).unwrap();
        assert_eq!(ck.f32("bf", &[2]).unwrap(), [1.5, -2.0]);
        assert_eq!(ck.f32("h", &[2]).unwrap(), [0.25, 3.0]);
    }

    #[test]
    fn rows_of_a_matrix_in_any_float_dtype() {
        use safetensors::tensor::TensorView;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        // A 3×2 table: row r is [r + 0.5, -(r + 1)] (exact in bf16 and f16).
        let table: Vec<f32> = (0..3).flat_map(|r| [r as f32 + 0.5, -(r as f32 + 1.0)]).collect();
        let bf: Vec<u8> = table.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        let f16: Vec<u8> = table.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        let f32s: Vec<u8> = table.iter().flat_map(|v| v.to_le_bytes()).collect();
        let ids: Vec<u8> = [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            ("bf".to_string(), TensorView::new(StDtype::BF16, vec![3, 2], &bf).unwrap()),
            ("h".to_string(), TensorView::new(StDtype::F16, vec![3, 2], &f16).unwrap()),
            ("f".to_string(), TensorView::new(StDtype::F32, vec![3, 2], &f32s).unwrap()),
            ("flat".to_string(), TensorView::new(StDtype::F32, vec![6], &f32s).unwrap()),
            ("ids".to_string(), TensorView::new(StDtype::I64, vec![1, 2], &ids).unwrap()),
        ];
        safetensors::serialize_to_file(views, None, &path).unwrap();
        let ck = Checkpoint::open(&path).unwrap();
        for key in ["bf", "h", "f"] {
            assert_eq!(ck.f32_rows(key, &[2, 0, 2]).unwrap(), [2.5, -3.0, 0.5, -1.0, 2.5, -3.0], "{key}");
            assert_eq!(ck.f32_rows(key, &[]).unwrap(), Vec::<f32>::new());
        }
        let err = ck.f32_rows("f", &[0, 3]).unwrap_err().to_string();
        assert!(
            err.contains("`f`") && err.contains("t.safetensors") && err.contains("row 3") && err.contains("3 rows"),
            "{err}"
        );
        let err = ck.f32_rows("flat", &[0]).unwrap_err().to_string();
        assert!(err.contains("`flat`") && err.contains("not 2-D"), "{err}");
        let err = ck.f32_rows("ids", &[0]).unwrap_err().to_string();
        assert!(err.contains("`ids`") && err.contains("dtype I64"), "{err}");
        let err = ck.f32_rows("nothing", &[0]).unwrap_err().to_string();
        assert!(err.contains("missing tensor `nothing`") && err.contains("t.safetensors"), "{err}");
    }

    #[test]
    fn sharded_checkpoint_and_missing_shard() {
        let dir = tempfile::tempdir().unwrap();
        write_safetensors(
            &dir.path().join("model-00001-of-00002.safetensors"),
            &[("x", TensorData::F32(&[1.0], &[1]))],
        )
        .unwrap();
        write_safetensors(
            &dir.path().join("model-00002-of-00002.safetensors"),
            &[("y", TensorData::F32(&[2.0], &[1]))],
        )
        .unwrap();
        let index = r#"{"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}}"#;
        std::fs::write(dir.path().join(INDEX_FILE), index).unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ck.f32("y", &[1]).unwrap(), [2.0]);
        std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
        let err = Checkpoint::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model-00002-of-00002.safetensors") && err.contains("missing"), "{err}");
    }

    #[test]
    fn corrupted_and_absent_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(Checkpoint::open(dir.path()), Err(WeightsError::NoCheckpoint { .. })));
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
        let err = Checkpoint::open(&path).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors") && err.contains("not a valid safetensors file"), "{err}");
        std::fs::write(&path, b"\x01").unwrap();
        assert!(Checkpoint::open(&path).is_err());
    }
}
