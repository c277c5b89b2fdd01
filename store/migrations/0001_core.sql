-- 0001: records, the change log (inbox), the drop-file ledger, pull cursors.
-- Times are epoch milliseconds UTC (INTEGER) unless a column says otherwise.

CREATE TABLE records (
    collection  TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    body        TEXT,                       -- JSON text of the winning version; NULL for a bare delete
    updated_at  INTEGER NOT NULL,           -- LWW timestamp of the winning version
    deleted     INTEGER NOT NULL DEFAULT 0, -- 1: tombstone
    origin      TEXT    NOT NULL,           -- 'drop', 'sql', or the provider name it was pulled from
    digest      TEXT    NOT NULL,           -- sha256 (hex, 32) of the canonical body: the tie-break
    change_id   INTEGER,                    -- inbox.id of the winning change (NULL: see file_id)
    file_id     INTEGER,                    -- files.id the winning version came from, if a drop file
    doc_index   INTEGER,                    -- its 0-based document index in that file
    merged_at   INTEGER NOT NULL,           -- when this version was written here
    PRIMARY KEY (collection, key)
) WITHOUT ROWID;

CREATE TABLE files (
    id              INTEGER PRIMARY KEY,
    collection      TEXT    NOT NULL,
    name            TEXT    NOT NULL,       -- file name as dropped
    path            TEXT    NOT NULL,       -- where the file is now (.processing/, .done/ or .quarantine/)
    sha256          TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('processing', 'done', 'quarantined')),
    docs_seen       INTEGER NOT NULL DEFAULT 0,   -- documents read so far (committed progress)
    docs_applied    INTEGER NOT NULL DEFAULT 0,   -- became the current version
    docs_unchanged  INTEGER NOT NULL DEFAULT 0,   -- duplicates or older than the current version
    docs_rejected   INTEGER NOT NULL DEFAULT 0,   -- bad documents, listed in the .error.json receipt
    duplicate_of    INTEGER REFERENCES files(id), -- same content already ingested: nothing was applied
    error           TEXT,                         -- summary of why the file was quarantined
    received_at     INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX files_sha256 ON files (sha256, collection);
CREATE INDEX files_processing ON files (status) WHERE status = 'processing';

-- Every change seen, from any source; local programs INSERT here (collection, key, op, body,
-- updated_at) and the daemon fills the rest. Rows from drop files are written already processed
-- and keep a reference to the file (file_id, doc_index) instead of a copy of the body.
CREATE TABLE inbox (
    id           INTEGER PRIMARY KEY,
    collection   TEXT,
    key          TEXT,
    op           TEXT    DEFAULT 'upsert',    -- 'upsert' or 'delete'
    body         TEXT,                        -- JSON text (NULL for drop-file rows and bare deletes)
    updated_at   ANY,                         -- epoch ms, or ISO-8601 text normalised by the daemon
    origin       TEXT    NOT NULL DEFAULT 'sql',
    file_id      INTEGER,                     -- files.id for drop-file rows
    doc_index    INTEGER,                     -- 0-based document index within that file
    received_at  INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    status       TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'applied', 'duplicate', 'superseded', 'rejected')),
    reason       TEXT,                        -- why rejected (actionable), NULL otherwise
    digest       TEXT,                        -- digest of the canonical body once processed
    ts           INTEGER,                     -- normalised updated_at (epoch ms) once processed
    processed_at INTEGER
);
CREATE INDEX inbox_pending ON inbox (id) WHERE status = 'pending';
CREATE INDEX inbox_key ON inbox (collection, key);

CREATE TABLE cursors (
    provider    TEXT NOT NULL,
    name        TEXT NOT NULL,               -- e.g. a user or an entity the cursor belongs to
    value       TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (provider, name)
) WITHOUT ROWID;
