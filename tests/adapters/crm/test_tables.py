"""The CRM kind's own tables on a real store: what its webhook sends back, kept by each
contact's identity and by each purchase's transaction code."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from dropsync.adapters.crm import tables
from dropsync.store.handle import Store

pytestmark = pytest.mark.anyio


async def rows(store: Store, sql: str) -> list[tuple[object, ...]]:
    async with store.read() as db:
        return [tuple(r) for r in await db.execute_fetchall(sql)]


async def test_crm_contacts_are_kept_by_identity_and_a_user_id_takes_over_an_email(
    tmp_path: Path,
) -> None:
    """What the CRM's webhook sends back: a contact without an email is kept by its
    user_id; one known by its email alone moves under its user_id when the CRM gives one;
    one given by its email alone updates the row that knows it by its user_id."""
    async with await Store.open(tmp_path / "s.db") as store:

        async def save(job: str, *contacts: tuple[str, str, str | None, str | None]) -> None:
            await store.transact(
                partial(
                    tables.save_contacts,
                    provider="crm",
                    job_id=job,
                    contacts=[
                        (i, c, e, u, f"id-{c}", f'{{"n":"{job}"}}') for i, c, e, u in contacts
                    ],
                    now=int(job[1:]),
                )
            )

        sql = (
            "SELECT identity, contact, email, user_id, crm_id, fields, job_id FROM crm_contacts "
            "ORDER BY identity, contact"
        )
        await save("j1", ("email", "a@x.io", "a@x.io", None), ("user_id", "u2", None, "u2"))
        await save("j2", ("user_id", "u1", "a@x.io", "u1"))
        assert await rows(store, sql) == [
            ("user_id", "u1", "a@x.io", "u1", "id-u1", '{"n":"j2"}', "j2"),
            ("user_id", "u2", None, "u2", "id-u2", '{"n":"j1"}', "j1"),
        ]
        await save("j3", ("email", "a@x.io", "a@x.io", None), ("user_id", "u2", "b@x.io", "u2"))
        assert await rows(store, sql) == [
            ("user_id", "u1", "a@x.io", "u1", "id-a@x.io", '{"n":"j3"}', "j3"),
            ("user_id", "u2", "b@x.io", "u2", "id-u2", '{"n":"j3"}', "j3"),
        ]
        await store.transact(
            partial(
                tables.save_purchases,
                provider="crm",
                job_id="j4",
                purchases=[("T-1", "p1", '{"price":340}'), ("T-1", None, None)],
                now=4,
            )
        )
        assert await rows(store, "SELECT * FROM crm_purchases") == [
            ("crm", "T-1", "p1", '{"price":340}', "j4", 4)
        ]
