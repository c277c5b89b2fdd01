"""What a full pull did not return: the records a provider supplied, however they are kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from dropsync.store.handle import Store
from dropsync.store.history import versions_seen
from dropsync.store.merge import apply_changes
from dropsync.store.pulled import outdated_records

from tests.store.test_merge import ROUTES, change

pytestmark = pytest.mark.anyio


async def test_outdated_records_are_the_providers_whether_logged_or_in_records_only(
    tmp_path: Path,
) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        batches = [
            # First versions from crm: in `records` only (not in the inbox log).
            [change("kept", 1, origin="crm"), change("gone", 1, origin="crm")],
            [change("edited", 1, origin="crm")],
            [change("edited", 2, origin="sql")],  # a local edit wins: crm's version is logged
            [change("local", 1, origin="sql"), change("theirs", 1, origin="fav")],
            [change("deleted", 1, origin="crm"), change("deleted", 2, origin="crm", deleted=True)],
        ]
        for batch in batches:
            await store.transact(lambda c, b=batch: apply_changes(c, b, ROUTES, now=1))
        gone = await store.call(outdated_records, "contacts", "crm", ["kept"])
    # Supplied by crm and not returned; never a local-only or another provider's record, nor
    # one already deleted.
    assert sorted(gone) == [("edited", 2), ("gone", 1)]


ODD_KEYS = [
    "a\x00b",
    "a",
    "\u2028",
    "e\u0301",
    "é",
    "😀",
    "a'b",
    'a"b',
    "%",
    "",
    "x" * 5000,
    "null",
]


async def test_a_returned_key_of_any_bytes_is_never_outdated(tmp_path: Path) -> None:
    # json_each cuts a text at its first NUL: "a\x00b" was not matched to itself, and each
    # full pull removed it (the next one brought it back).
    async with await Store.open(tmp_path / "s.db") as store:
        changes = [change(key, 1, origin="crm") for key in [*ODD_KEYS, "gone\x00"]]
        await store.transact(lambda c: apply_changes(c, changes, ROUTES, now=1))
        gone = await store.call(outdated_records, "contacts", "crm", ODD_KEYS)
        assert gone == [("gone\x00", 1)]
        assert await store.call(outdated_records, "contacts", "crm", ["a\x00"]) != []


async def test_why_sees_a_pulled_first_version_before_and_after_it_is_displaced(
    tmp_path: Path,
) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        await store.transact(
            lambda c: apply_changes(c, [change("a", 1, origin="crm")], ROUTES, now=100)
        )
        before = await store.call(versions_seen, "contacts", "a")
        await store.transact(
            lambda c: apply_changes(c, [change("a", 2, origin="sql")], ROUTES, now=200)
        )
        after = await store.call(versions_seen, "contacts", "a")
    assert [(v.inbox_id, v.ts, v.origin, v.status, v.received_at) for v in before] == [
        (None, 1, "crm", "applied", 100)
    ]
    assert [(v.inbox_id, v.ts, v.origin, v.status, v.received_at) for v in after] == [
        (1, 1, "crm", "superseded", 100),
        (2, 2, "sql", "applied", 200),
    ]


async def test_a_returned_key_holding_nul_is_compared_whole(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        batch = [change("d", 1, origin="crm"), change("d\x00x", 1, origin="crm")]
        await store.transact(lambda c: apply_changes(c, batch, ROUTES, now=1))
        gone = await store.call(outdated_records, "contacts", "crm", ["d\x00x"])
        kept = await store.call(outdated_records, "contacts", "crm", ["d", "d\x00x"])
    assert gone == [("d", 1)] and kept == []
