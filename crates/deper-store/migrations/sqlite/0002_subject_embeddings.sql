-- A participant's subject embedding z_s as their page computed it: one row per session (a
-- participant has one session), replaced by each upload. The caption API finds a subject by
-- pseudonym through the unique index; the embedding map reads a study's rows.
CREATE TABLE subject_embeddings (
    session_id INTEGER PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    study_id INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    -- The participant's pseudonym, copied from participants so the lookup needs no join.
    subject TEXT NOT NULL,
    -- z_s as little-endian f32 values (exact, unlike a decimal text).
    z_s BLOB NOT NULL,
    -- Version hash of the subject encoder that computed z_s (`/api/embedder`'s `version`).
    encoder TEXT NOT NULL,
    -- Where the page ran the encoder (e.g. `webgpu`, `cpu`), as it reported.
    backend TEXT NOT NULL,
    -- Support triplets z_s averages.
    triplets INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX subject_embeddings_subject ON subject_embeddings(subject);
CREATE INDEX subject_embeddings_study ON subject_embeddings(study_id);
