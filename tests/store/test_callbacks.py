"""A sync-status callback settling a churn upload recorded a chunk per transaction: the
records recorded after it settled their delivery are settled too, on a real store."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import orjson
import pytest
from dropsync.store import callbacks, outbox, spool
from dropsync.store.handle import Store
from dropsync.store.merge import Change, apply_changes

pytestmark = pytest.mark.anyio


def change(key: str) -> Change:
    raw = orjson.dumps({"id": key})
    return Change(
        "users", key, raw.decode(), 5, False, "drop", hashlib.sha256(raw).hexdigest()[:32]
    )


async def recorded_in_two_chunks(
    store: Store, tmp_path: Path
) -> tuple[int, list[tuple[int, int, int]]]:
    """Records a and b queued, noted as parts 0 and 1 of batch 1; the delivery recorded and
    part 0's records moved; part 1's chunks are returned for the test to move later."""
    await store.transact(
        lambda db: apply_changes(db, [change("a"), change("b")], {"users": ("churn",)}, now=1)
    )
    await store.call(spool.attach, tmp_path / "spool.db")
    async with store.read() as db:
        entries = await outbox.take_batch(db, "churn", 10)
    rows = [(i, e.id, e.collection, e.key, e.updated_at, 0, 1, 0) for i, e in enumerate(entries)]
    await store.call(spool.add_rows, 1, rows)
    delivery_id, items = await store.transact(
        partial(
            spool.record_delivery,
            provider="churn",
            batch=1,
            parts=[0, 1],
            batch_id="k",
            state="accepted",
            http_status=200,
            latency_ms=1.0,
            remote_ref=None,
            now=100,
            sent_at=50,
        )
    )
    assert items == 2
    pieces = await store.call(spool.chunks, 1, [0, 1])
    await store.transact(
        partial(
            spool.deliver_chunks,
            provider="churn",
            batch=1,
            chunks=pieces[:1],
            state="accepted",
            delivery_id=delivery_id,
            now=100,
        )
    )
    return delivery_id, pieces[1:]


async def move_rest(store: Store, delivery_id: int, rest: list[tuple[int, int, int]]) -> None:
    await store.transact(
        partial(
            spool.deliver_chunks,
            provider="churn",
            batch=1,
            chunks=rest,
            state="accepted",
            delivery_id=delivery_id,
            now=100,
        )
    )


async def rows(store: Store, sql: str) -> list[tuple[object, ...]]:
    async with store.read() as db:
        return [tuple(r) for r in await db.execute_fetchall(sql)]


async def test_records_recorded_after_their_delivery_was_confirmed_are_confirmed(
    tmp_path: Path,
) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        delivery_id, rest = await recorded_in_two_chunks(store, tmp_path)
        ids, queued = await store.transact(
            partial(
                callbacks.settle_sync_status,
                provider="churn",
                before=60,
                failed=False,
                error="",
                now=200,
            )
        )
        assert (ids, queued) == ([delivery_id], 0)
        await move_rest(store, delivery_id, rest)  # the late chunk: confirmed as it is recorded
        sql = "SELECT key, state FROM delivered ORDER BY key"
        assert await rows(store, sql) == [("a", "confirmed"), ("b", "confirmed")]
        await store.transact(
            partial(callbacks.settle_records, provider="churn", ids=ids, failed=False, now=300)
        )
        assert await rows(store, sql) == [("a", "confirmed"), ("b", "confirmed")]
        assert await rows(store, "SELECT state FROM deliveries") == [("confirmed",)]


async def test_records_recorded_after_their_delivery_failed_are_queued_again_once(
    tmp_path: Path,
) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        delivery_id, rest = await recorded_in_two_chunks(store, tmp_path)
        settle = partial(
            callbacks.settle_sync_status,
            provider="churn",
            before=60,
            failed=True,
            error="failed",
            now=200,
        )
        assert await store.transact(settle) == ([delivery_id], 1)
        outbox_sql = "SELECT key FROM outbox ORDER BY key"
        assert await rows(store, outbox_sql) == [("a",), ("b",)]  # b: not recorded yet
        await move_rest(store, delivery_id, rest)  # the late chunk leaves b queued, once
        assert await rows(store, outbox_sql) == [("a",), ("b",)]
        requeued = "SELECT key, state, requeued FROM delivered ORDER BY key"
        assert await rows(store, requeued) == [("a", "accepted", 1), ("b", "accepted", 1)]
        again = partial(
            callbacks.settle_records, provider="churn", ids=[delivery_id], failed=True, now=300
        )
        assert await store.transact(again) == 0  # once
        assert await rows(store, "SELECT state, error FROM deliveries") == [("failed", "failed")]
        # A callback older than the upload settles nothing.
        assert await store.transact(
            partial(
                callbacks.settle_sync_status,
                provider="churn",
                before=10,
                failed=False,
                error="",
                now=400,
            )
        ) == ([], 0)


async def crm_batch(store: Store, remote_ref: str) -> None:
    """Records a and b queued for the CRM and taken by one delivery carrying ``remote_ref``."""
    await store.transact(
        lambda db: apply_changes(db, [change("a"), change("b")], {"users": ("crm",)}, now=1)
    )
    async with store.read() as db:
        entries = await outbox.take_batch(db, "crm", 10)
    await store.transact(
        partial(
            outbox.deliver_batch,
            provider="crm",
            entries=entries,
            batch_id="k",
            state="accepted",
            http_status=201,
            latency_ms=1.0,
            remote_ref=remote_ref,
            now=100,
        )
    )


def settle(job: str, *, failed: bool, now: int = 200) -> partial[tuple[int, list[int], int]]:
    return partial(
        callbacks.settle_job,
        provider="crm",
        job_id=job,
        failed=failed,
        error="the CRM webhook reported failed" if failed else "",
        now=now,
    )


async def test_a_crm_batch_of_several_jobs_fails_if_one_fails_whatever_the_order(
    tmp_path: Path,
) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        await crm_batch(store, "j1,j2")
        # j1's success first, then j2's failure: the batch fails, its records queued again.
        assert await store.transact(settle("j1", failed=False)) == (1, [1], 0)
        assert await rows(store, "SELECT state FROM delivered") == [("confirmed",)] * 2
        assert await store.transact(settle("j2", failed=True)) == (1, [1], 2)
        assert await rows(store, "SELECT state, error FROM deliveries") == [
            ("failed", "the CRM webhook reported failed")
        ]
        assert await rows(store, "SELECT state, requeued FROM delivered") == [("accepted", 1)] * 2
        assert await rows(store, "SELECT key FROM outbox ORDER BY key") == [("a",), ("b",)]
        # A success after the failure changes nothing; nor does the failure told again.
        assert await store.transact(settle("j1", failed=False, now=300)) == (1, [], 0)
        assert await store.transact(settle("j2", failed=True, now=300)) == (1, [], 0)
        assert await rows(store, "SELECT state FROM deliveries") == [("failed",)]
        # An unknown job, or one that only shares a prefix: nothing.
        assert await store.transact(settle("j", failed=True)) == (0, [], 0)


async def test_resync_unconfirmed_queues_records_a_failure_already_queued_once(
    tmp_path: Path,
) -> None:
    # The operator's resync is not bound by the once-per-failure rule of callbacks.
    async with await Store.open(tmp_path / "s.db") as store:
        delivery_id, rest = await recorded_in_two_chunks(store, tmp_path)
        await move_rest(store, delivery_id, rest)
        await store.transact(outbox.register_providers, [("churn", "churn")], now=1)
        await store.transact(callbacks.set_confirm_timeouts, {"churn": 10})
        await store.transact(
            lambda db: db.execute("UPDATE delivered SET requeued = 1 WHERE key = 'a'")
        )
        assert await store.transact(callbacks.requeue_unconfirmed, "churn", now=1_000) == (1, 2)
        assert await rows(store, "SELECT key FROM outbox ORDER BY key") == [("a",), ("b",)]
