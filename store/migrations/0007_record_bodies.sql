-- 0007: records split into record_keys and record_bodies, read through the view `records`.
--
-- `records` was one WITHOUT ROWID table. Such a table is an index b-tree, whose pages keep a
-- row of at most about 1 KB (of 4 KB): a longer row spilled its rest into an overflow page of
-- its own, mostly empty, and a store of 1 KB documents took 4.6 times their size. Now:
--   record_keys    one small row per (collection, key): the current version's metadata,
--                  clustered by the natural key (WITHOUT ROWID suits small rows);
--   record_bodies  the bodies, a rowid table: a row of up to ~4 KB stays in its page, and rows
--                  are appended in id order, so its pages are full.
-- The key is stored once (a rowid table with a unique index on the key would hold it twice),
-- and the digest as its 16 bytes (the view shows the 32 hex digits as before). Figures:
-- bench/RESULTS.md, 2026-12-07.

DROP VIEW registration_requests;

CREATE TABLE record_keys (
    collection  TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,           -- LWW timestamp of the winning version
    deleted     INTEGER NOT NULL DEFAULT 0, -- 1: tombstone
    origin      TEXT    NOT NULL,           -- 'drop', 'sql', or the provider name it came from
    digest      BLOB    NOT NULL,           -- the sha256's first 16 bytes (hex text if so written)
    change_id   INTEGER,                    -- inbox.id of the winning change (NULL: see file_id)
    file_id     INTEGER,                    -- files.id of the winning version, if from a drop file
    doc_index   INTEGER,                    -- its 0-based document index in that file
    merged_at   INTEGER NOT NULL,           -- when this version was written here
    body_id     INTEGER NOT NULL,           -- record_bodies.id: the body of this key
    PRIMARY KEY (collection, key)
) WITHOUT ROWID;

CREATE TABLE record_bodies (
    id    INTEGER PRIMARY KEY,
    body  TEXT                              -- JSON text of the winning version; NULL: a bare delete
);

-- Ids in key order, so that the bodies below are appended in id order. row_number() over the
-- primary key's order streams (no sort, nothing held in memory). dropsync_unhex (the daemon
-- registers it while it migrates) turns lowercase hex digits into their bytes; anything else
-- (a digest written by hand) stays as it is.
INSERT INTO record_keys (collection, key, updated_at, deleted, origin, digest, change_id,
                         file_id, doc_index, merged_at, body_id)
SELECT collection, key, updated_at, deleted, origin, COALESCE(dropsync_unhex(digest), digest),
       change_id, file_id, doc_index, merged_at,
       row_number() OVER (ORDER BY collection, key)
FROM records;

INSERT INTO record_bodies (id, body)
SELECT k.body_id, r.body
FROM record_keys k JOIN records r ON r.collection = k.collection AND r.key = k.key;

-- Emptied first: a DROP TABLE of a full table in a transaction keeps a copy of every page it
-- frees in the statement journal, in memory here (temp_store = MEMORY): the whole table.
DELETE FROM records;
DROP TABLE records;

-- The body is a subquery, not a join: a query that does not read it (counts per collection,
-- say) never touches record_bodies.
CREATE VIEW records AS
SELECT k.collection,
       k.key,
       (SELECT b.body FROM record_bodies b WHERE b.id = k.body_id) AS body,
       k.updated_at,
       k.deleted,
       k.origin,
       CASE WHEN typeof(k.digest) = 'blob' THEN lower(hex(k.digest)) ELSE k.digest END AS digest,
       k.change_id,
       k.file_id,
       k.doc_index,
       k.merged_at
FROM record_keys k;

-- The daemon writes the two tables itself; an INSERT INTO records (a program that builds a
-- store by hand, as before) goes to both. The digest is kept as given.
CREATE TRIGGER records_insert INSTEAD OF INSERT ON records
BEGIN
    INSERT INTO record_bodies (body) VALUES (NEW.body);
    INSERT INTO record_keys (collection, key, updated_at, deleted, origin, digest, change_id,
                             file_id, doc_index, merged_at, body_id)
    VALUES (NEW.collection, NEW.key, NEW.updated_at, COALESCE(NEW.deleted, 0), NEW.origin,
            NEW.digest, NEW.change_id, NEW.file_id, NEW.doc_index, NEW.merged_at,
            last_insert_rowid());
END;

CREATE VIEW registration_requests AS
SELECT t.provider,
       r.key,
       CAST(json_extract(r.body, '$.participantId') AS TEXT) AS participant_id,
       CAST(json_extract(r.body, '$.sessionId') AS TEXT) AS session_id,
       COALESCE(json_extract(r.body, '$.action'), 'register') AS action,
       CASE WHEN o.updated_at = r.updated_at THEN o.status ELSE 'pending' END AS status,
       CASE WHEN o.updated_at = r.updated_at THEN o.reason END AS reason,
       CASE WHEN o.updated_at = r.updated_at THEN o.remote_ref END AS registration_id,
       r.merged_at AS requested_at,
       CASE WHEN o.updated_at = r.updated_at THEN o.decided_at END AS decided_at,
       r.collection,
       r.updated_at
FROM request_routes t
JOIN records r ON r.collection = t.collection AND r.deleted = 0
LEFT JOIN request_outcomes o
       ON o.provider = t.provider AND o.collection = r.collection AND o.key = r.key
WHERE t.kind = 'registrations';
