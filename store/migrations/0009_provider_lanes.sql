-- Lanes: parts of a provider that fail on their own (favourites: each user, with a token of
-- their own). A lane whose credentials are refused is paused alone; the others go on.

-- Where each known lane of a provider stands. 'active': sent to and pulled; 'auth-failed': the
-- provider refused its credentials at `since` (`reason`: what it answered), it waits for new
-- credentials, a resync, a reload or a restart; 'no-token': it has no credentials (never had,
-- or they were removed at `since`), its entries wait for them.
CREATE TABLE provider_lanes (
    provider    TEXT    NOT NULL,
    lane        TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('active', 'auth-failed', 'no-token')),
    since       INTEGER NOT NULL,
    reason      TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (provider, lane)
) WITHOUT ROWID;

-- An outbox entry whose lane is paused is set aside: `held_lane` names the lane, and the
-- flusher's take skips it until the lane may send again. The index holds only the entries
-- set aside (counted, given back by lane): an entry queued costs no more than before.
ALTER TABLE outbox ADD COLUMN held_lane TEXT;
CREATE INDEX outbox_held ON outbox (provider, held_lane) WHERE held_lane IS NOT NULL;

-- The users of each provider that has lanes (favourites), and what waits for each: `pending`
-- counts the entries set aside for that user (those of a paused or token-less user).
CREATE VIEW provider_users AS
SELECT l.provider,
       l.lane AS user,
       l.state,
       l.since,
       l.reason,
       (SELECT COUNT(*) FROM outbox o WHERE o.provider = l.provider AND o.held_lane = l.lane)
           AS pending
FROM provider_lanes l;

-- The age of a provider's backlog is that of the entries it can be sent now: those set aside
-- for a paused user wait for that user (provider_users, and a warning of their own), not for
-- the provider. `held` counts them; `pending` is every entry, as before.
DROP VIEW pending_by_provider;
CREATE VIEW pending_by_provider AS
SELECT p.name AS provider,
       p.kind,
       p.state,
       COALESCE((SELECT c.pending FROM outbox_pending c WHERE c.provider = p.name), 0)
           AS pending,
       (SELECT o.enqueued_at FROM outbox o
         WHERE o.provider = p.name AND o.held_lane IS NULL ORDER BY o.id LIMIT 1)
           AS oldest_enqueued_at,
       ((CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
         - (SELECT o.enqueued_at FROM outbox o
             WHERE o.provider = p.name AND o.held_lane IS NULL ORDER BY o.id LIMIT 1))
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
       p.waiting,
       (SELECT COUNT(*) FROM outbox o WHERE o.provider = p.name AND o.held_lane IS NOT NULL)
           AS held
FROM providers p;
