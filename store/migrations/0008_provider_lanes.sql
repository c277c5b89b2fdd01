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
-- flusher's take skips it (through outbox_lanes) until the lane may send again.
ALTER TABLE outbox ADD COLUMN held_lane TEXT;
CREATE INDEX outbox_lanes ON outbox (provider, held_lane, id);

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
