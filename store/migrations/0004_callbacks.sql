-- 0004: what providers tell us after a delivery: confirmation callbacks and their replay
-- memory, brand mappings, integration error logs, CRM contact ids; the `unconfirmed` and
-- `waiting` reporting in pending_by_provider.

-- How long an accepted batch may wait for its confirmation (NULL: the provider never confirms),
-- and why some entries wait in the outbox (e.g. a brand no callback has mapped yet).
ALTER TABLE providers ADD COLUMN confirm_timeout_ms INTEGER;
ALTER TABLE providers ADD COLUMN waiting TEXT;

-- 1 once a failure callback queued this record again; a second failure does not (resync does).
ALTER TABLE delivered ADD COLUMN requeued INTEGER NOT NULL DEFAULT 0;

CREATE INDEX deliveries_accepted ON deliveries (provider, attempted_at) WHERE state = 'accepted';

-- Signatures of callbacks already accepted: the same signature again is a replay.
CREATE TABLE callback_signatures (
    signature   TEXT PRIMARY KEY,           -- lowercase hex as received
    provider    TEXT    NOT NULL,
    kind        TEXT    NOT NULL,           -- 'sync-status' or 'brand'
    received_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The churn tool's brand ids for the client's brand ids (from its brand callbacks).
CREATE TABLE brands (
    provider            TEXT    NOT NULL,
    client_brand_id     TEXT    NOT NULL,   -- as the record carries it (JSON scalars as text)
    stop_churn_brand_id INTEGER NOT NULL,
    received_at         INTEGER NOT NULL,
    PRIMARY KEY (provider, client_brand_id)
) WITHOUT ROWID;

-- Error logs fetched after a failed sync-status callback.
CREATE TABLE integration_errors (
    id          INTEGER PRIMARY KEY,
    provider    TEXT    NOT NULL,
    fetched_at  INTEGER NOT NULL,
    url         TEXT,                       -- where the log was downloaded from (NULL: not given)
    body        TEXT,                       -- the log (size-capped), NULL if it could not be had
    error       TEXT                        -- why it could not be fetched, NULL on success
);
CREATE INDEX integration_errors_by_provider ON integration_errors (provider, id);

-- The CRM's own ids of the contacts it processed (from its webhook).
CREATE TABLE crm_contacts (
    provider    TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    user_id     TEXT,
    crm_id      TEXT,
    job_id      TEXT,                       -- the sync job (deliveries.remote_ref) it came with
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, email)
) WITHOUT ROWID;

DROP VIEW pending_by_provider;
CREATE VIEW pending_by_provider AS
SELECT p.name AS provider,
       p.kind,
       p.state,
       COALESCE((SELECT c.pending FROM outbox_pending c WHERE c.provider = p.name), 0)
           AS pending,
       (SELECT o.enqueued_at FROM outbox o WHERE o.provider = p.name ORDER BY o.id LIMIT 1)
           AS oldest_enqueued_at,
       ((CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
         - (SELECT o.enqueued_at FROM outbox o WHERE o.provider = p.name ORDER BY o.id LIMIT 1))
           / 1000.0 AS oldest_age_s,
       (SELECT COUNT(*) FROM dead_letters d WHERE d.provider = p.name) AS dead_letters,
       p.next_attempt_at,
       p.last_error,
       p.last_ok_at,
       (SELECT COUNT(*) FROM deliveries d WHERE d.provider = p.name AND d.state = 'accepted'
          AND p.confirm_timeout_ms IS NOT NULL
          AND d.attempted_at < (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
                               - p.confirm_timeout_ms) AS unconfirmed,
       (SELECT COALESCE(SUM(d.items), 0) FROM deliveries d WHERE d.provider = p.name AND d.state = 'accepted'
          AND p.confirm_timeout_ms IS NOT NULL
          AND d.attempted_at < (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
                               - p.confirm_timeout_ms) AS unconfirmed_items,
       p.waiting
FROM providers p;
