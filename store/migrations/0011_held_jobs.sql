-- 0011: a job's outcome that arrived before its batch was recorded. A provider that confirms by
-- job id (the CRM's webhook names the job of a request) can tell its outcome before the daemon
-- has recorded the request's answer (the job finished first, or the daemon was stopped or
-- killed between the request and the recording of its answer, then sent it again and was
-- answered with the same job). The outcome is kept here and applied in the transaction that
-- records a delivery carrying that job, whenever that is.
CREATE TABLE held_jobs (
    provider    TEXT    NOT NULL,
    job         TEXT    NOT NULL,           -- the provider's job id (deliveries.remote_ref)
    failed      INTEGER NOT NULL,           -- 1: the job failed (its records queued again once)
    error       TEXT    NOT NULL,           -- the deliveries' error when it failed
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, job)
) WITHOUT ROWID;
