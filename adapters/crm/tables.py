"""The CRM kind's own table: ``crm_contacts``, the CRM's ids of the contacts it processed.

Plain functions over the daemon's ``sqlite3.Connection``, run in the store's thread (the
listener's transaction for a webhook). The table itself is made by the store's migrations
(``store/migrations/0004_callbacks.sql``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence


def save_contacts(
    db: sqlite3.Connection,
    provider: str,
    job_id: str,
    contacts: Sequence[tuple[str, str | None, str | None]],
    *,
    now: int,
) -> None:
    """Keep the CRM's own id of each contact: (email, user_id, crm_id) rows."""
    db.executemany(
        "INSERT INTO crm_contacts (provider, email, user_id, crm_id, job_id, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (provider, email) DO UPDATE SET "
        "user_id = COALESCE(excluded.user_id, user_id), crm_id = COALESCE(excluded.crm_id, "
        "crm_id), job_id = excluded.job_id, received_at = excluded.received_at",
        [(provider, email, user, crm_id, job_id, now) for email, user, crm_id in contacts],
    )
