"""The LWW merge: order-independence (property test), tombstones, ties, fan-out."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from pathlib import Path

import anyio
import orjson
import pytest
from dropsync.store.handle import Store
from dropsync.store.merge import Change, apply_changes
from hypothesis import given, settings
from hypothesis import strategies as st

ROUTES = {"contacts": ("crm", "fav")}


def change(
    key: str, ts: int, *, deleted: bool = False, body: object = None, origin: str = "drop"
) -> Change:
    raw = orjson.dumps(
        body if body is not None else {"k": key, "ts": ts}, option=orjson.OPT_SORT_KEYS
    )
    return Change(
        "contacts", key, raw.decode(), ts, deleted, origin, hashlib.sha256(raw).hexdigest()[:32]
    )


async def merge_all(path: Path, batches: list[list[Change]]) -> list[tuple[object, ...]]:
    async with await Store.open(path) as store:
        for batch in batches:
            await store.transact(lambda conn, b=batch: apply_changes(conn, b, ROUTES, now=1))
    raw = sqlite3.connect(path)
    rows = raw.execute(
        "SELECT collection, key, body, updated_at, deleted, origin, digest FROM records "
        "ORDER BY collection, key"
    ).fetchall()
    raw.close()
    return rows


changes_strategy = st.lists(
    st.builds(
        change,
        key=st.sampled_from(["a", "b", "c"]),
        ts=st.integers(min_value=1, max_value=4),
        deleted=st.booleans(),
        body=st.sampled_from([None, {"v": 1}, {"v": 2}]),
        origin=st.sampled_from(["drop", "sql", "crm"]),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(changes=changes_strategy, data=st.data())
def test_any_order_with_duplicates_gives_the_same_records(
    changes: list[Change], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(changes))
    duplicated = shuffled + data.draw(st.lists(st.sampled_from(changes), max_size=10))
    split = data.draw(st.integers(min_value=1, max_value=len(duplicated)))
    with tempfile.TemporaryDirectory() as tmp:
        expected = anyio.run(merge_all, Path(tmp) / "one.db", [changes])
        got = anyio.run(merge_all, Path(tmp) / "two.db", [duplicated[:split], duplicated[split:]])
    assert got == expected


pytestmark = pytest.mark.anyio


async def test_tombstone_stops_an_older_add_from_resurrecting(tmp_path: Path) -> None:
    rows = await merge_all(
        tmp_path / "s.db",
        [
            [change("a", 10)],
            [change("a", 20, deleted=True, body={"gone": True})],
            [change("a", 15, body={"late": "add"})],
        ],
    )
    assert [(r[1], r[3], r[4]) for r in rows] == [("a", 20, 1)]


async def test_tie_delete_beats_upsert_in_either_order(tmp_path: Path) -> None:
    upsert, delete = change("a", 7, body={"x": 1}), change("a", 7, deleted=True, body={"x": 1})
    first = await merge_all(tmp_path / "1.db", [[upsert], [delete]])
    second = await merge_all(tmp_path / "2.db", [[delete], [upsert]])
    assert first == second
    assert first[0][4] == 1


async def test_tie_between_upserts_goes_to_larger_digest(tmp_path: Path) -> None:
    one, two = change("a", 7, body={"v": 1}), change("a", 7, body={"v": 2})
    winner = max(one, two, key=lambda c: c.digest)
    rows = await merge_all(tmp_path / "s.db", [[one], [two]])
    rows_reversed = await merge_all(tmp_path / "r.db", [[two], [one]])
    assert rows[0][2] == winner.body == rows_reversed[0][2]


async def test_fan_out_skips_origin_and_coalesces(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    db = store.db

    result = await store.transact(
        lambda c: apply_changes(c, [change("a", 1, origin="crm")], ROUTES, now=100)
    )
    assert result.providers == {"fav"}
    await store.transact(
        lambda c: apply_changes(c, [change("a", 2), change("a", 3)], ROUTES, now=200)
    )
    older = await store.transact(
        lambda c: apply_changes(c, [change("a", 1, body={"old": 1})], ROUTES, now=300)
    )
    rows = await db.execute_fetchall(
        "SELECT provider, key, updated_at, enqueued_at FROM outbox ORDER BY provider"
    )
    statuses = await db.execute_fetchall("SELECT status FROM inbox ORDER BY id")
    await store.close()
    # fav first queued at 100 keeps its place; crm only since the local change at 200.
    assert [tuple(r) for r in rows] == [("crm", "a", 3, 200), ("fav", "a", 3, 100)]
    assert older.applied == 0 and older.providers == set()
    # crm's first version was in `records` only; logged (superseded) once 2 displaced it.
    assert [s[0] for s in statuses] == ["superseded", "applied", "applied", "superseded"]


INBOX_VERSION = (
    "SELECT id, ts, op, digest, origin, body, status, received_at FROM inbox "
    "WHERE collection = 'contacts' AND key = ? ORDER BY id"
)


async def test_a_pulled_first_version_is_in_records_only_until_displaced(tmp_path: Path) -> None:
    first = change("a", 10, origin="crm", body={"v": 1})
    async with await Store.open(tmp_path / "s.db") as store:
        await store.transact(lambda c: apply_changes(c, [first], ROUTES, now=100))
        logged = await store.db.execute_fetchall(INBOX_VERSION, ("a",))
        record = await store.db.execute_fetchall(
            "SELECT change_id, file_id, origin, body, merged_at FROM records WHERE key = 'a'"
        )
        assert list(logged) == []
        assert [tuple(r) for r in record] == [(None, None, "crm", first.body, 100)]

        # The same version pulled again logs nothing either.
        await store.transact(lambda c: apply_changes(c, [first], ROUTES, now=150))
        assert list(await store.db.execute_fetchall(INBOX_VERSION, ("a",))) == []

        second = change("a", 20, origin="crm", body={"v": 2})
        await store.transact(lambda c: apply_changes(c, [second], ROUTES, now=200))
        logged = await store.db.execute_fetchall(INBOX_VERSION, ("a",))
        change_id = list(await store.db.execute_fetchall("SELECT change_id FROM records"))
    # The displaced version with its body, received when it was merged; then the new one.
    assert [tuple(r) for r in logged] == [
        (1, 10, "upsert", first.digest, "crm", first.body, "superseded", 100),
        (2, 20, "upsert", second.digest, "crm", second.body, "applied", 200),
    ]
    assert change_id[0][0] == 2


async def test_a_pulled_first_version_displaced_in_its_own_batch_is_logged(
    tmp_path: Path,
) -> None:
    first, tombstone = change("a", 10, origin="crm"), change("a", 11, origin="crm", deleted=True)
    async with await Store.open(tmp_path / "s.db") as store:
        await store.transact(lambda c: apply_changes(c, [first, tombstone], ROUTES, now=100))
        logged = await store.db.execute_fetchall(INBOX_VERSION, ("a",))
    assert [tuple(r)[1:7] for r in logged] == [
        (10, "upsert", first.digest, "crm", first.body, "superseded"),
        (11, "delete", tombstone.digest, "crm", tombstone.body, "applied"),
    ]


async def test_a_displaced_pulled_tombstone_is_logged_as_a_delete(tmp_path: Path) -> None:
    gone = Change("contacts", "a", None, 10, True, "crm", "0" * 32)
    async with await Store.open(tmp_path / "s.db") as store:
        await store.transact(lambda c: apply_changes(c, [gone], ROUTES, now=100))
        await store.transact(lambda c: apply_changes(c, [change("a", 20)], ROUTES, now=200))
        logged = list(await store.db.execute_fetchall(INBOX_VERSION, ("a",)))
    assert tuple(logged[0])[1:7] == (10, "delete", "0" * 32, "crm", None, "superseded")


def versions_kept(path: Path) -> tuple[set[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every version the store holds (inbox rows and records-only rows), and the inbox bodies."""
    raw = sqlite3.connect(path)
    logged = raw.execute(
        "SELECT key, ts, op = 'delete', digest, origin, body FROM inbox"
    ).fetchall()
    unlogged = raw.execute(
        "SELECT key, updated_at, deleted, digest, origin, body FROM records WHERE change_id IS NULL"
    ).fetchall()
    raw.close()
    return {row[:5] for row in logged + unlogged}, logged + unlogged


@settings(max_examples=40, deadline=None)
@given(changes=changes_strategy, data=st.data())
def test_inbox_and_records_only_rows_hold_every_version_seen(
    changes: list[Change], data: st.DataObject
) -> None:
    split = data.draw(st.integers(min_value=1, max_value=len(changes)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.db"
        anyio.run(merge_all, path, [changes[:split], changes[split:]])
        kept, rows = versions_kept(path)
    seen = {(c.key, c.ts, int(c.deleted), c.digest, c.origin) for c in changes}
    assert seen <= kept
    # Every version is there with its body (none came from a drop file here).
    bodies: dict[tuple[object, ...], str | None] = {
        (c.key, c.ts, int(c.deleted), c.digest, c.origin): c.body for c in changes
    }
    for key, ts, deleted, digest, origin, body in rows:
        assert body == bodies[(key, ts, deleted, digest, origin)]


RECORD_ROW = (
    "SELECT key, body, updated_at, deleted, origin, digest, (SELECT typeof(k.digest) FROM "
    "record_keys k WHERE k.collection = r.collection AND k.key = r.key), change_id, file_id, "
    "doc_index, merged_at FROM records r ORDER BY key"
)


async def test_rows_of_every_shape_in_one_batch_leave_each_key_as_its_last_winner(
    tmp_path: Path,
) -> None:
    # A local change (its inbox row only), a drop file's first version (file_id and
    # doc_index, no inbox row), a pulled first version (none of them), then a newer version
    # of each of the last two (logged): one batch, written by shape, where a key's later
    # winner has a shape met before its first one's.
    first = change("a", 10)._replace(file_id=1, doc_index=0)
    newer = change("a", 11)._replace(file_id=1, doc_index=5)
    pulled = change("b", 10, origin="crm")
    local = change("c", 10, origin="sql")._replace(inbox_id=None)
    again = change("b", 12, origin="crm")
    async with await Store.open(tmp_path / "s.db") as store:
        await store.transact(
            lambda c: apply_changes(c, [local, first, pulled, newer, again], ROUTES, now=100)
        )
        rows = [tuple(r) for r in await store.db.execute_fetchall(RECORD_ROW)]
        logged = {
            r[0]: tuple(r[1:])
            for r in await store.db.execute_fetchall("SELECT id, key, ts, digest FROM inbox")
        }
    assert [r[:7] for r in rows] == [
        ("a", newer.body, 11, 0, "drop", newer.digest, "blob"),
        ("b", again.body, 12, 0, "crm", again.digest, "blob"),
        ("c", local.body, 10, 0, "sql", local.digest, "blob"),
    ]
    assert [r[8:] for r in rows] == [(1, 5, 100), (None, None, 100), (None, None, 100)]
    for key, _, ts, _, _, digest, _, change_id, *_ in rows:
        assert logged[change_id] == (key, ts, digest)


# --- a bulk load's batch: first versions from drop files, merged by columns ---------------------

DIGESTS = st.one_of(
    st.binary(min_size=16, max_size=16).map(bytes.hex),  # as dropsync computes them
    st.binary(min_size=32, max_size=32).map(bytes.hex),
    st.binary(min_size=16, max_size=16).map(lambda raw: raw.hex().upper()),  # 32 characters
    st.binary(min_size=15, max_size=15).map(lambda raw: raw.hex() + "  "),  # fromhex skips " "
    st.sampled_from(["ABCDEF00", "abc", "", "not hex!", "ab cd", "0" * 31, "é" * 4]),
)


def file_row(key: str, collection: str, deleted: bool, digest: str, index: int) -> Change:
    body = None if deleted else orjson.dumps({"k": key}).decode()
    origin = "drop"
    return Change(collection, key, body, 1_000 + index, deleted, origin, digest, 7, index)


def every_table(path: Path) -> dict[str, list[tuple[object, ...]]]:
    raw = sqlite3.connect(path)
    tables = {
        name: sorted(raw.execute(f"SELECT * FROM {name}").fetchall(), key=repr)
        for name in ("record_keys", "record_bodies", "outbox", "outbox_pending", "inbox")
    }
    tables["typed"] = raw.execute(
        "SELECT typeof(digest), typeof(deleted), typeof(body_id) FROM record_keys"
    ).fetchall()
    raw.close()
    return tables


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e\x00f", "ü"]),
            st.sampled_from(["contacts", "other"]),
            st.booleans(),
            DIGESTS,
        ),
        min_size=1,
        max_size=12,
    ),
    already=st.booleans(),
)
def test_a_batch_of_first_versions_is_merged_as_row_by_row(
    rows: list[tuple[str, str, bool, str]], already: bool
) -> None:
    """The bulk path (``_first_versions_only``: every change a drop file's first version of
    its key) leaves every table as the general path does, whatever the digests look like."""
    from dropsync.store import merge

    batch = [file_row(*row, index) for index, row in enumerate(rows)]
    earlier = [file_row("a", "contacts", False, "00" * 16, 99)] if already else []
    found = []
    for bulk in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "s.db"
            original = merge._first_versions_only
            if not bulk:
                merge._first_versions_only = lambda changes, keys: False
            try:
                anyio.run(merge_all, path, [earlier, batch])
            finally:
                merge._first_versions_only = original
            found.append(every_table(path))
    assert found[0] == found[1]


def test_the_bulk_path_is_the_one_a_first_load_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    from dropsync.store import merge

    taken: list[int] = []
    write = merge._write_first_versions

    def counted(db: sqlite3.Connection, changes: list[Change], now: int) -> None:
        taken.append(len(changes))
        write(db, changes, now)

    monkeypatch.setattr(merge, "_write_first_versions", counted)
    batch = [file_row(key, "contacts", False, "ab" * 16, i) for i, key in enumerate("abc")]
    with tempfile.TemporaryDirectory() as tmp:
        rows = anyio.run(merge_all, Path(tmp) / "s.db", [batch, batch])
    assert taken == [3]  # the second batch finds the keys stored: the general path
    assert [row[:2] for row in rows] == [("contacts", "a"), ("contacts", "b"), ("contacts", "c")]


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        ([2**63 - 1], [2**63 - 3, 2**63 - 2]),  # before the smallest
        ([-(2**63), -(2**63) + 2, 2**63 - 1], [3 - 2**63, 4 - 2**63]),  # the first gap of two
    ],
)
async def test_versions_are_logged_under_free_ids_when_none_follow_the_largest(
    tmp_path: Path, taken: list[int], expected: list[int]
) -> None:
    """Other programs choose inbox ids too; one may hold SQLite's largest (docs/schema.md)."""
    async with await Store.open(tmp_path / "s.db") as store:
        first = change("a", 10, origin="crm")  # in records only, logged once displaced
        await store.transact(lambda c: apply_changes(c, [first], ROUTES, now=100))
        await store.db.executemany(
            "INSERT INTO inbox (id, collection, key, status) VALUES (?, 'other', 'x', 'rejected')",
            [(row_id,) for row_id in taken],
        )
        await store.db.commit()
        await store.transact(lambda c: apply_changes(c, [change("a", 20)], ROUTES, now=200))
        logged = await store.db.execute_fetchall(INBOX_VERSION, ("a",))
    assert [(row[0], row[1], row[6]) for row in logged] == [
        (expected[0], 10, "superseded"),
        (expected[1], 20, "applied"),
    ]
