//! Importing (image, description, attention trajectory) triplets from another format into a deper
//! dataset, streamed: Localized Narratives JSONL, the authors' JSON, raw gaze samples. The format
//! readers live in `deper_core::import`; this runs one into a dataset folder.

use crate::progress::{Event, OnEvent};
use anyhow::Context;
use deper_core::dataset::{find_image_file, DatasetWriter};
use deper_core::import::{self, ImportReport};
use deper_core::{ImageInfo, Subject, Triplet};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where an import goes.
#[derive(Debug, Clone)]
pub struct ImportTarget {
    /// Dataset folder to create.
    pub out: PathBuf,
    /// Image folder outside the dataset, recorded in the manifest (absolute).
    pub images: Option<PathBuf>,
    /// Dataset name (default: the input file's stem).
    pub name: Option<String>,
    /// Replace an existing dataset in `out`.
    pub force: bool,
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub report: ImportReport,
    pub subjects: usize,
    /// Images the `images` folder has no file for (`None` without an image folder).
    pub missing_images: Option<usize>,
}

impl ImportOutcome {
    /// One line for the log.
    pub fn summary(&self, out: &Path) -> String {
        format!(
            "imported {} triplets of {} subjects into {} ({} skipped, {} empty trajectories{})",
            self.report.triplets,
            self.subjects,
            out.display(),
            self.report.skipped,
            self.report.empty_trajectories,
            self.missing_images.map(|n| format!(", {n} images not found")).unwrap_or_default()
        )
    }
}

/// The importer: reads `input`, pushes triplets into the sink and reports the bytes read.
pub type Importer<'a> =
    Box<dyn FnOnce(&mut import::Sink, &mut import::Progress) -> deper_core::Result<ImportReport> + 'a>;

/// Runs `importer` over `input` into `target.out` (`source` names the format in the manifest). On
/// failure nothing that looks like a dataset is left behind, and nothing the import did not create
/// is touched. Keeping no triplet at all is an error.
pub fn import_into(
    target: &ImportTarget,
    input: &Path,
    source: &str,
    importer: Importer<'_>,
    on: OnEvent<'_>,
) -> anyhow::Result<ImportOutcome> {
    let total = std::fs::metadata(input).with_context(|| format!("{}: cannot read", input.display()))?.len();
    if target.force {
        crate::dataset::remove_existing_dataset(&target.out)?;
    }
    let name = target
        .name
        .clone()
        .unwrap_or_else(|| input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    let out_existed = target.out.exists();
    let mut writer = DatasetWriter::create(&target.out, &name, source)?;
    let image_dir = match &target.images {
        Some(dir) => {
            let abs = std::fs::canonicalize(dir).with_context(|| format!("--images {}", dir.display()))?;
            writer.set_image_dir(&abs.to_string_lossy());
            Some(abs)
        }
        None => None,
    };
    on(Event::Begin {
        label: "importing".into(),
        total: usize::try_from(total).unwrap_or(usize::MAX),
        detail: serde_json::json!({"event": "import", "bytes": total}),
        line: None,
    });
    let mut seen_images: HashSet<String> = HashSet::new();
    let mut missing_images = 0usize;
    let result = {
        let mut sink = |t: Triplet| -> deper_core::Result<()> {
            if let Some(dir) = &image_dir {
                if seen_images.insert(t.image.clone()) {
                    let file = find_image_file(dir, &t.image);
                    missing_images += usize::from(file.is_none());
                    writer.add_image(ImageInfo { id: t.image.clone(), file, width: None, height: None });
                }
            }
            writer.push(&t)
        };
        let mut progress = |bytes: u64| {
            on(Event::Advance {
                done: usize::try_from(bytes).unwrap_or(usize::MAX),
                status: None,
                detail: serde_json::json!({"event": "import", "bytes_read": bytes}),
            })
        };
        importer(&mut sink, &mut progress)
    };
    on(Event::End);
    let report = match result {
        Ok(report) if report.triplets == 0 => Err(anyhow::anyhow!(
            "{}: no triplet was imported ({} records skipped as bad); nothing was written",
            input.display(),
            report.skipped
        )),
        Ok(report) => Ok(report),
        Err(err) => Err(err.into()),
    };
    let report = match report {
        Ok(report) => report,
        Err(err) => {
            drop(writer);
            let _ = std::fs::remove_file(target.out.join(format!("{}.partial", deper_core::dataset::TRIPLETS_FILE)));
            if !out_existed {
                let _ = std::fs::remove_dir_all(&target.out);
            }
            return Err(err);
        }
    };
    for (id, name) in &report.subject_names {
        writer.add_subject(Subject { id: id.clone(), name: Some(name.clone()), notes: None });
    }
    writer.set_extra("import_report", serde_json::to_value(&report)?);
    writer.set_extra("input", serde_json::Value::String(input.display().to_string()));
    if image_dir.is_some() {
        writer.set_extra("missing_images", missing_images.into());
    }
    let manifest = writer.finish()?;
    Ok(ImportOutcome {
        report,
        subjects: manifest.subjects.len(),
        missing_images: image_dir.is_some().then_some(missing_images),
    })
}
