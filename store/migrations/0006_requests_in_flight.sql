-- 0006: requests written ahead. Before a batch is sent, its deliveries row is written (state
-- 'sent') with the entries it carries, exactly as they are sent; the entries stay on the row
-- of the request's latest attempt until the provider's answer is final. After a kill or a
-- retryable failure the request is sent again as it was (same entries, bodies and
-- Idempotency-Key) before any new batch is formed.

-- JSON array of [outbox_id, collection, key, updated_at, deleted, body] (body: the record's
-- JSON text as sent, NULL for a bare delete), non-NULL while the request is unfinished.
ALTER TABLE deliveries ADD COLUMN entries TEXT;

CREATE INDEX deliveries_unfinished ON deliveries (provider, id) WHERE entries IS NOT NULL;
