"""The CRM kind's own tables: what its webhook sent back, ``crm_contacts`` (by each contact's
identity) and ``crm_purchases`` (by transaction code).

Plain functions over the daemon's ``sqlite3.Connection``, run in the store's thread (the
listener's transaction for a webhook). The tables are made by the store's migrations
(``store/migrations/0004_callbacks.sql``, re-keyed by ``0008_crm_identities.sql``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence


def save_contacts(
    db: sqlite3.Connection,
    provider: str,
    job_id: str,
    contacts: Sequence[tuple[str, str, str | None, str | None, str | None, str | None]],
    *,
    now: int,
) -> None:
    """Keep what the CRM's webhook said about each contact: (identity, contact, email,
    user_id, crm_id, fields) rows, ``identity`` naming the field ``contact`` holds
    (``user_id`` or ``email``). A contact known so far by its email alone is known by its
    user_id from the first time the CRM gives one (its row moves, keeping what it had); one
    given by its email alone that a row knows by its user_id updates that row."""
    for given in contacts:
        identity, contact, email, user, crm_id, fields = _known_as(db, provider, *given)
        db.execute(
            "INSERT INTO crm_contacts (provider, identity, contact, email, user_id, crm_id, "
            "fields, job_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (provider, identity, contact) DO UPDATE SET "
            "email = COALESCE(excluded.email, email), "
            "user_id = COALESCE(excluded.user_id, user_id), "
            "crm_id = COALESCE(excluded.crm_id, crm_id), "
            "fields = COALESCE(excluded.fields, fields), "
            "job_id = excluded.job_id, received_at = excluded.received_at",
            (provider, identity, contact, email, user, crm_id, fields, job_id, now),
        )


def _known_as(
    db: sqlite3.Connection,
    provider: str,
    identity: str,
    contact: str,
    email: str | None,
    user: str | None,
    crm_id: str | None,
    fields: str | None,
) -> tuple[str, str, str | None, str | None, str | None, str | None]:
    """The row a returned contact goes to (see ``save_contacts``)."""
    if identity == "email":
        known = db.execute(
            "SELECT contact FROM crm_contacts WHERE provider = ? AND identity = 'user_id' "
            "AND email = ? LIMIT 2",
            (provider, contact),
        ).fetchall()
        if len(known) == 1:
            return "user_id", known[0][0], email, user, crm_id, fields
    elif email is not None:
        for old_id, old_fields in db.execute(
            "DELETE FROM crm_contacts WHERE provider = ? AND identity = 'email' "
            "AND contact = ? AND user_id IS NULL RETURNING crm_id, fields",
            (provider, email),
        ).fetchall():
            crm_id, fields = crm_id or old_id, fields or old_fields
    return identity, contact, email, user, crm_id, fields


def save_purchases(
    db: sqlite3.Connection,
    provider: str,
    job_id: str,
    purchases: Sequence[tuple[str, str | None, str | None]],
    *,
    now: int,
) -> None:
    """Keep what the CRM's webhook said about each purchase: (transaction_code, crm_id,
    fields) rows."""
    db.executemany(
        "INSERT INTO crm_purchases (provider, transaction_code, crm_id, fields, job_id, "
        "received_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (provider, transaction_code) DO UPDATE SET "
        "crm_id = COALESCE(excluded.crm_id, crm_id), "
        "fields = COALESCE(excluded.fields, fields), "
        "job_id = excluded.job_id, received_at = excluded.received_at",
        [(provider, code, crm_id, fields, job_id, now) for code, crm_id, fields in purchases],
    )
