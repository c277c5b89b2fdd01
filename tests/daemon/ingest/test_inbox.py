"""The SQL inbox applier on a real store: rows other programs INSERT, good and bad."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.ingest.inbox import InboxApplier
from dropsync.store.handle import Store

pytestmark = pytest.mark.anyio
TS = 1_600_000_000_000
BIG = 123456789012345678901234567890


def make_config(tmp_path: Path, **drop: object) -> Config:
    return parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "drop": {"path": str(tmp_path / "drop"), **drop},
            "collections": {"contacts": {"key": "email", "timestamp": "at"}},
        },
        "test.toml",
    )


def insert(config: Config, *rows: str) -> None:
    """INSERT rows as another program would: each a SQL VALUES tuple."""
    raw = sqlite3.connect(config.store_path)
    try:
        for values in rows:
            raw.execute(
                f"INSERT INTO inbox (collection, key, op, body, updated_at) VALUES {values}"
            )
        raw.commit()
    finally:
        raw.close()


def outcome(config: Config) -> list[tuple[str, str | None]]:
    raw = sqlite3.connect(config.store_path)
    try:
        return raw.execute("SELECT status, reason FROM inbox ORDER BY id").fetchall()
    finally:
        raw.close()


def records(config: Config) -> dict[str, tuple[str | None, int]]:
    raw = sqlite3.connect(config.store_path)
    try:
        return {
            key: (body, deleted)
            for key, body, deleted in raw.execute("SELECT key, body, deleted FROM records")
        }
    finally:
        raw.close()


async def apply(config: Config) -> int:
    async with await Store.open(config.store_path) as store:
        return await InboxApplier(store, config, lambda merged: None).apply_pending()


async def test_an_upsert_body_must_be_a_json_object(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await apply(config)  # creates the store
    insert(
        config,
        f"('contacts', 'null', 'upsert', 'null', {TS})",
        f"('contacts', 'array', 'upsert', '[1, 2]', {TS})",
        f"('contacts', 'string', 'upsert', '\"text\"', {TS})",
        f"('contacts', 'number', 'upsert', '5', {TS})",
        f"('contacts', 'bool', 'upsert', 'true', {TS})",
        f"('contacts', 'del-array', 'delete', '[1]', {TS})",
        f"('contacts', 'del-null', 'delete', 'null', {TS})",
        f"('contacts', 'ok', 'upsert', '{{\"email\": \"ok\"}}', {TS})",
    )
    assert await apply(config) == 8
    rows = outcome(config)
    kinds = ["null", "an array", "a string", "a number", "true or false"]
    for (status, reason), kind in zip(rows[:5], kinds, strict=True):
        assert status == "rejected"
        assert reason == f"body is {kind}; an upsert's body must be a JSON object"
    assert rows[5][0] == "rejected" and "a delete's body, when given, must be a JSON object" in (
        rows[5][1] or ""
    )
    assert rows[6:] == [("applied", None), ("applied", None)]
    assert records(config) == {"del-null": (None, 1), "ok": ('{"email":"ok"}', 0)}


async def test_integers_past_64_bits_keep_their_digits_and_1e400_is_rejected(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    await apply(config)
    insert(
        config,
        f"('contacts', 'big', 'upsert', '{{\"n\": {BIG}, \"m\": -{BIG}}}', {TS})",
        f"('contacts', 'huge', 'upsert', '{{\"n\": 1e400}}', {TS})",
        f"('contacts', 'nan', 'upsert', '{{\"n\": NaN}}', {TS})",
        f"('contacts', 'after', 'upsert', '{{\"n\": 0.1}}', {TS})",
    )
    await apply(config)
    rows = outcome(config)
    assert rows[0] == ("applied", None) and rows[3] == ("applied", None)
    assert rows[1][0] == "rejected" and "1e400 is too large for a 64-bit float" in str(rows[1][1])
    assert rows[2][0] == "rejected" and "NaN is not a JSON number" in str(rows[2][1])
    body = records(config)["big"][0]
    assert body == f'{{"m":-{BIG},"n":{BIG}}}'
    assert json.loads(str(body)) == {"n": BIG, "m": -BIG}


@pytest.mark.parametrize(
    ("values", "column"),
    [
        (f"('contacts', 'k', 'upsert', CAST(X'7BFF7D' AS TEXT), {TS})", "body"),
        (f"('contacts', CAST(X'6BFF' AS TEXT), 'upsert', '{{}}', {TS})", "key"),
        (f"(CAST(X'63FF' AS TEXT), 'k', 'upsert', '{{}}', {TS})", "collection"),
        ("('contacts', 'k', CAST(X'7570FF' AS TEXT), '{}', 5)", "op"),
        ("('contacts', 'k', 'upsert', '{}', CAST(X'32FF' AS TEXT))", "updated_at"),
    ],
)
async def test_text_that_is_not_utf8_is_rejected_and_the_rows_after_it_applied(
    tmp_path: Path, values: str, column: str
) -> None:
    config = make_config(tmp_path)
    await apply(config)
    insert(config, values, f"('contacts', 'after', 'upsert', '{{\"email\": \"a\"}}', {TS})")
    assert await apply(config) == 2
    (status, reason), after = outcome(config)
    assert status == "rejected"
    assert reason is not None and reason.startswith(column) and "not valid UTF-8" in reason
    assert after == ("applied", None)


async def test_a_body_over_the_size_limit_is_rejected_without_being_read(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_document_mb=0.001)  # 1,048 bytes
    await apply(config)
    insert(
        config,
        f"('contacts', 'big', 'upsert', '{{\"s\": \"' || printf('%.2000c', 'x') || '\"}}', {TS})",
        f"('contacts', 'deep', 'upsert', '{{\"s\": ' || printf('%.100c', '[') || "
        f"printf('%.100c', ']') || '}}', {TS})",
        f"('contacts', 'ok', 'upsert', '{{}}', {TS})",
    )
    await apply(config)
    big, deep, ok = outcome(config)
    assert big[0] == "rejected" and "longer than the limit of 1,048" in str(big[1])
    assert deep[0] == "rejected" and "nested more than 64 levels deep" in str(deep[1])
    assert ok == ("applied", None)


async def test_a_number_updated_at_is_read_in_the_collections_unit(tmp_path: Path) -> None:
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "drop": {"path": str(tmp_path / "drop")},
            "collections": {
                "contacts": {"key": "email", "timestamp": "at"},
                "secs": {"timestamp_unit": "s"},
            },
        },
        "test.toml",
    )
    await apply(config)
    insert(
        config,
        "('secs', 'a', 'upsert', '{\"v\": \"new\"}', 1796648449)",
        "('secs', 'a', 'upsert', '{\"v\": \"old\"}', 1796648448)",
        "('contacts', 'b', 'upsert', '{}', 1796648449)",
        "('contacts', 'c', 'upsert', '{}', '2026-12-07T13:00:49Z')",
        "('other', 'd', 'upsert', '{}', 1796648449)",
    )
    assert await apply(config) == 5
    rows = outcome(config)
    assert rows[:2] == [("applied", None), ("superseded", None)]
    for status, reason in (rows[2], rows[4]):
        assert status == "rejected" and "updated_at = 1796648449 looks like epoch seconds" in str(
            reason
        )
    assert rows[3] == ("applied", None)
    raw = sqlite3.connect(config.store_path)
    stamps = dict(raw.execute("SELECT key, updated_at FROM records").fetchall())
    raw.close()
    assert stamps == {"a": 1_796_648_449_000, "c": 1_796_648_449_000}


async def test_a_request_without_a_time_is_dated_now_whatever_its_collections_unit(
    tmp_path: Path,
) -> None:
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "drop": {"path": str(tmp_path / "drop")},
            "collections": {"registration_requests": {"timestamp_unit": "s"}},
            "providers": {
                "lenos": {
                    "kind": "registrations",
                    "base_url": "http://127.0.0.1:9",
                    "username": "u",
                    "event_id": "e",
                }
            },
        },
        "test.toml",
    )
    await apply(config)
    before = int(time.time() * 1000)
    raw = sqlite3.connect(config.store_path)
    raw.execute(
        "INSERT INTO inbox (collection, key, op, body) VALUES "
        "('registration_requests', 'r1', 'upsert', '{}')"
    )
    raw.commit()
    raw.close()
    await apply(config)
    assert outcome(config) == [("applied", None)]
    raw = sqlite3.connect(config.store_path)
    [(stamp,)] = raw.execute("SELECT updated_at FROM records").fetchall()
    raw.close()
    assert before <= stamp <= int(time.time() * 1000)


async def test_each_commit_of_another_program_is_applied_without_the_tick(
    tmp_path: Path,
) -> None:
    # The tick an hour away: only the watch of the write-ahead log wakes the applier. The
    # other program syncs each commit (synchronous = FULL, SQLite's default): its writes to
    # the log come before the commit is published, so a look at the first write can come
    # too early, and the looks after it must still find the row. Each row is awaited before
    # the next is inserted, so no later commit can carry an earlier one along.
    config = replace(make_config(tmp_path), inbox_poll_s=3600.0)
    await apply(config)  # creates the store
    raw = sqlite3.connect(
        config.store_path, isolation_level=None, timeout=10, check_same_thread=False
    )
    raw.execute("PRAGMA synchronous = FULL")
    merged: list[anyio.Event] = []
    async with await Store.open(config.store_path) as store:
        applier = InboxApplier(store, config, lambda result: merged[-1].set())
        with anyio.fail_after(60):  # bounds a hang only
            async with anyio.create_task_group() as tg:
                tg.start_soon(applier.run)
                for n in range(30):
                    merged.append(anyio.Event())
                    # From a thread, as another program: the event loop runs meanwhile.
                    await anyio.to_thread.run_sync(
                        raw.execute,
                        "INSERT INTO inbox (collection, key, op, body, updated_at) "
                        "VALUES ('contacts', ?, 'upsert', '{}', ?)",
                        (f"k{n}", TS + n),
                    )
                    await merged[-1].wait()
                tg.cancel_scope.cancel()
    raw.close()
    assert outcome(config) == [("applied", None)] * 30
