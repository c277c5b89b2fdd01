-- 0005: requests a provider decides one by one (2-way registration): which collections hold
-- them, each provider's decision on each request version, and the registration_requests view.

-- Written by the daemon at start from its config: collection -> the provider that decides it.
CREATE TABLE request_routes (
    collection  TEXT NOT NULL,
    provider    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    PRIMARY KEY (collection, provider)
) WITHOUT ROWID;

-- The provider's decision on the version `updated_at` of a request record.
CREATE TABLE request_outcomes (
    provider    TEXT    NOT NULL,
    collection  TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,            -- the version of the request that was decided
    status      TEXT    NOT NULL CHECK (status IN ('confirmed', 'refused')),
    reason      TEXT,                        -- the provider's words (or the local check's)
    remote_ref  TEXT,                        -- the provider's id of what it created or cancelled
    decided_at  INTEGER NOT NULL,
    PRIMARY KEY (provider, collection, key)
) WITHOUT ROWID;

-- Every live registration request and where it stands: pending until the provider decided
-- its current version.
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
