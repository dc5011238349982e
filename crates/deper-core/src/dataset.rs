//! The on-disk dataset format.
//!
//! ```text
//! DIR/dataset.json     manifest: name, source, image folder, images, subjects, extras
//! DIR/triplets.jsonl   one Triplet per line (streamed; never loaded whole)
//! DIR/images/          image files named in the manifest (may be absent for imports)
//! DIR/splits.json      seen/unseen subjects and K-shot support sets (`deper dataset split`)
//! ```
//!
//! Writers stream triplets into `triplets.jsonl.partial` and rename it into
//! place only in [`DatasetWriter::finish`], so an interrupted import never
//! leaves a dataset that looks complete, and never overwrites a good one.

use crate::import::parse_json_record;
use crate::{Error, ImageInfo, Result, Subject, Triplet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

pub const MANIFEST_FILE: &str = "dataset.json";
pub const TRIPLETS_FILE: &str = "triplets.jsonl";
pub const SPLITS_FILE: &str = "splits.json";
pub const FORMAT: &str = "deper-dataset";
pub const FORMAT_VERSION: u32 = 1;

/// `dataset.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub name: String,
    /// Where the data came from: `synthetic`, `localized_narratives`, `authors_json`, `gaze`, `study`.
    pub source: String,
    /// Image folder, relative to the dataset folder (or absolute).
    pub image_dir: String,
    pub images: Vec<ImageInfo>,
    pub subjects: Vec<Subject>,
    pub triplets: usize,
    /// Importer reports, generator configs and the like.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Bytes of serialised triplets handed to the writer thread at once.
const WRITE_CHUNK: usize = 256 << 10;
/// Chunks queued for the writer thread at most; bounds memory.
const WRITE_QUEUE: usize = 4;

/// Writes serialised triplets. Serialisation stays on the caller's thread (the
/// triplets were allocated there, and freeing them elsewhere contends on the
/// allocator); the file writes and the final sync go to a second thread where
/// the platform has threads, and are inline otherwise (wasm32).
#[derive(Debug)]
enum TripletOut {
    Inline(BufWriter<File>),
    Threaded { tx: SyncSender<Vec<u8>>, chunk: Vec<u8>, worker: JoinHandle<io::Result<()>> },
}

fn flush_and_sync(mut out: BufWriter<File>) -> io::Result<()> {
    out.flush()?;
    out.get_ref().sync_all()
}

impl TripletOut {
    fn create(path: &Path) -> io::Result<Self> {
        let file = File::create(path)?;
        let (tx, rx) = sync_channel::<Vec<u8>>(WRITE_QUEUE);
        let spawned = std::thread::Builder::new().name("triplet-writer".into()).spawn(move || {
            let mut file = file;
            for chunk in rx {
                file.write_all(&chunk)?;
            }
            file.sync_all()
        });
        match spawned {
            Ok(worker) => Ok(TripletOut::Threaded { tx, chunk: Vec::with_capacity(WRITE_CHUNK + 4096), worker }),
            // Nothing was written yet: reopen the file and write inline.
            Err(_) => {
                Ok(TripletOut::Inline(BufWriter::with_capacity(1 << 20, File::options().write(true).open(path)?)))
            }
        }
    }

    fn write(&mut self, triplet: &Triplet) -> io::Result<()> {
        match self {
            TripletOut::Inline(out) => {
                serde_json::to_writer(&mut *out, triplet)?;
                out.write_all(b"\n")
            }
            TripletOut::Threaded { tx, chunk, .. } => {
                serde_json::to_writer(&mut *chunk, triplet)?;
                chunk.push(b'\n');
                if chunk.len() < WRITE_CHUNK {
                    return Ok(());
                }
                let full = std::mem::replace(chunk, Vec::with_capacity(WRITE_CHUNK + 4096));
                // A closed channel means the writer stopped on an error, which `finish` reports.
                tx.send(full).map_err(|_| io::Error::other("the triplet writer stopped (see the error at finish)"))
            }
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            TripletOut::Inline(out) => flush_and_sync(out),
            TripletOut::Threaded { tx, chunk, worker } => {
                let sent = chunk.is_empty() || tx.send(chunk).is_ok();
                drop(tx);
                worker.join().map_err(|_| io::Error::other("the triplet writer thread panicked"))??;
                if sent {
                    Ok(())
                } else {
                    Err(io::Error::other("the triplet writer stopped before the last triplets"))
                }
            }
        }
    }
}

/// Streams triplets into a new dataset folder.
#[derive(Debug)]
pub struct DatasetWriter {
    dir: PathBuf,
    partial: PathBuf,
    out: TripletOut,
    manifest: Manifest,
    image_index: HashMap<String, usize>,
    subject_index: HashMap<String, usize>,
}

impl DatasetWriter {
    /// Creates `dir` (and `dir/images`) and starts a dataset in it. Fails if
    /// `dir` already holds a dataset: overwriting data is never implicit.
    pub fn create(dir: &Path, name: &str, source: &str) -> Result<Self> {
        if dir.join(MANIFEST_FILE).exists() {
            return Err(Error::invalid(format!(
                "{} already holds a dataset ({MANIFEST_FILE} exists); choose another --out or remove it",
                dir.display()
            )));
        }
        fs::create_dir_all(dir.join("images")).map_err(|e| Error::io(dir, e))?;
        let partial = dir.join(format!("{TRIPLETS_FILE}.partial"));
        let out = TripletOut::create(&partial).map_err(|e| Error::io(&partial, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            partial,
            out,
            manifest: Manifest {
                format: FORMAT.into(),
                version: FORMAT_VERSION,
                name: name.into(),
                source: source.into(),
                image_dir: "images".into(),
                images: Vec::new(),
                subjects: Vec::new(),
                triplets: 0,
                extra: BTreeMap::new(),
            },
            image_index: HashMap::new(),
            subject_index: HashMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Folder where image files go, as written in the manifest.
    pub fn image_dir(&self) -> PathBuf {
        self.dir.join(&self.manifest.image_dir)
    }

    /// Points the manifest at an image folder elsewhere (e.g. an existing COCO folder).
    pub fn set_image_dir(&mut self, dir: &str) {
        self.manifest.image_dir = dir.into();
    }

    /// Registers an image; a later call with the same id replaces the earlier details.
    pub fn add_image(&mut self, info: ImageInfo) {
        match self.image_index.get(&info.id) {
            Some(&i) => self.manifest.images[i] = info,
            None => {
                self.image_index.insert(info.id.clone(), self.manifest.images.len());
                self.manifest.images.push(info);
            }
        }
    }

    /// Registers a subject; a later call with the same id replaces the earlier details.
    pub fn add_subject(&mut self, subject: Subject) {
        match self.subject_index.get(&subject.id) {
            Some(&i) => self.manifest.subjects[i] = subject,
            None => {
                self.subject_index.insert(subject.id.clone(), self.manifest.subjects.len());
                self.manifest.subjects.push(subject);
            }
        }
    }

    pub fn set_extra(&mut self, key: &str, value: serde_json::Value) {
        self.manifest.extra.insert(key.into(), value);
    }

    /// Appends one triplet; its image and subject are registered if new.
    pub fn push(&mut self, triplet: &Triplet) -> Result<()> {
        if !self.image_index.contains_key(&triplet.image) {
            self.add_image(ImageInfo { id: triplet.image.clone(), file: None, width: None, height: None });
        }
        if !self.subject_index.contains_key(&triplet.subject) {
            self.add_subject(Subject { id: triplet.subject.clone(), name: None, notes: None });
        }
        self.out.write(triplet).map_err(|e| Error::io(&self.partial, e))?;
        self.manifest.triplets += 1;
        Ok(())
    }

    pub fn triplets_written(&self) -> usize {
        self.manifest.triplets
    }

    /// Flushes the triplets, moves them into place and writes the manifest.
    pub fn finish(self) -> Result<Manifest> {
        self.out.finish().map_err(|e| Error::io(&self.partial, e))?;
        let final_path = self.dir.join(TRIPLETS_FILE);
        fs::rename(&self.partial, &final_path).map_err(|e| Error::io(&final_path, e))?;
        write_json_atomic(&self.dir.join(MANIFEST_FILE), &self.manifest)?;
        Ok(self.manifest)
    }
}

/// Writes JSON to `path` through a temporary file and a rename.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, value).map_err(|e| Error::invalid(e.to_string()))?;
    w.write_all(b"\n").map_err(|e| Error::io(&tmp, e))?;
    w.flush().map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Finds the file of `image_id` in `dir` by the naming schemes of the datasets
/// we import: the id itself, `{id}.jpg|.jpeg|.png`, and for numeric COCO ids
/// `{id:012}.jpg`, `COCO_train2014_{id:012}.jpg`, `COCO_val2014_{id:012}.jpg`.
/// Returns the file name relative to `dir`.
pub fn find_image_file(dir: &Path, image_id: &str) -> Option<String> {
    let mut candidates = vec![image_id.to_string()];
    for ext in ["jpg", "jpeg", "png"] {
        candidates.push(format!("{image_id}.{ext}"));
    }
    if let Ok(n) = image_id.parse::<u64>() {
        candidates.push(format!("{n:012}.jpg"));
        candidates.push(format!("COCO_train2014_{n:012}.jpg"));
        candidates.push(format!("COCO_val2014_{n:012}.jpg"));
    }
    candidates.into_iter().find(|c| !c.contains("..") && dir.join(c).is_file())
}

/// An existing dataset folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let manifest: Manifest = parse_json_record(&text, &path, 1)?;
        if manifest.format != FORMAT {
            return Err(Error::invalid(format!(
                "{}: field `format`: expected \"{FORMAT}\", found \"{}\"",
                path.display(),
                manifest.format
            )));
        }
        if manifest.version > FORMAT_VERSION {
            return Err(Error::invalid(format!(
                "{}: field `version`: dataset format {} is newer than this build understands ({FORMAT_VERSION})",
                path.display(),
                manifest.version
            )));
        }
        Ok(Self { dir: dir.to_path_buf(), manifest })
    }

    pub fn triplets_path(&self) -> PathBuf {
        self.dir.join(TRIPLETS_FILE)
    }

    /// Folder holding the images.
    pub fn image_dir(&self) -> PathBuf {
        self.dir.join(&self.manifest.image_dir)
    }

    /// Path of an image file, when the manifest names one.
    pub fn image_path(&self, image_id: &str) -> Option<PathBuf> {
        let info = self.manifest.images.iter().find(|i| i.id == image_id)?;
        info.file.as_ref().map(|f| self.image_dir().join(f))
    }

    /// Streams the triplets in file order.
    pub fn triplets(&self) -> Result<TripletReader> {
        TripletReader::open(&self.triplets_path())
    }

    /// Reads every triplet into memory (for small datasets and training sets).
    pub fn load_triplets(&self) -> Result<Vec<Triplet>> {
        self.triplets()?.collect()
    }
}

/// Iterator over a `triplets.jsonl` file; errors name the line and field.
#[derive(Debug)]
pub struct TripletReader {
    path: PathBuf,
    reader: BufReader<File>,
    line_no: usize,
    buf: String,
}

impl TripletReader {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self { path: path.into(), reader: BufReader::with_capacity(1 << 20, file), line_no: 0, buf: String::new() })
    }
}

impl Iterator for TripletReader {
    type Item = Result<Triplet>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line_no += 1;
            match self.reader.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(Error::io(&self.path, e))),
            }
            if self.buf.trim().is_empty() {
                continue;
            }
            return Some(parse_json_record(&self.buf, &self.path, self.line_no).map_err(Error::from));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Description, Split, Trajectory, TrajectorySource};

    fn triplet(id: &str, image: &str, subject: &str) -> Triplet {
        Triplet {
            id: id.into(),
            image: image.into(),
            subject: subject.into(),
            description: Description { text: "a red circle".into(), utterances: vec![] },
            trajectory: Trajectory::empty(TrajectorySource::Mouse),
            split: Split::Train,
        }
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::create(dir.path(), "t", "test").unwrap();
        w.push(&triplet("a", "img1", "s1")).unwrap();
        w.push(&triplet("b", "img2", "s1")).unwrap();
        w.push(&triplet("c", "img1", "s2")).unwrap();
        assert!(!dir.path().join(TRIPLETS_FILE).exists(), "triplets appear only on finish");
        let m = w.finish().unwrap();
        assert_eq!(m.triplets, 3);
        assert_eq!(m.images.len(), 2);
        assert_eq!(m.subjects.len(), 2);
        let ds = Dataset::open(dir.path()).unwrap();
        let all = ds.load_triplets().unwrap();
        assert_eq!(all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn refuses_to_overwrite_a_dataset() {
        let dir = tempfile::tempdir().unwrap();
        DatasetWriter::create(dir.path(), "t", "test").unwrap().finish().unwrap();
        let err = DatasetWriter::create(dir.path(), "t", "test").unwrap_err().to_string();
        assert!(err.contains("already holds a dataset"), "{err}");
    }

    #[test]
    fn bad_triplet_line_names_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::create(dir.path(), "t", "test").unwrap();
        w.push(&triplet("a", "img1", "s1")).unwrap();
        w.finish().unwrap();
        let path = dir.path().join(TRIPLETS_FILE);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("\n{\"id\": \"b\", \"image\": 3}\n");
        fs::write(&path, text).unwrap();
        let ds = Dataset::open(dir.path()).unwrap();
        let results: Vec<_> = ds.triplets().unwrap().collect();
        assert_eq!(results.len(), 2);
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("triplets.jsonl:3"), "{err}");
        assert!(err.contains("field `image`"), "{err}");
    }

    #[test]
    fn finds_image_files_by_dataset_naming() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("000000391895.jpg"), b"x").unwrap();
        fs::write(dir.path().join("1000092795.jpg"), b"x").unwrap();
        fs::write(dir.path().join("scene_0001.png"), b"x").unwrap();
        assert_eq!(find_image_file(dir.path(), "391895").as_deref(), Some("000000391895.jpg"));
        assert_eq!(find_image_file(dir.path(), "1000092795").as_deref(), Some("1000092795.jpg"));
        assert_eq!(find_image_file(dir.path(), "scene_0001").as_deref(), Some("scene_0001.png"));
        assert_eq!(find_image_file(dir.path(), "missing"), None);
        assert_eq!(find_image_file(dir.path(), "../etc/passwd"), None);
    }

    #[test]
    fn foreign_manifest_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MANIFEST_FILE), r#"{"format": "other"}"#).unwrap();
        let err = Dataset::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("dataset.json"), "{err}");
    }
}
