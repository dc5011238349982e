//! The store's error type: database failures, missing rows, conflicts and bad stored data.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The request contradicts what is stored (e.g. a batch id reused for other samples).
    #[error("{0}")]
    Conflict(String),
    /// Input the store refuses (e.g. an upload that is not a PNG image).
    #[error("{0}")]
    Invalid(String),
    /// A stored value that does not parse; names the table, row and column.
    #[error("stored {table}.{column} of row {id} is corrupt: {message}")]
    Corrupt { table: &'static str, column: &'static str, id: String, message: String },
    #[error(transparent)]
    Core(#[from] deper_core::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl StoreError {
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound { what, id: id.to_string() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { path: path.into(), source }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
