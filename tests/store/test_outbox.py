"""Outbox, delivery log, dead letters and provider state, on a real store."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from functools import partial
from pathlib import Path

import anyio
import orjson
import pytest
from dropsync.store import callbacks, outbox
from dropsync.store.handle import Store
from dropsync.store.merge import Change, apply_changes

pytestmark = pytest.mark.anyio
ROUTES = {"contacts": ("crm",)}


def change(key: str, ts: int, origin: str = "drop") -> Change:
    raw = orjson.dumps({"email": key, "ts": ts})
    return Change(
        "contacts", key, raw.decode(), ts, False, origin, hashlib.sha256(raw).hexdigest()[:32]
    )


async def assert_pending_counts_match(store: Store) -> None:
    """The trigger-kept ``outbox_pending`` equals a real count of ``outbox``."""
    async with store.read() as db:
        kept = await db.execute_fetchall(
            "SELECT provider, pending FROM outbox_pending WHERE pending != 0 ORDER BY 1"
        )
        counted = await db.execute_fetchall(
            "SELECT provider, COUNT(*) FROM outbox GROUP BY provider ORDER BY 1"
        )
    assert [tuple(r) for r in kept] == [tuple(r) for r in counted]


async def merge(store: Store, *changes: Change, now: int = 1000) -> None:
    await store.transact(lambda conn: apply_changes(conn, list(changes), ROUTES, now=now))


async def test_delivered_entry_leaves_unless_a_newer_version_arrived(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        await merge(store, change("a", 1), change("b", 1))
        async with store.read() as db:
            batch = await outbox.take_batch(db, "crm", 10)
        assert [(e.key, e.updated_at) for e in batch] == [("a", 1), ("b", 1)]
        assert orjson.loads(batch[0].body or "null") == {"email": "a", "ts": 1}
        await merge(store, change("b", 2), now=2000)  # arrives while the batch is in flight
        await store.transact(
            partial(
                outbox.deliver_batch,
                provider="crm",
                entries=batch,
                batch_id="k",
                state="accepted",
                http_status=201,
                latency_ms=1.0,
                remote_ref="job1",
                now=3000,
            )
        )
        async with store.read() as db:
            left = await outbox.take_batch(db, "crm", 10)
            delivered = await db.execute_fetchall(
                "SELECT key, updated_at, state FROM delivered ORDER BY key"
            )
        assert [(e.key, e.updated_at) for e in left] == [("b", 2)]
        assert [tuple(r) for r in delivered] == [("a", 1, "accepted"), ("b", 1, "accepted")]
        settled = await store.transact(
            partial(
                callbacks.settle_job,
                provider="crm",
                job_id="job1",
                failed=False,
                error="",
                now=4000,
            )
        )
        assert settled[:2] == (1, [1])
        async with store.read() as db:
            states = await db.execute_fetchall("SELECT DISTINCT state FROM delivered")
        assert [r[0] for r in states] == ["confirmed"]
        await assert_pending_counts_match(store)


async def test_dead_letter_retry_and_drop(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        await merge(store, change("a", 1), change("b", 1), change("c", 1))
        async with store.read() as db:
            batch = await outbox.take_batch(db, "crm", 10)
        await store.transact(
            outbox.dead_letter, "crm", batch, reason="HTTP 422: bad email", http_status=422, now=5
        )
        async with store.read() as db:
            assert await outbox.pending_count(db, "crm") == 0
            letters = list(
                await db.execute_fetchall(
                    "SELECT id, key, reason, http_status FROM dead_letters ORDER BY key"
                )
            )
        assert [r[1:] for r in letters] == [
            ("a", "HTTP 422: bad email", 422),
            ("b", "HTTP 422: bad email", 422),
            ("c", "HTTP 422: bad email", 422),
        ]
        retried = await store.transact(
            outbox.retry_dead_letters, provider=None, ids=[letters[0][0]], now=6
        )
        assert retried == 1
        assert (
            await store.transact(outbox.drop_dead_letters, provider="crm", ids=[letters[1][0]]) == 1
        )
        async with store.read() as db:
            pending = await outbox.take_batch(db, "crm", 10)
            remaining = await db.execute_fetchall("SELECT key FROM dead_letters")
        assert [e.key for e in pending] == ["a"]
        assert [r[0] for r in remaining] == ["c"]
        assert await store.transact(outbox.retry_dead_letters, provider="crm", ids=[], now=7) == 1
        async with store.read() as db:
            assert await outbox.pending_count(db, "crm") == 2
        await assert_pending_counts_match(store)


async def test_provider_state_survives_reopen_and_resync_requeues(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with await Store.open(path) as store:
        await merge(store, change("a", 1), change("b", 1, origin="crm"))
        await store.transact(outbox.register_providers, [("crm", "crm")], now=1)
        await store.transact(
            outbox.set_provider_state,
            "crm",
            state="backing-off",
            now=2,
            next_attempt_at=99_999,
            failures=3,
            last_error="HTTP 503",
        )
    async with await Store.open(path) as store:
        state = await store.call(outbox.provider_state, "crm")
        assert state is not None
        assert (state.state, state.next_attempt_at, state.failures) == ("backing-off", 99_999, 3)

        def resync(db: sqlite3.Connection) -> int:
            outbox.register_providers(db, [("crm", "crm")], now=3)  # keeps state
            queued = outbox.requeue_collection(db, "crm", ["contacts"], now=4)
            outbox.clear_auth_failures(db, "crm")
            return queued

        queued = await store.transact(resync)
        state = await store.call(outbox.provider_state, "crm")
        async with store.read() as db:
            keys = [e.key for e in await outbox.take_batch(db, "crm", 10)]
        # b came from crm itself, so it is not sent back.
        assert queued == 1 and keys == ["a"]
        assert state is not None and (state.state, state.next_attempt_at) == ("online", None)
        await assert_pending_counts_match(store)


async def test_a_reload_resumes_refused_credentials_but_keeps_a_push_s_wait(
    tmp_path: Path,
) -> None:
    """A pull refused (401) after a push was throttled: the reload that follows must not
    let the push go before its Retry-After (found by the provider-faults campaign)."""
    async with await Store.open(tmp_path / "s.db") as store:

        def throttled_then_refused(db: sqlite3.Connection) -> None:
            outbox.register_providers(db, [("fav", "favourites"), ("crm", "crm")], now=1)
            for name, waits_until in (("fav", 5_000), ("crm", 500)):
                outbox.set_provider_state(
                    db, name, state="backing-off", now=2, next_attempt_at=waits_until, failures=2
                )
                outbox.record_pull_failure(
                    db, name, state="auth-failed", last_error="HTTP 401", now=3
                )
                outbox.record_pull_failure(  # a later pull failure keeps auth-failed
                    db, name, state="offline", last_error="timeout", now=4
                )

        await store.transact(throttled_then_refused)
        await store.transact(outbox.resume_refused_providers, now=1_000)
        fav = await store.call(outbox.provider_state, "fav")
        crm = await store.call(outbox.provider_state, "crm")
    assert fav is not None and crm is not None
    assert (fav.state, fav.next_attempt_at, fav.failures) == ("backing-off", 5_000, 2)
    assert (crm.state, crm.next_attempt_at, crm.failures) == ("online", None, 0)


async def test_pending_count_follows_coalescing_and_hand_edits(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with await Store.open(path) as store:
        await merge(store, change("a", 1), change("b", 1))
        await merge(store, change("a", 2), change("c", 2))  # a coalesces: still one entry
        async with store.read() as db:
            assert await outbox.pending_count(db, "crm") == 3
            assert await outbox.pending_count(db) == 3
        await assert_pending_counts_match(store)
    # An operator clears part of the backlog by hand with sqlite3.
    raw = sqlite3.connect(path)
    raw.execute("DELETE FROM outbox WHERE key IN ('a', 'b')")
    raw.commit()
    raw.close()
    async with await Store.open(path) as store:
        async with store.read() as db:
            assert await outbox.pending_count(db, "crm") == 1
            assert await outbox.pending_count(db, "nobody") == 0
        await assert_pending_counts_match(store)


async def test_snapshot_reads_committed_state_without_waiting_for_the_writer(
    tmp_path: Path,
) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        await merge(store, change("a", 1))
        written, release = threading.Event(), threading.Event()

        def open_transaction(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO records (collection, key, body, updated_at, deleted, origin, "
                "digest, merged_at) VALUES ('contacts', 'b', '{}', 1, 0, 'drop', 'd', 1)"
            )
            db.execute(
                "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
                "VALUES ('crm', 'contacts', 'b', 1, 1)"
            )
            written.set()
            release.wait(30)  # the transaction stays open while the snapshot is read

        with anyio.fail_after(10):  # bounds a hang: a snapshot must not wait for the writer
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.transact, open_transaction)
                await anyio.to_thread.run_sync(written.wait)
                async with store.snapshot() as snapshot:
                    during = await outbox.take_batch(snapshot, "crm", 10)
                release.set()
        async with store.snapshot() as snapshot:
            after = await outbox.take_batch(snapshot, "crm", 10)
    assert [e.key for e in during] == ["a"]  # the open transaction is not seen
    assert [e.key for e in after] == ["a", "b"]  # once committed, it is


async def test_keys_holding_nul_go_through_the_store_byte_for_byte(tmp_path: Path) -> None:
    """The doors refuse them (docs/schema.md, "Keys"); the store never cuts one if it gets
    one anyway: its bulk statements bind such keys instead of passing them through
    json_each, which ends text at U+0000."""
    keys = ["d\x00rop", "d", "\x00", "d\x00rop\x00x"]
    async with await Store.open(tmp_path / "s.db") as store:
        # First versions, pulled from another provider: in `records` only, and fanned out.
        await merge(store, *(change(k, 2000, origin="fav") for k in keys))
        await merge(store, *(change(k, 1000, origin="sql") for k in keys))  # older: lose
        await merge(store, *(change(k, 3000, origin="sql") for k in keys))  # newer: log both
        async with store.read() as db:
            batch = await outbox.take_batch(db, "crm", 10)
        assert sorted(e.key for e in batch) == sorted(keys)
        assert all(e.updated_at == 3000 for e in batch)
        await store.transact(
            partial(
                outbox.deliver_batch,
                provider="crm",
                entries=batch,
                batch_id="b1",
                state="accepted",
                http_status=201,
                latency_ms=1.0,
                remote_ref=None,
                now=5,
            )
        )
        async with store.read() as db:
            left = await db.execute_fetchall("SELECT key FROM outbox")
            delivered = await db.execute_fetchall("SELECT key, updated_at FROM delivered")
            records = await db.execute_fetchall("SELECT key, updated_at FROM records")
            logged = await db.execute_fetchall(
                "SELECT key, updated_at, status FROM inbox ORDER BY key, updated_at"
            )
    assert list(left) == []
    assert sorted(map(tuple, delivered)) == sorted((k, 3000) for k in keys)
    assert sorted(map(tuple, records)) == sorted((k, 3000) for k in keys)
    expected = [(k, ts, s) for k in keys for ts, s in ((1000, "superseded"), (2000, "superseded"))]
    expected += [(k, 3000, "applied") for k in keys]
    assert sorted(map(tuple, logged)) == sorted(expected)


async def test_a_version_queued_again_is_a_new_request_to_the_provider(tmp_path: Path) -> None:
    # resync and dead-letters retry queue a version the provider saw before: its idempotency
    # key must differ, or a provider honouring the key answers the old result (processing
    # nothing) instead of taking it again.
    from dropsync.adapters.base import batch_idempotency_key
    from dropsync.daemon.delivery.sending import to_outgoing

    async def key_of_pending(store: Store) -> str:
        async with store.read() as db:
            batch = await outbox.take_batch(db, "crm", 10)
        return batch_idempotency_key([to_outgoing("crm", e) for e in batch])

    async def deliver_pending(store: Store) -> None:
        async with store.read() as db:
            batch = await outbox.take_batch(db, "crm", 10)
        await store.transact(
            partial(
                outbox.deliver_batch,
                provider="crm",
                entries=batch,
                batch_id="k",
                state="accepted",
                http_status=201,
                latency_ms=1.0,
                remote_ref=None,
                now=1500,
            )
        )

    async with await Store.open(tmp_path / "s.db") as store:
        await store.transact(outbox.register_providers, [("crm", "crm")], now=1)
        await merge(store, change("a", 1))
        first = await key_of_pending(store)
        assert await key_of_pending(store) == first  # the same queued version: the same key
        await deliver_pending(store)
        await store.transact(outbox.requeue_collection, "crm", ["contacts"], now=2000)
        resynced = await key_of_pending(store)
        assert resynced != first
        async with store.read() as db:
            batch = await outbox.take_batch(db, "crm", 10)
        await store.transact(
            partial(outbox.dead_letter, reason="no", http_status=400, now=2500), "crm", batch
        )
        await store.transact(outbox.retry_dead_letters, provider="crm", ids=[], now=3000)
        assert await key_of_pending(store) not in (first, resynced)
