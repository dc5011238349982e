//! The SQLite and PostgreSQL stores. Both run the same SQL (numbered `$n` parameters,
//! `RETURNING`, `ON CONFLICT`), written once in [`impl_store!`]; they differ only in how
//! they connect and in their migration folders.

use crate::error::{Result, StoreError};
use crate::types::*;
use crate::{now_ms, Store};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The embedded store: one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens `path` (created when missing) and applies the SQLite migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode loses nothing when the process dies (only on power loss),
            // which is what the durability test exercises; FULL would fsync every batch.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and applies the PostgreSQL migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        Self::connect_with(options).await
    }

    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

fn corrupt(table: &'static str, column: &'static str, id: impl ToString, message: impl ToString) -> StoreError {
    StoreError::Corrupt { table, column, id: id.to_string(), message: message.to_string() }
}

fn json_column(table: &'static str, column: &'static str, id: i64, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| corrupt(table, column, id, e))
}

fn to_u32(table: &'static str, column: &'static str, id: i64, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(table, column, id, format!("{v} is out of range")))
}

fn to_json_text(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

#[derive(sqlx::FromRow)]
struct StudyRow {
    id: i64,
    title: String,
    instructions: String,
    consent: String,
    capture_mode: String,
    description_mode: String,
    settings: String,
    created_at: i64,
    updated_at: i64,
}

impl StudyRow {
    fn into_study(self) -> Result<Study> {
        Ok(Study {
            capture_mode: CaptureMode::parse(&self.capture_mode)
                .ok_or_else(|| corrupt("studies", "capture_mode", self.id, &self.capture_mode))?,
            description_mode: DescriptionMode::parse(&self.description_mode)
                .ok_or_else(|| corrupt("studies", "description_mode", self.id, &self.description_mode))?,
            settings: json_column("studies", "settings", self.id, &self.settings)?,
            id: self.id,
            title: self.title,
            instructions: self.instructions,
            consent: self.consent,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct StimulusRow {
    id: i64,
    sha256: String,
    file: String,
    width: i64,
    height: i64,
    bytes: i64,
}

impl StimulusRow {
    fn into_stimulus(self) -> Result<Stimulus> {
        Ok(Stimulus {
            width: to_u32("stimuli", "width", self.id, self.width)?,
            height: to_u32("stimuli", "height", self.id, self.height)?,
            bytes: u64::try_from(self.bytes).map_err(|_| corrupt("stimuli", "bytes", self.id, self.bytes))?,
            id: self.id,
            sha256: self.sha256,
            file: self.file,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: i64,
    study_id: i64,
    participant: String,
    state: String,
    current_trial: i64,
    completion_code: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
    token_hash: String,
}

impl SessionRow {
    fn into_session(self) -> Result<Session> {
        Ok(Session {
            state: SessionState::parse(&self.state)
                .ok_or_else(|| corrupt("sessions", "state", self.id, &self.state))?,
            current_trial: to_u32("sessions", "current_trial", self.id, self.current_trial)?,
            id: self.id,
            study_id: self.study_id,
            participant: self.participant,
            completion_code: self.completion_code,
            created_at: self.created_at,
            finished_at: self.finished_at,
            token_hash: self.token_hash,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SampleRow {
    id: i64,
    trial: i64,
    stimulus_id: i64,
    batch_id: String,
    seq: i64,
    x: f64,
    y: f64,
    t: f64,
    source: String,
}

impl SampleRow {
    fn into_sample(self) -> Result<StoredSample> {
        Ok(StoredSample {
            trial: to_u32("samples", "trial", self.id, self.trial)?,
            seq: to_u32("samples", "seq", self.id, self.seq)?,
            source: SampleSource::parse(&self.source)
                .ok_or_else(|| corrupt("samples", "source", self.id, &self.source))?,
            stimulus_id: self.stimulus_id,
            batch_id: self.batch_id,
            x: self.x,
            y: self.y,
            t: self.t,
        })
    }
}

#[derive(sqlx::FromRow)]
struct DescriptionRow {
    session_id: i64,
    trial: i64,
    stimulus_id: i64,
    text: String,
    utterances: String,
}

impl DescriptionRow {
    fn into_record(self) -> Result<DescriptionRecord> {
        Ok(DescriptionRecord {
            trial: to_u32("descriptions", "trial", self.session_id, self.trial)?,
            utterances: serde_json::from_str(&self.utterances)
                .map_err(|e| corrupt("descriptions", "utterances", self.session_id, e))?,
            stimulus_id: self.stimulus_id,
            text: self.text,
        })
    }
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    kind: String,
    params: String,
    state: String,
    device: String,
    progress: f64,
    progress_detail: String,
    log: String,
    error: Option<String>,
    cancel_requested: i64,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

impl JobRow {
    fn into_job(self) -> Result<Job> {
        Ok(Job {
            params: json_column("jobs", "params", self.id, &self.params)?,
            state: JobState::parse(&self.state).ok_or_else(|| corrupt("jobs", "state", self.id, &self.state))?,
            progress_detail: json_column("jobs", "progress_detail", self.id, &self.progress_detail)?,
            cancel_requested: self.cancel_requested != 0,
            id: self.id,
            kind: self.kind,
            device: self.device,
            progress: self.progress,
            log: self.log,
            error: self.error,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ArtifactRow {
    id: i64,
    kind: String,
    path: String,
    sha256: Option<String>,
    job_id: Option<i64>,
    study_id: Option<i64>,
    created_at: i64,
}

impl From<ArtifactRow> for Artifact {
    fn from(r: ArtifactRow) -> Self {
        Artifact {
            id: r.id,
            kind: r.kind,
            path: r.path,
            sha256: r.sha256,
            job_id: r.job_id,
            study_id: r.study_id,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SubjectEmbeddingRow {
    session_id: i64,
    study_id: i64,
    subject: String,
    z_s: Vec<u8>,
    encoder: String,
    backend: String,
    triplets: i64,
    updated_at: i64,
}

impl SubjectEmbeddingRow {
    fn into_embedding(self) -> Result<SubjectEmbedding> {
        if self.z_s.len() % 4 != 0 {
            return Err(corrupt("subject_embeddings", "z_s", self.session_id, "length is not a multiple of 4"));
        }
        Ok(SubjectEmbedding {
            z_s: self.z_s.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            triplets: u64::try_from(self.triplets)
                .map_err(|_| corrupt("subject_embeddings", "triplets", self.session_id, self.triplets))?,
            session_id: self.session_id,
            study_id: self.study_id,
            subject: self.subject,
            encoder: self.encoder,
            backend: self.backend,
            updated_at: self.updated_at,
        })
    }
}

const SESSION_COLUMNS: &str = "s.id, s.study_id, p.pseudonym AS participant, s.state, s.current_trial, \
     s.completion_code, s.created_at, s.finished_at, s.token_hash";
const JOB_COLUMNS: &str = "id, kind, params, state, device, progress, progress_detail, log, error, \
     cancel_requested, created_at, started_at, finished_at";
const STIMULUS_COLUMNS: &str = "id, sha256, file, width, height, bytes";
const SUBJECT_EMBEDDING_COLUMNS: &str = "session_id, study_id, subject, z_s, encoder, backend, triplets, updated_at";
const STUDY_COLUMNS: &str =
    "id, title, instructions, consent, capture_mode, description_mode, settings, created_at, updated_at";

/// Largest number of samples bound in one INSERT (7 parameters each; SQLite allows 32766).
const SAMPLES_PER_INSERT: usize = 1000;

/// The [`Store`] implementation, once per database: `$ty` wraps a pool of `$db`.
macro_rules! impl_store {
    ($ty:ty, $db:ty, $name:literal, $begin:literal) => {
        #[async_trait]
        impl Store for $ty {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn get_setting(&self, key: &str) -> Result<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as("SELECT value FROM settings WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn put_setting(&self, key: &str, value: &str) -> Result<()> {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn create_study(&self, input: &StudyInput) -> Result<Study> {
                let now = now_ms();
                let row: StudyRow = sqlx::query_as(&format!(
                    "INSERT INTO studies (title, instructions, consent, capture_mode, description_mode, settings, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {STUDY_COLUMNS}"
                ))
                .bind(&input.title)
                .bind(&input.instructions)
                .bind(&input.consent)
                .bind(input.capture_mode.as_str())
                .bind(input.description_mode.as_str())
                .bind(to_json_text(&input.settings)?)
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                row.into_study()
            }

            async fn update_study(&self, id: i64, input: &StudyInput) -> Result<Study> {
                let row: Option<StudyRow> = sqlx::query_as(&format!(
                    "UPDATE studies SET title = $2, instructions = $3, consent = $4, capture_mode = $5, \
                     description_mode = $6, settings = $7, updated_at = $8 WHERE id = $1 RETURNING {STUDY_COLUMNS}"
                ))
                .bind(id)
                .bind(&input.title)
                .bind(&input.instructions)
                .bind(&input.consent)
                .bind(input.capture_mode.as_str())
                .bind(input.description_mode.as_str())
                .bind(to_json_text(&input.settings)?)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await?;
                row.ok_or_else(|| StoreError::not_found("study", id))?.into_study()
            }

            async fn get_study(&self, id: i64) -> Result<Option<Study>> {
                let row: Option<StudyRow> =
                    sqlx::query_as(&format!("SELECT {STUDY_COLUMNS} FROM studies WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(StudyRow::into_study).transpose()
            }

            async fn list_studies(&self) -> Result<Vec<Study>> {
                let rows: Vec<StudyRow> = sqlx::query_as(&format!("SELECT {STUDY_COLUMNS} FROM studies ORDER BY id"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(StudyRow::into_study).collect()
            }

            async fn insert_stimulus(&self, new: &NewStimulus) -> Result<Stimulus> {
                sqlx::query(
                    "INSERT INTO stimuli (sha256, file, width, height, bytes, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&new.sha256)
                .bind(&new.file)
                .bind(i64::from(new.width))
                .bind(i64::from(new.height))
                .bind(i64::try_from(new.bytes).map_err(|_| StoreError::Invalid("image too large".into()))?)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
                self.get_stimulus_by_sha(&new.sha256)
                    .await?
                    .ok_or_else(|| StoreError::not_found("stimulus", &new.sha256))
            }

            async fn get_stimulus(&self, id: i64) -> Result<Option<Stimulus>> {
                let row: Option<StimulusRow> =
                    sqlx::query_as(&format!("SELECT {STIMULUS_COLUMNS} FROM stimuli WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(StimulusRow::into_stimulus).transpose()
            }

            async fn get_stimulus_by_sha(&self, sha256: &str) -> Result<Option<Stimulus>> {
                let row: Option<StimulusRow> =
                    sqlx::query_as(&format!("SELECT {STIMULUS_COLUMNS} FROM stimuli WHERE sha256 = $1"))
                        .bind(sha256)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(StimulusRow::into_stimulus).transpose()
            }

            async fn attach_stimulus(&self, study_id: i64, stimulus_id: i64) -> Result<Vec<Stimulus>> {
                if self.get_study(study_id).await?.is_none() {
                    return Err(StoreError::not_found("study", study_id));
                }
                if self.get_stimulus(stimulus_id).await?.is_none() {
                    return Err(StoreError::not_found("stimulus", stimulus_id));
                }
                let attached: Option<(i64,)> =
                    sqlx::query_as("SELECT position FROM study_stimuli WHERE study_id = $1 AND stimulus_id = $2")
                        .bind(study_id)
                        .bind(stimulus_id)
                        .fetch_optional(&self.pool)
                        .await?;
                if let Some((position,)) = attached {
                    return Err(StoreError::Conflict(format!(
                        "stimulus {stimulus_id} is already trial {position} of study {study_id}"
                    )));
                }
                // The next position is computed inside the INSERT, so two concurrent attaches
                // cannot take the same one (the primary key would reject the second).
                sqlx::query(
                    "INSERT INTO study_stimuli (study_id, position, stimulus_id) \
                     SELECT $1, COALESCE(MAX(position) + 1, 0), $2 FROM study_stimuli WHERE study_id = $1",
                )
                .bind(study_id)
                .bind(stimulus_id)
                .execute(&self.pool)
                .await?;
                self.study_stimuli(study_id).await
            }

            async fn study_stimuli(&self, study_id: i64) -> Result<Vec<Stimulus>> {
                let rows: Vec<StimulusRow> = sqlx::query_as(
                    "SELECT st.id, st.sha256, st.file, st.width, st.height, st.bytes FROM study_stimuli ss \
                     JOIN stimuli st ON st.id = ss.stimulus_id WHERE ss.study_id = $1 ORDER BY ss.position",
                )
                .bind(study_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(StimulusRow::into_stimulus).collect()
            }

            async fn create_session(&self, study_id: i64, pseudonym: &str, token_hash: &str) -> Result<Session> {
                let now = now_ms();
                let mut tx = self.pool.begin_with($begin).await?;
                let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM studies WHERE id = $1")
                    .bind(study_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::not_found("study", study_id));
                }
                let (participant_id,): (i64,) =
                    sqlx::query_as("INSERT INTO participants (pseudonym, created_at) VALUES ($1, $2) RETURNING id")
                        .bind(pseudonym)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                let (session_id,): (i64,) = sqlx::query_as(
                    "INSERT INTO sessions (study_id, participant_id, token_hash, state, current_trial, created_at) \
                     VALUES ($1, $2, $3, 'active', 0, $4) RETURNING id",
                )
                .bind(study_id)
                .bind(participant_id)
                .bind(token_hash)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                self.get_session(session_id).await?.ok_or_else(|| StoreError::not_found("session", session_id))
            }

            async fn get_session(&self, id: i64) -> Result<Option<Session>> {
                let row: Option<SessionRow> = sqlx::query_as(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions s JOIN participants p ON p.id = s.participant_id \
                     WHERE s.id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(SessionRow::into_session).transpose()
            }

            async fn list_sessions(&self, study_id: i64) -> Result<Vec<Session>> {
                let rows: Vec<SessionRow> = sqlx::query_as(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions s JOIN participants p ON p.id = s.participant_id \
                     WHERE s.study_id = $1 ORDER BY s.id"
                ))
                .bind(study_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(SessionRow::into_session).collect()
            }

            async fn finish_session(&self, id: i64, completion_code: &str) -> Result<Session> {
                let done = sqlx::query(
                    "UPDATE sessions SET state = 'finished', completion_code = COALESCE(completion_code, $2), \
                     finished_at = COALESCE(finished_at, $3) WHERE id = $1",
                )
                .bind(id)
                .bind(completion_code)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::not_found("session", id));
                }
                self.get_session(id).await?.ok_or_else(|| StoreError::not_found("session", id))
            }

            async fn insert_sample_batch(&self, session_id: i64, batch: &SampleBatch) -> Result<BatchAck> {
                let n = batch.samples.len() as i64;
                let mut tx = self.pool.begin_with($begin).await?;
                // The UNIQUE (session_id, client_batch_id) index makes a retry a no-op here;
                // concurrent retries wait for the first to commit and then find its row.
                let inserted: Option<(i64,)> = sqlx::query_as(
                    "INSERT INTO sample_batches (session_id, client_batch_id, trial, n_samples, received_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id, client_batch_id) DO NOTHING RETURNING id",
                )
                .bind(session_id)
                .bind(&batch.client_batch_id)
                .bind(i64::from(batch.trial))
                .bind(n)
                .bind(now_ms())
                .fetch_optional(&mut *tx)
                .await?;
                let Some((batch_row,)) = inserted else {
                    tx.rollback().await?;
                    let (trial, stored): (i64, i64) = sqlx::query_as(
                        "SELECT trial, n_samples FROM sample_batches WHERE session_id = $1 AND client_batch_id = $2",
                    )
                    .bind(session_id)
                    .bind(&batch.client_batch_id)
                    .fetch_one(&self.pool)
                    .await?;
                    if trial != i64::from(batch.trial) || stored != n {
                        return Err(StoreError::Conflict(format!(
                            "batch_id `{}` was already used for {stored} samples of trial {trial}; \
                             a retry must resend the same batch",
                            batch.client_batch_id
                        )));
                    }
                    return Ok(BatchAck {
                        batch_id: batch.client_batch_id.clone(),
                        trial: batch.trial,
                        stored: stored as u64,
                        duplicate: true,
                    });
                };
                for (chunk_no, chunk) in batch.samples.chunks(SAMPLES_PER_INSERT).enumerate() {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO samples (session_id, batch_id, trial, stimulus_id, seq, x, y, t, source) ",
                    );
                    qb.push_values(chunk.iter().enumerate(), |mut b, (i, s)| {
                        b.push_bind(session_id)
                            .push_bind(batch_row)
                            .push_bind(i64::from(batch.trial))
                            .push_bind(batch.stimulus_id)
                            .push_bind((chunk_no * SAMPLES_PER_INSERT + i) as i64)
                            .push_bind(s.x)
                            .push_bind(s.y)
                            .push_bind(s.t)
                            .push_bind(s.source.as_str());
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(BatchAck {
                    batch_id: batch.client_batch_id.clone(),
                    trial: batch.trial,
                    stored: n as u64,
                    duplicate: false,
                })
            }

            async fn session_samples(&self, session_id: i64) -> Result<Vec<StoredSample>> {
                let rows: Vec<SampleRow> = sqlx::query_as(
                    "SELECT s.id, s.trial, s.stimulus_id, b.client_batch_id AS batch_id, s.seq, s.x, s.y, s.t, \
                     s.source FROM samples s JOIN sample_batches b ON b.id = s.batch_id \
                     WHERE s.session_id = $1 ORDER BY s.trial, b.id, s.seq",
                )
                .bind(session_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(SampleRow::into_sample).collect()
            }

            async fn insert_calibration(&self, session_id: i64, data: &serde_json::Value) -> Result<i64> {
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO calibrations (session_id, data, created_at) VALUES ($1, $2, $3) RETURNING id",
                )
                .bind(session_id)
                .bind(to_json_text(data)?)
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await?;
                Ok(id)
            }

            async fn session_calibrations(&self, session_id: i64) -> Result<Vec<serde_json::Value>> {
                let rows: Vec<(i64, String)> =
                    sqlx::query_as("SELECT id, data FROM calibrations WHERE session_id = $1 ORDER BY id")
                        .bind(session_id)
                        .fetch_all(&self.pool)
                        .await?;
                rows.iter().map(|(id, text)| json_column("calibrations", "data", *id, text)).collect()
            }

            async fn put_description(&self, session_id: i64, d: &DescriptionRecord) -> Result<Session> {
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query(
                    "INSERT INTO descriptions (session_id, trial, stimulus_id, text, utterances, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (session_id, trial) DO UPDATE SET \
                     stimulus_id = excluded.stimulus_id, text = excluded.text, utterances = excluded.utterances",
                )
                .bind(session_id)
                .bind(i64::from(d.trial))
                .bind(d.stimulus_id)
                .bind(&d.text)
                .bind(to_json_text(&d.utterances)?)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE sessions SET current_trial = CASE WHEN current_trial < $2 THEN $2 ELSE current_trial END \
                     WHERE id = $1",
                )
                .bind(session_id)
                .bind(i64::from(d.trial) + 1)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                self.get_session(session_id).await?.ok_or_else(|| StoreError::not_found("session", session_id))
            }

            async fn session_descriptions(&self, session_id: i64) -> Result<Vec<DescriptionRecord>> {
                let rows: Vec<DescriptionRow> = sqlx::query_as(
                    "SELECT session_id, trial, stimulus_id, text, utterances FROM descriptions \
                     WHERE session_id = $1 ORDER BY trial",
                )
                .bind(session_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(DescriptionRow::into_record).collect()
            }

            async fn put_trajectory(
                &self,
                session_id: i64,
                trial: u32,
                trajectory: &deper_core::Trajectory,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO derived_trajectories (session_id, trial, trajectory, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (session_id, trial) DO UPDATE SET \
                     trajectory = excluded.trajectory, created_at = excluded.created_at",
                )
                .bind(session_id)
                .bind(i64::from(trial))
                .bind(to_json_text(trajectory)?)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn session_trajectories(&self, session_id: i64) -> Result<Vec<(u32, deper_core::Trajectory)>> {
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT trial, trajectory FROM derived_trajectories WHERE session_id = $1 ORDER BY trial",
                )
                .bind(session_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(trial, text)| {
                        let t = serde_json::from_str(&text)
                            .map_err(|e| corrupt("derived_trajectories", "trajectory", session_id, e))?;
                        Ok((to_u32("derived_trajectories", "trial", session_id, trial)?, t))
                    })
                    .collect()
            }

            async fn create_job(&self, kind: &str, params: &serde_json::Value, device: &str) -> Result<Job> {
                let row: JobRow = sqlx::query_as(&format!(
                    "INSERT INTO jobs (kind, params, state, device, progress, progress_detail, log, \
                     cancel_requested, created_at) VALUES ($1, $2, 'queued', $3, 0, '{{}}', '', 0, $4) \
                     RETURNING {JOB_COLUMNS}"
                ))
                .bind(kind)
                .bind(to_json_text(params)?)
                .bind(device)
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await?;
                row.into_job()
            }

            async fn get_job(&self, id: i64) -> Result<Option<Job>> {
                let row: Option<JobRow> = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(JobRow::into_job).transpose()
            }

            async fn list_jobs(&self) -> Result<Vec<Job>> {
                let rows: Vec<JobRow> = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY id"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(JobRow::into_job).collect()
            }

            async fn claim_next_job(&self, device: &str) -> Result<Option<Job>> {
                let row: Option<JobRow> = sqlx::query_as(&format!(
                    "UPDATE jobs SET state = 'running', started_at = $2 WHERE id = \
                     (SELECT id FROM jobs WHERE state = 'queued' AND device = $1 ORDER BY id LIMIT 1) \
                     AND state = 'queued' RETURNING {JOB_COLUMNS}"
                ))
                .bind(device)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await?;
                row.map(JobRow::into_job).transpose()
            }

            async fn set_job_progress(
                &self,
                id: i64,
                progress: f64,
                detail: &serde_json::Value,
                log_line: Option<&str>,
            ) -> Result<()> {
                let line = log_line.map(|l| format!("{l}\n")).unwrap_or_default();
                sqlx::query("UPDATE jobs SET progress = $2, progress_detail = $3, log = log || $4 WHERE id = $1")
                    .bind(id)
                    .bind(progress)
                    .bind(to_json_text(detail)?)
                    .bind(line)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn finish_job(&self, id: i64, state: JobState, error: Option<&str>) -> Result<Job> {
                if !state.is_terminal() {
                    return Err(StoreError::Invalid(format!("finish_job needs a final state, not `{state}`")));
                }
                let row: Option<JobRow> = sqlx::query_as(&format!(
                    "UPDATE jobs SET state = $2, error = $3, finished_at = $4, \
                     progress = CASE WHEN $2 = 'succeeded' THEN 1 ELSE progress END \
                     WHERE id = $1 RETURNING {JOB_COLUMNS}"
                ))
                .bind(id)
                .bind(state.as_str())
                .bind(error)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await?;
                row.ok_or_else(|| StoreError::not_found("job", id))?.into_job()
            }

            async fn request_cancel(&self, id: i64) -> Result<Option<Job>> {
                // Every CASE reads the row as it was before this UPDATE.
                let row: Option<JobRow> = sqlx::query_as(&format!(
                    "UPDATE jobs SET \
                     state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END, \
                     finished_at = CASE WHEN state = 'queued' THEN $2 ELSE finished_at END, \
                     cancel_requested = CASE WHEN state IN ('queued', 'running') THEN 1 ELSE cancel_requested END \
                     WHERE id = $1 RETURNING {JOB_COLUMNS}"
                ))
                .bind(id)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await?;
                row.map(JobRow::into_job).transpose()
            }

            async fn fail_running_jobs(&self, reason: &str) -> Result<u64> {
                let done = sqlx::query(
                    "UPDATE jobs SET state = 'failed', error = $1, finished_at = $2 WHERE state = 'running'",
                )
                .bind(reason)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn put_subject_embedding(&self, new: &NewSubjectEmbedding) -> Result<SubjectEmbedding> {
                let z_s: Vec<u8> = new.z_s.iter().flat_map(|v| v.to_le_bytes()).collect();
                let triplets =
                    i64::try_from(new.triplets).map_err(|_| StoreError::Invalid("too many triplets".into()))?;
                // Subject and study come from the session, so the row cannot contradict it. (The
                // WHERE keeps SQLite from reading `ON CONFLICT` as part of the join.)
                let row: Option<SubjectEmbeddingRow> = sqlx::query_as(&format!(
                    "INSERT INTO subject_embeddings ({SUBJECT_EMBEDDING_COLUMNS}) \
                     SELECT s.id, s.study_id, p.pseudonym, $2, $3, $4, $5, $6 FROM sessions s \
                     JOIN participants p ON p.id = s.participant_id WHERE s.id = $1 \
                     ON CONFLICT (session_id) DO UPDATE SET z_s = excluded.z_s, encoder = excluded.encoder, \
                     backend = excluded.backend, triplets = excluded.triplets, updated_at = excluded.updated_at \
                     RETURNING {SUBJECT_EMBEDDING_COLUMNS}"
                ))
                .bind(new.session_id)
                .bind(z_s)
                .bind(&new.encoder)
                .bind(&new.backend)
                .bind(triplets)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await?;
                row.ok_or_else(|| StoreError::not_found("session", new.session_id))?.into_embedding()
            }

            async fn subject_embedding(&self, subject: &str) -> Result<Option<SubjectEmbedding>> {
                let row: Option<SubjectEmbeddingRow> = sqlx::query_as(&format!(
                    "SELECT {SUBJECT_EMBEDDING_COLUMNS} FROM subject_embeddings WHERE subject = $1"
                ))
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
                row.map(SubjectEmbeddingRow::into_embedding).transpose()
            }

            async fn study_subject_embeddings(&self, study_id: i64) -> Result<Vec<SubjectEmbedding>> {
                let rows: Vec<SubjectEmbeddingRow> = sqlx::query_as(&format!(
                    "SELECT {SUBJECT_EMBEDDING_COLUMNS} FROM subject_embeddings WHERE study_id = $1 \
                     ORDER BY session_id"
                ))
                .bind(study_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(SubjectEmbeddingRow::into_embedding).collect()
            }

            async fn insert_artifact(&self, new: &NewArtifact) -> Result<Artifact> {
                let row: ArtifactRow = sqlx::query_as(
                    "INSERT INTO artifacts (kind, path, sha256, job_id, study_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     RETURNING id, kind, path, sha256, job_id, study_id, created_at",
                )
                .bind(&new.kind)
                .bind(&new.path)
                .bind(&new.sha256)
                .bind(new.job_id)
                .bind(new.study_id)
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await?;
                Ok(row.into())
            }

            async fn get_artifact(&self, id: i64) -> Result<Option<Artifact>> {
                let row: Option<ArtifactRow> = sqlx::query_as(
                    "SELECT id, kind, path, sha256, job_id, study_id, created_at FROM artifacts WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn job_artifacts(&self, job_id: i64) -> Result<Vec<Artifact>> {
                let rows: Vec<ArtifactRow> = sqlx::query_as(
                    "SELECT id, kind, path, sha256, job_id, study_id, created_at FROM artifacts \
                     WHERE job_id = $1 ORDER BY id",
                )
                .bind(job_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn study_artifacts(&self, study_id: i64, kind: &str) -> Result<Vec<Artifact>> {
                let rows: Vec<ArtifactRow> = sqlx::query_as(
                    "SELECT id, kind, path, sha256, job_id, study_id, created_at FROM artifacts \
                     WHERE study_id = $1 AND kind = $2 ORDER BY id",
                )
                .bind(study_id)
                .bind(kind)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
        }
    };
}

// SQLite: `BEGIN IMMEDIATE` takes the write lock up front. A deferred transaction that reads and
// then writes can hit a lock-upgrade deadlock, which SQLite reports as SQLITE_BUSY at once, without
// waiting out the busy timeout (seen with 20 participants joining together in the ingest benchmark).
impl_store!(SqliteStore, sqlx::Sqlite, "sqlite", "BEGIN IMMEDIATE");
impl_store!(PgStore, sqlx::Postgres, "postgres", "BEGIN");
