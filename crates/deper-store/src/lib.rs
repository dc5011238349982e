//! deper-store: everything the study server keeps, behind one async [`Store`] trait.
//!
//! Two implementations share one SQL text (numbered `$n` parameters work in both):
//! SQLite, the embedded default (a file in the data folder, WAL journal, foreign keys on),
//! and PostgreSQL, chosen by a `postgres://` URL. Each database has its own migrations
//! (`migrations/sqlite`, `migrations/postgres`), embedded with `sqlx::migrate!`. Queries are
//! built at run time, so no database is needed to compile. Times are Unix milliseconds;
//! JSON columns are TEXT in both databases so one row decoder serves both; a z_s is a BLOB/BYTEA
//! of little-endian f32 values.
//!
//! [`export`] turns a study into a deper dataset or a Localized-Narratives JSONL file;
//! [`stimulus`] validates and stores uploaded images by content hash.

mod error;
pub mod export;
mod sql;
pub mod stimulus;
pub mod testing;
mod types;

pub use error::{Result, StoreError};
pub use sql::{PgStore, SqliteStore};
pub use types::*;

use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

/// The storage operations of the study server. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which database this is: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Answers when the database does (for `/healthz`).
    async fn ping(&self) -> Result<()>;

    /// A server setting (e.g. the researcher token hash).
    async fn get_setting(&self, key: &str) -> Result<Option<String>>;
    /// Sets a setting, replacing an earlier value.
    async fn put_setting(&self, key: &str, value: &str) -> Result<()>;

    async fn create_study(&self, input: &StudyInput) -> Result<Study>;
    async fn update_study(&self, id: i64, input: &StudyInput) -> Result<Study>;
    async fn get_study(&self, id: i64) -> Result<Option<Study>>;
    async fn list_studies(&self) -> Result<Vec<Study>>;

    /// Registers a stored image; an image with the same SHA-256 is returned as it is.
    async fn insert_stimulus(&self, new: &NewStimulus) -> Result<Stimulus>;
    async fn get_stimulus(&self, id: i64) -> Result<Option<Stimulus>>;
    async fn get_stimulus_by_sha(&self, sha256: &str) -> Result<Option<Stimulus>>;
    /// Appends a stimulus to a study's trial order; returns the new order.
    async fn attach_stimulus(&self, study_id: i64, stimulus_id: i64) -> Result<Vec<Stimulus>>;
    /// A study's stimuli in trial order.
    async fn study_stimuli(&self, study_id: i64) -> Result<Vec<Stimulus>>;

    /// Creates a pseudonymous participant and their session.
    async fn create_session(&self, study_id: i64, pseudonym: &str, token_hash: &str) -> Result<Session>;
    async fn get_session(&self, id: i64) -> Result<Option<Session>>;
    async fn list_sessions(&self, study_id: i64) -> Result<Vec<Session>>;
    /// Marks a session finished; a second call returns the first completion code.
    async fn finish_session(&self, id: i64, completion_code: &str) -> Result<Session>;

    /// Stores a batch of samples once: a batch id already stored for this session returns the
    /// first acknowledgement (with `duplicate` set) and stores nothing.
    async fn insert_sample_batch(&self, session_id: i64, batch: &SampleBatch) -> Result<BatchAck>;
    /// All samples of a session, by trial, batch arrival and position in the batch.
    async fn session_samples(&self, session_id: i64) -> Result<Vec<StoredSample>>;

    async fn insert_calibration(&self, session_id: i64, data: &serde_json::Value) -> Result<i64>;
    async fn session_calibrations(&self, session_id: i64) -> Result<Vec<serde_json::Value>>;

    /// Stores (or replaces) the description of one trial and moves the session past that trial.
    async fn put_description(&self, session_id: i64, description: &DescriptionRecord) -> Result<Session>;
    async fn session_descriptions(&self, session_id: i64) -> Result<Vec<DescriptionRecord>>;

    /// Stores (or replaces) the trajectory derived from one trial's samples.
    async fn put_trajectory(&self, session_id: i64, trial: u32, trajectory: &deper_core::Trajectory) -> Result<()>;
    async fn session_trajectories(&self, session_id: i64) -> Result<Vec<(u32, deper_core::Trajectory)>>;

    async fn create_job(&self, kind: &str, params: &serde_json::Value, device: &str) -> Result<Job>;
    async fn get_job(&self, id: i64) -> Result<Option<Job>>;
    async fn list_jobs(&self) -> Result<Vec<Job>>;
    /// Moves the oldest queued job of `device` to `running` and returns it.
    async fn claim_next_job(&self, device: &str) -> Result<Option<Job>>;
    /// Records progress (0..=1), a JSON detail and optionally a log line.
    async fn set_job_progress(
        &self,
        id: i64,
        progress: f64,
        detail: &serde_json::Value,
        log_line: Option<&str>,
    ) -> Result<()>;
    /// Ends a job in `state` (succeeded, failed or cancelled).
    async fn finish_job(&self, id: i64, state: JobState, error: Option<&str>) -> Result<Job>;
    /// A queued job is cancelled at once; a running one gets `cancel_requested`.
    async fn request_cancel(&self, id: i64) -> Result<Option<Job>>;
    /// Jobs left `running` by a server that stopped become `failed` with `reason`; returns how many.
    async fn fail_running_jobs(&self, reason: &str) -> Result<u64>;

    /// Stores (or replaces) the z_s of a session's participant; the session gives the subject name
    /// and the study.
    async fn put_subject_embedding(&self, new: &NewSubjectEmbedding) -> Result<SubjectEmbedding>;
    /// A participant's stored z_s by pseudonym (one indexed lookup).
    async fn subject_embedding(&self, subject: &str) -> Result<Option<SubjectEmbedding>>;
    /// The stored z_s of every participant of a study, by session.
    async fn study_subject_embeddings(&self, study_id: i64) -> Result<Vec<SubjectEmbedding>>;

    async fn insert_artifact(&self, new: &NewArtifact) -> Result<Artifact>;
    async fn get_artifact(&self, id: i64) -> Result<Option<Artifact>>;
    async fn job_artifacts(&self, job_id: i64) -> Result<Vec<Artifact>>;
    /// A study's artifacts of one kind, oldest first.
    async fn study_artifacts(&self, study_id: i64, kind: &str) -> Result<Vec<Artifact>>;
}

/// Opens (creating and migrating when needed) the store named by `url`: `postgres://…` or
/// `postgresql://…` for PostgreSQL, `sqlite:…` or a plain file path for SQLite.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        Ok(Arc::new(SqliteStore::open(Path::new(path)).await?))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the operating system as lower-case hex (tokens, codes, pseudonyms).
pub fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).map_err(|e| StoreError::Invalid(format!("no OS randomness: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
