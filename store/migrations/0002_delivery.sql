-- 0002: delivery to providers: provider state, the coalesced outbox, delivery attempts,
-- per-record delivery state, dead letters, and the views operators ask questions of.

CREATE TABLE providers (
    name            TEXT PRIMARY KEY,
    kind            TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'online'
                    CHECK (state IN ('online', 'offline', 'backing-off', 'auth-failed')),
    next_attempt_at INTEGER,                 -- no attempt before this time (backing-off, offline)
    failures        INTEGER NOT NULL DEFAULT 0,  -- consecutive failed attempts
    last_error      TEXT,
    last_ok_at      INTEGER,
    last_attempt_at INTEGER,
    updated_at      INTEGER NOT NULL
);

-- One row per (provider, collection, key): the latest version still to send. A newer version
-- replaces updated_at in place (coalescing) and keeps the entry's place and enqueued_at.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    provider    TEXT    NOT NULL,
    collection  TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,            -- version to send (matches records.updated_at)
    enqueued_at INTEGER NOT NULL,            -- first time this key became pending for the provider
    attempts    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (provider, collection, key)
);
CREATE INDEX outbox_by_provider ON outbox (provider, id);

-- One row per request attempt (a batch).
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    provider    TEXT    NOT NULL,
    batch_id    TEXT    NOT NULL,            -- the Idempotency-Key sent with the batch
    items       INTEGER NOT NULL,
    state       TEXT    NOT NULL
                CHECK (state IN ('sent', 'accepted', 'confirmed', 'rejected', 'failed', 'dry-run')),
    http_status INTEGER,
    latency_ms  REAL,
    remote_ref  TEXT,                        -- provider's job id, when it gives one
    error       TEXT,
    attempted_at INTEGER NOT NULL
);
CREATE INDEX deliveries_by_provider ON deliveries (provider, id);
CREATE INDEX deliveries_remote_ref ON deliveries (remote_ref) WHERE remote_ref IS NOT NULL;

-- Latest delivered version per (provider, collection, key).
CREATE TABLE delivered (
    provider    TEXT    NOT NULL,
    collection  TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('accepted', 'confirmed')),
    delivery_id INTEGER NOT NULL,            -- deliveries.id of the attempt that succeeded
    at          INTEGER NOT NULL,
    PRIMARY KEY (provider, collection, key)
) WITHOUT ROWID;

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    provider    TEXT    NOT NULL,
    collection  TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    http_status INTEGER,                     -- NULL when refused locally before sending
    reason      TEXT    NOT NULL,            -- the provider's status and body, or the local check
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE INDEX dead_letters_by_provider ON dead_letters (provider, id);

-- What is pending for each provider and how old the oldest entry is.
CREATE VIEW pending_by_provider AS
SELECT p.name AS provider,
       p.kind,
       p.state,
       (SELECT COUNT(*) FROM outbox o WHERE o.provider = p.name) AS pending,
       (SELECT o.enqueued_at FROM outbox o WHERE o.provider = p.name ORDER BY o.id LIMIT 1)
           AS oldest_enqueued_at,
       ((CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
         - (SELECT o.enqueued_at FROM outbox o WHERE o.provider = p.name ORDER BY o.id LIMIT 1))
           / 1000.0 AS oldest_age_s,
       (SELECT COUNT(*) FROM dead_letters d WHERE d.provider = p.name) AS dead_letters,
       p.next_attempt_at,
       p.last_error,
       p.last_ok_at
FROM providers p;

-- Every pending entry with its age. id is queue order (the same order as enqueued_at), and
-- ORDER BY id is answered through an index: use it for "the oldest N pending".
CREATE VIEW pending_entries AS
SELECT o.id, o.provider, o.collection, o.key, o.updated_at, o.enqueued_at, o.attempts,
       ((CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)) - o.enqueued_at) / 1000.0
           AS age_s
FROM outbox o;

-- Inbox rows the daemon refused, with the reason.
CREATE VIEW inbox_rejected AS
SELECT id, collection, key, op, updated_at, origin, reason, processed_at
FROM inbox WHERE status = 'rejected';
