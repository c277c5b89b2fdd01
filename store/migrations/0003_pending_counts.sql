-- 0003: running counts kept by triggers, so that `status` and the views answer without
-- counting millions of rows: pending outbox entries per provider, and drop files per status.
-- The triggers also keep them right when an operator edits those tables by hand.

CREATE TABLE outbox_pending (
    provider TEXT PRIMARY KEY,
    pending  INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO outbox_pending (provider, pending)
SELECT provider, COUNT(*) FROM outbox GROUP BY provider;

CREATE TRIGGER outbox_pending_insert AFTER INSERT ON outbox
BEGIN
    INSERT INTO outbox_pending (provider, pending) VALUES (NEW.provider, 1)
    ON CONFLICT (provider) DO UPDATE SET pending = pending + 1;
END;

CREATE TRIGGER outbox_pending_delete AFTER DELETE ON outbox
BEGIN
    UPDATE outbox_pending SET pending = pending - 1 WHERE provider = OLD.provider;
END;

CREATE TRIGGER outbox_pending_move AFTER UPDATE OF provider ON outbox
WHEN OLD.provider IS NOT NEW.provider
BEGIN
    UPDATE outbox_pending SET pending = pending - 1 WHERE provider = OLD.provider;
    INSERT INTO outbox_pending (provider, pending) VALUES (NEW.provider, 1)
    ON CONFLICT (provider) DO UPDATE SET pending = pending + 1;
END;

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
       p.last_ok_at
FROM providers p;

CREATE TABLE files_by_status (
    status TEXT PRIMARY KEY,
    files  INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO files_by_status (status, files)
SELECT status, COUNT(*) FROM files GROUP BY status;

CREATE TRIGGER files_by_status_insert AFTER INSERT ON files
BEGIN
    INSERT INTO files_by_status (status, files) VALUES (NEW.status, 1)
    ON CONFLICT (status) DO UPDATE SET files = files + 1;
END;

CREATE TRIGGER files_by_status_delete AFTER DELETE ON files
BEGIN
    UPDATE files_by_status SET files = files - 1 WHERE status = OLD.status;
END;

CREATE TRIGGER files_by_status_update AFTER UPDATE OF status ON files
WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE files_by_status SET files = files - 1 WHERE status = OLD.status;
    INSERT INTO files_by_status (status, files) VALUES (NEW.status, 1)
    ON CONFLICT (status) DO UPDATE SET files = files + 1;
END;

-- The latest quarantined files, without reading the whole ledger.
CREATE INDEX files_by_status_id ON files (status, id);
