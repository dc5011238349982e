-- Study storage, SQLite flavour. Times are Unix milliseconds; JSON is stored as TEXT.
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE studies (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    instructions TEXT NOT NULL,
    consent TEXT NOT NULL,
    capture_mode TEXT NOT NULL CHECK (capture_mode IN ('mouse', 'gaze', 'both')),
    description_mode TEXT NOT NULL CHECK (description_mode IN ('typed', 'narrative')),
    settings TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE stimuli (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    file TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE study_stimuli (
    study_id INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    stimulus_id INTEGER NOT NULL REFERENCES stimuli(id),
    PRIMARY KEY (study_id, position),
    UNIQUE (study_id, stimulus_id)
);

CREATE TABLE participants (
    id INTEGER PRIMARY KEY,
    pseudonym TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    participant_id INTEGER NOT NULL REFERENCES participants(id),
    token_hash TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('active', 'finished')),
    current_trial INTEGER NOT NULL,
    completion_code TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX sessions_study ON sessions(study_id);

CREATE TABLE sample_batches (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    client_batch_id TEXT NOT NULL,
    trial INTEGER NOT NULL,
    n_samples INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (session_id, client_batch_id)
);

CREATE TABLE samples (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    batch_id INTEGER NOT NULL REFERENCES sample_batches(id) ON DELETE CASCADE,
    trial INTEGER NOT NULL,
    stimulus_id INTEGER NOT NULL REFERENCES stimuli(id),
    seq INTEGER NOT NULL,
    x REAL NOT NULL,
    y REAL NOT NULL,
    t REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('mouse', 'gaze'))
);
CREATE INDEX samples_session_trial ON samples(session_id, trial);

CREATE TABLE calibrations (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE descriptions (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    trial INTEGER NOT NULL,
    stimulus_id INTEGER NOT NULL REFERENCES stimuli(id),
    text TEXT NOT NULL,
    utterances TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, trial)
);

CREATE TABLE derived_trajectories (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    trial INTEGER NOT NULL,
    trajectory TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, trial)
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    device TEXT NOT NULL,
    progress REAL NOT NULL,
    progress_detail TEXT NOT NULL,
    log TEXT NOT NULL,
    error TEXT,
    cancel_requested INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER
);
CREATE INDEX jobs_state ON jobs(state, device);

CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT,
    job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    study_id INTEGER REFERENCES studies(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
);
