//! Errors of the core crate. Every error about input names where it happened:
//! the file, the line (1-based) and, when known, the field path.

use std::fmt;
use std::path::PathBuf;

/// A problem with one record of an input file.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    pub file: PathBuf,
    /// 1-based line number; 0 when the position is unknown.
    pub line: usize,
    /// Field path inside the record, e.g. `traces[0][3].x`.
    pub field: Option<String>,
    pub message: String,
}

impl RecordError {
    pub fn new(file: impl Into<PathBuf>, line: usize, field: Option<String>, message: impl Into<String>) -> Self {
        Self { file: file.into(), line, field, message: message.into() }
    }

    /// Short category used to group skipped records in reports ("missing field", "invalid type", …).
    pub fn kind(&self) -> String {
        let m = self.message.as_str();
        for key in
            ["missing field", "invalid type", "EOF while parsing", "unknown variant", "invalid value", "expected"]
        {
            if m.starts_with(key) || m.contains(key) {
                return key.to_string();
            }
        }
        m.split(':').next().unwrap_or(m).chars().take(40).collect()
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for RecordError {}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
