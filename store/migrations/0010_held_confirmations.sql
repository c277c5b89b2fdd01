-- 0010: sync statuses held across a restart. A provider's sync status (the churn tool's
-- sync-status callback) confirms or fails the uploads sent before its moment; it is applied
-- when it arrives, then held for the kind's allowed callback age and applied again to uploads
-- recorded since. The hold is kept here, so that a restart (or a kill) during it does not end
-- it: the daemon applies the rows again at its start.
CREATE TABLE held_confirmations (
    id          INTEGER PRIMARY KEY,
    provider    TEXT    NOT NULL,
    sent_before INTEGER NOT NULL,           -- epoch ms: uploads attempted at or before it
    failed      INTEGER NOT NULL,           -- 1: the sync failed (the uploads fail, records queued again once)
    error       TEXT    NOT NULL,           -- the deliveries' error when it failed
    received_at INTEGER NOT NULL,
    held_until  INTEGER NOT NULL,           -- epoch ms: the hold ends (the row is removed)
    settled     INTEGER NOT NULL DEFAULT 0  -- deliveries it confirmed or failed so far
);
