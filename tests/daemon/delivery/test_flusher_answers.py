"""The delivery engine meets answers of every shape from the real emulators: only the
documented success delivers, redirects and timeouts keep records queued, Retry-After is
honoured up to its ceiling, and the flusher's writes keep their order by construction."""

from __future__ import annotations

import ast
import hashlib
import inspect
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from dropsync.adapters.crm.adapter import CrmProvider
from dropsync.adapters.crm.adapter import parse_options as crm_options
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.daemon.config import ProviderConfig
from dropsync.daemon.delivery import batches, filebatch, narrowing
from dropsync.daemon.delivery import flusher as delivery
from dropsync.daemon.delivery.flusher import Flusher
from dropsync.store import outbox
from dropsync.store.handle import Store
from dropsync.store.merge import Change, apply_changes
from structlog.testing import capture_logs

pytestmark = pytest.mark.anyio


def contact(i: int) -> Change:
    raw = orjson.dumps({"email": f"guest{i}@example.com", "n": i}, option=orjson.OPT_SORT_KEYS)
    return Change(
        "contacts",
        f"guest{i}@example.com",
        raw.decode(),
        1_700_000_000_000,
        False,
        "drop",
        hashlib.sha256(raw).hexdigest()[:32],
    )


@pytest.fixture
def crm_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(CrmEmulator({"acc_1": "crm-secret"})) as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "s.db")
    await opened.transact(outbox.register_providers, [("crm", "crm")], now=1)
    await opened.transact(
        lambda conn: apply_changes(
            conn, [contact(i) for i in range(5)], {"contacts": ("crm",)}, now=1
        )
    )
    yield opened
    await opened.close()


def flusher(store: Store, server: EmulatorServer, **settings: Any) -> Flusher:
    config = ProviderConfig(
        name="crm",
        kind="crm",
        base_url=server.base_url,
        backoff_base_s=settings.pop("backoff_base_s", 0.05),
        backoff_cap_s=settings.pop("backoff_cap_s", 0.2),
        **settings,
    )
    provider = CrmProvider(
        "crm", server.base_url, crm_options({"account_id": "acc_1"}), "crm-secret", 5, None
    )
    return Flusher(store, config, provider)


async def flush_until(flusher: Flusher, done: Any, limit_s: float = 30) -> None:
    """Run a flusher until ``done(store_state)``; the timeout only bounds a hang."""
    async with flusher.provider, anyio.create_task_group() as tg:
        tg.start_soon(flusher.run)
        with anyio.fail_after(limit_s):
            while not await done():  # noqa: ASYNC110 -- polling the store, not an event
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()


async def facts(store: Store) -> dict[str, Any]:
    state = await store.call(outbox.provider_state, "crm")
    async with store.read() as db:
        pending = await outbox.pending_count(db, "crm")
        letters = next(iter(await db.execute_fetchall("SELECT COUNT(*) FROM dead_letters")))[0]
        delivered = next(iter(await db.execute_fetchall("SELECT COUNT(*) FROM delivered")))[0]
    assert state is not None
    return {
        "state": state.state,
        "pending": pending,
        "dead_letters": letters,
        "delivered": delivered,
        "last_error": state.last_error,
        "next_attempt_at": state.next_attempt_at,
    }


def settled(store: Store) -> Any:
    """Done once the provider failed, or once nothing is pending any more (the old bug)."""

    async def done() -> bool:
        now = await facts(store)
        return bool(now["state"] != "online" or now["pending"] == 0)

    return done


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, "<html><body>Maintenance</body></html>", "text/html"),
        (201, "", None),
        (201, "{}", "application/json"),
    ],
)
async def test_a_2xx_of_another_shape_keeps_every_entry_queued(
    crm_server: EmulatorServer, store: Store, status: int, body: str, content_type: str | None
) -> None:
    crm_server.faults.update(status=status, body=body, content_type=content_type)
    await flush_until(flusher(store, crm_server), settled(store))
    after = await facts(store)
    assert after["pending"] == 5 and after["delivered"] == 0 and after["dead_letters"] == 0
    assert after["state"] == "backing-off"
    assert f"HTTP {status}" in after["last_error"]
    if body:
        assert body[:12] in after["last_error"]
    # The provider answers properly again: everything goes, once.
    crm_server.faults.clear()
    await flush_until(flusher(store, crm_server), lambda: _nothing_pending(store))
    assert len(crm_server.emulator.contacts) == 5  # type: ignore[attr-defined]
    assert (await facts(store))["last_error"] is None


async def _nothing_pending(store: Store) -> bool:
    return bool((await facts(store))["pending"] == 0)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_keeps_every_record_queued_and_names_the_location(
    crm_server: EmulatorServer, store: Store, status: int
) -> None:
    crm_server.faults.update(
        status=status, headers={"Location": "https://crm.example.net/new"}, body=""
    )
    await flush_until(flusher(store, crm_server), settled(store))
    after = await facts(store)
    assert after["pending"] == 5 and after["dead_letters"] == 0
    assert after["state"] == "backing-off"
    assert "https://crm.example.net/new" in after["last_error"]
    assert "misconfigured" in after["last_error"]


@pytest.mark.parametrize("status", [408, 409, 425, 502])
async def test_a_transient_status_is_retried_not_dead_lettered(
    crm_server: EmulatorServer, store: Store, status: int
) -> None:
    crm_server.faults.update(
        status=status, count=3, body=""
    )  # enough to reach a lone record if split
    await flush_until(flusher(store, crm_server), lambda: _nothing_pending(store))
    after = await facts(store)
    assert after["dead_letters"] == 0 and after["delivered"] == 5
    assert len(crm_server.emulator.contacts) == 5  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "retry_after",
    ["99999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT", "86400"],
)
async def test_retry_after_is_honoured_up_to_the_ceiling_and_capping_is_logged(
    crm_server: EmulatorServer, store: Store, retry_after: str
) -> None:
    crm_server.faults.update(status=429, retry_after=retry_after)
    before = int(time.time() * 1000)
    with capture_logs() as logs:
        await flush_until(flusher(store, crm_server, max_retry_after_s=120), settled(store))
    after = await facts(store)
    assert after["state"] == "backing-off" and after["pending"] == 5
    # 120 s from the attempt (plus the ms the engine adds so it is never early).
    assert before + 120_000 <= after["next_attempt_at"] <= int(time.time() * 1000) + 120_002
    capped = [e for e in logs if e["event"] == "retry_after_capped"]
    assert capped and capped[0]["max_retry_after_s"] == 120


async def test_a_retry_after_within_the_ceiling_is_not_capped(
    crm_server: EmulatorServer, store: Store
) -> None:
    crm_server.faults.update(status=503, retry_after="60")
    before = int(time.time() * 1000)
    with capture_logs() as logs:
        await flush_until(flusher(store, crm_server, max_retry_after_s=120), settled(store))
    after = await facts(store)
    assert before + 60_000 <= after["next_attempt_at"] <= int(time.time() * 1000) + 60_002
    assert not [e for e in logs if e["event"] == "retry_after_capped"]


def _store_uses(cls: type, writers: set[str]) -> list[tuple[str, str]]:
    """(method, operation) of every ``<x>.store.<operation>`` in a class, for ``writers``."""
    found = []
    for method in ast.walk(ast.parse(inspect.getsource(cls))):
        if not isinstance(method, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for node in ast.walk(method):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in writers
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "store"
            ):
                found.append((method.name, node.attr))
    return found


def _calls_on(cls: type, receiver: str) -> set[tuple[str, str]]:
    """(method, called) of every ``<x>.<receiver>.<called>(...)`` in a class."""
    found = set()
    for method in ast.walk(ast.parse(inspect.getsource(cls))):
        if not isinstance(method, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for node in ast.walk(method):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == receiver
            ):
                found.add((method.name, node.func.attr))
    return found


def test_the_flusher_writes_only_through_the_helper_that_records_first() -> None:
    """``Flusher.write`` records the delivered requests not recorded yet, in its own
    transaction before its own work. Any other write during a pass could overtake a
    recording: the senders never touch the store (only the loop), and of the provider's
    health the loop only uses what runs inside its own writes, or between passes
    (``wait_turn``, in ``run``)."""
    writers = {"write", "transact", "call", "execute", "executemany", "read", "snapshot"}
    loop = _store_uses(delivery.Flusher, writers)
    assert {m for m, op in loop if op in {"transact", "execute", "executemany"}} == {"write"}
    assert {m for m, op in loop if op == "call"} == {"call"}  # reads, and the scratch spool
    for sender in (batches.BatchSender, filebatch.FileSender, narrowing.Narrowing):
        assert _store_uses(sender, writers | {"path", "db"}) == []
        assert not [m for m, called in _calls_on(sender, "health") if called != "held_until"]
    health = {called for _, called in _calls_on(delivery.Flusher, "health")}
    assert health <= {"answered", "push_failure", "local_failure", "failure_stored", "held"} | {
        "wait_turn"
    }
    assert {m for m, called in _calls_on(delivery.Flusher, "health") if called == "wait_turn"} == {
        "run"
    }
    helper = inspect.getsource(delivery.Flusher.write)
    assert helper.index("recorded = [work(conn)") < helper.index("return recorded, fn(conn")
