-- 0008: what the CRM's webhook sends back, kept by the contact's identity.
--
-- A CRM contact is identified by `email` or `user_id` (the document: "Unique identifier of
-- contact in your backend"); one of them is enough. `crm_contacts` was keyed by
-- (provider, email), which a contact without an email cannot have. Now a row is keyed by
-- (provider, identity, contact): `identity` says which field `contact` holds, `user_id` when
-- the CRM gave one, else `email`. `fields` keeps the contact as the webhook sent it (its
-- default fields and the `contacts_extra_fields` asked for), and `crm_purchases` the
-- purchases likewise (`purchase_extra_fields`), by transaction code.
--
-- Existing rows are kept, each under its user_id when it has one and no newer row has the
-- same user_id (else under its email, as before): no row is lost.

CREATE TABLE crm_contacts_v8 (
    provider    TEXT    NOT NULL,
    identity    TEXT    NOT NULL CHECK (identity IN ('user_id', 'email')),
    contact     TEXT    NOT NULL,           -- the user_id or the email, as `identity` says
    email       TEXT,
    user_id     TEXT,
    crm_id      TEXT,                       -- the contact's `_id` at the CRM
    fields      TEXT,                       -- JSON object: the contact as the webhook sent it
    job_id      TEXT,                       -- the sync job (deliveries.remote_ref) it came with
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, identity, contact)
) WITHOUT ROWID;

INSERT INTO crm_contacts_v8
    (provider, identity, contact, email, user_id, crm_id, fields, job_id, received_at)
SELECT provider,
       CASE WHEN by_user THEN 'user_id' ELSE 'email' END,
       CASE WHEN by_user THEN user_id ELSE email END,
       email, user_id, crm_id, NULL, job_id, received_at
FROM (
    SELECT c.*,
           c.user_id IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM crm_contacts o
               WHERE o.provider = c.provider AND o.user_id = c.user_id
                 AND (o.received_at > c.received_at
                      OR (o.received_at = c.received_at AND o.email > c.email))
           ) AS by_user
    FROM crm_contacts c
);

DROP TABLE crm_contacts;
ALTER TABLE crm_contacts_v8 RENAME TO crm_contacts;
CREATE INDEX crm_contacts_by_email ON crm_contacts (provider, email) WHERE email IS NOT NULL;

CREATE TABLE crm_purchases (
    provider         TEXT    NOT NULL,
    transaction_code TEXT    NOT NULL,
    crm_id           TEXT,                  -- the purchase's `_id` at the CRM
    fields           TEXT,                  -- JSON object: the purchase as the webhook sent it
    job_id           TEXT,
    received_at      INTEGER NOT NULL,
    PRIMARY KEY (provider, transaction_code)
) WITHOUT ROWID;
