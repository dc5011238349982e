//! deper-report: DEPER's evaluation report, rendered from plain data.
//!
//! A [`Report`] holds what the paper shows (Xue et al., CVPR 2026, arXiv 2512.06662): caption and
//! subject metric tables per split (Tables 1–3), the subject-embedding map (the t-SNE figure),
//! ground-truth vs reconstructed attention trajectories, example captions per subject and training
//! curves. [`Report::write`] turns it into `report.md`, `report_full.json` and one self-contained
//! `report.html` (inline CSS and SVG, images as `data:` URIs, no script, no external request).
//!
//! The pieces are usable alone: [`svg`] builds the charts as SVG strings and [`project`] holds the
//! deterministic PCA and exact t-SNE used for the embedding map. No burn, no tokio.
//!
//! ```
//! use deper_report::{MetricRow, MetricTable, Report};
//!
//! let report = Report {
//!     title: "stage 1".into(),
//!     tables: vec![MetricTable {
//!         split: "unseen".into(),
//!         rows: vec![MetricRow { method: "PT".into(), metrics: [("CIDEr".to_string(), None)].into() }],
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! };
//! let dir = std::env::temp_dir().join("deper-report-doc");
//! let [md, _json, _html] = report.write(&dir)?;
//! assert!(std::fs::read_to_string(md)?.contains("| PT | n/a\\* |"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod escape;
pub mod html;
pub mod markdown;
pub mod project;
pub mod svg;
pub mod table;
pub mod types;

pub use types::*;

use std::path::{Path, PathBuf};

/// Why a report could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A JSON report that does not parse; the message names the line, column and field.
    #[error("{}: {message}", path.display())]
    Json { path: PathBuf, message: String },
    /// Data that cannot be drawn; `field` is a path such as `embeddings[3].vector`.
    #[error("field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }

    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), message: message.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// File names [`Report::write`] creates in its output folder.
pub const MARKDOWN_FILE: &str = "report.md";
pub const JSON_FILE: &str = "report_full.json";
pub const HTML_FILE: &str = "report.html";

impl Report {
    /// Checks the report, then writes `report.md`, `report_full.json` (the report without image
    /// bytes) and `report.html` into `dir`, creating it if needed. Returns the three paths.
    pub fn write(&self, dir: &Path) -> Result<[PathBuf; 3]> {
        self.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let md = dir.join(MARKDOWN_FILE);
        let json = dir.join(JSON_FILE);
        let html = dir.join(HTML_FILE);
        std::fs::write(&md, markdown::render(self)).map_err(|e| Error::io(&md, e))?;
        let stripped = serde_json::to_string_pretty(&self.without_images())
            .map_err(|e| Error::Json { path: json.clone(), message: e.to_string() })?;
        std::fs::write(&json, stripped).map_err(|e| Error::io(&json, e))?;
        std::fs::write(&html, html::render(self)).map_err(|e| Error::io(&html, e))?;
        Ok([md, json, html])
    }
}
