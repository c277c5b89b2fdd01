"""The delivery engine against the real emulators: batching, offline, throttling,
dead letters, restarts mid-backoff, two-way favourites."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from dropsync.adapters.base import OutgoingChange, PullPage, PushResult
from dropsync.adapters.crm.adapter import CrmProvider
from dropsync.adapters.crm.adapter import parse_options as crm_options
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.errors import ProviderError, ProviderUnavailable
from dropsync.adapters.favourites.adapter import FavouritesProvider
from dropsync.adapters.favourites.adapter import parse_options as favourite_options
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.daemon.config import ProviderConfig, parse_config
from dropsync.daemon.delivery.batches import BatchSender
from dropsync.daemon.delivery.flusher import Flusher
from dropsync.daemon.delivery.provider_health import Flow, ProviderHealth
from dropsync.daemon.delivery.providers import ProviderSupervisor
from dropsync.daemon.documents import DocumentReader
from dropsync.store import outbox
from dropsync.store.handle import Store
from dropsync.store.merge import Change, apply_changes
from structlog.testing import capture_logs

pytestmark = pytest.mark.anyio
ROUTES = {"contacts": ("crm",), "favourites": ("fav",)}


def contact_change(i: int, ts: int = 1_700_000_000_000, email: str | None = None) -> Change:
    raw = orjson.dumps(
        {"email": email or f"guest{i}@example.com", "n": i}, option=orjson.OPT_SORT_KEYS
    )
    return Change(
        "contacts",
        email or f"guest{i}@example.com",
        raw.decode(),
        ts,
        False,
        "drop",
        hashlib.sha256(raw).hexdigest()[:32],
    )


async def merge(store: Store, changes: list[Change]) -> None:
    await store.transact(
        lambda conn: apply_changes(conn, changes, ROUTES, now=int(time.time() * 1000))
    )


def crm_config(server: EmulatorServer, **kwargs: Any) -> ProviderConfig:
    return ProviderConfig(
        name="crm",
        kind="crm",
        base_url=server.base_url,
        backoff_base_s=kwargs.pop("backoff_base_s", 0.05),
        backoff_cap_s=kwargs.pop("backoff_cap_s", 0.2),
        **kwargs,
    )


def crm_provider(server: EmulatorServer, secret: str = "crm-secret") -> CrmProvider:
    return CrmProvider(
        "crm",
        server.base_url,
        crm_options({"account_id": "acc_1"}),
        secret,
        timeout_s=5,
        batch_max_items=None,
    )


@pytest.fixture
def crm_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(CrmEmulator({"acc_1": "crm-secret"})) as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "s.db")
    await opened.transact(outbox.register_providers, [("crm", "crm"), ("fav", "favourites")], now=1)
    yield opened
    await opened.close()


async def pending(store: Store, provider: str = "crm") -> int:
    async with store.read() as db:
        return await outbox.pending_count(db, provider)


async def run_until(
    flusher: Flusher, done: Callable[[], Awaitable[bool]], limit_s: float = 30
) -> None:
    """Run a flusher until ``done()`` (checked every 20 ms); the timeout only bounds a hang."""
    with anyio.fail_after(limit_s):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flusher.run)
            while not await done():  # noqa: ASYNC110 -- polling the store, not an event
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()


async def test_2500_contacts_go_out_as_3_requests(crm_server: EmulatorServer, store: Store) -> None:
    await merge(store, [contact_change(i) for i in range(2500)])
    async with crm_provider(crm_server) as provider:
        flusher = Flusher(store, crm_config(crm_server), provider)
        await run_until(flusher, lambda: _zero(store))
    assert isinstance(flusher.sender, BatchSender) and flusher.sender._outgoing == {}
    emulator = crm_server.emulator
    assert isinstance(emulator, CrmEmulator)
    assert len(emulator.requests("/account")) == 3
    assert len(emulator.contacts) == 2500
    assert max(emulator.applied.values()) == 1
    async with store.read() as db:
        attempts = await db.execute_fetchall(
            "SELECT items, state, http_status, remote_ref FROM deliveries ORDER BY id"
        )
    assert [r[0] for r in attempts] == [1000, 1000, 500]
    assert {(r[1], r[2]) for r in attempts} == {("accepted", 201)}
    assert all(r[3] for r in attempts)


async def _zero(store: Store) -> bool:
    return await pending(store) == 0


async def test_offline_then_online_delivers_everything_once(
    crm_server: EmulatorServer, store: Store
) -> None:
    crm_server.stop()
    await merge(store, [contact_change(i) for i in range(50)])
    async with crm_provider(crm_server) as provider:
        flusher = Flusher(store, crm_config(crm_server), provider)

        async def went_offline() -> bool:
            state = await store.call(outbox.provider_state, "crm")
            return state is not None and state.state == "offline"

        await run_until(flusher, went_offline)
        # Newer versions (other bodies) of half the keys, and 25 new keys. The failed request
        # is sent again as it was (old versions included), then the newer versions.
        await merge(
            store,
            [
                contact_change(i + 1000, ts=1_700_000_000_001, email=f"guest{i}@example.com")
                for i in range(25, 75)
            ],
        )
        crm_server.start()
        await run_until(flusher, lambda: _zero(store))
    emulator = crm_server.emulator
    assert isinstance(emulator, CrmEmulator)
    assert len(emulator.contacts) == 75
    assert max(emulator.applied.values()) == 1
    state = await store.call(outbox.provider_state, "crm")
    assert state is not None and state.state == "online"


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_honoured(crm_server: EmulatorServer, store: Store, form: str) -> None:
    value = (
        "2"
        if form == "seconds"
        else format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    )
    crm_server.faults.update(status=429, count=1, retry_after=value)
    await merge(store, [contact_change(1)])
    async with crm_provider(crm_server) as provider:
        flusher = Flusher(store, crm_config(crm_server), provider)
        await run_until(flusher, lambda: _zero(store))
    first, second = crm_server.emulator.requests("/account")
    assert first.status == 429 and second.status == 201
    if form == "seconds":
        assert second.monotonic - first.monotonic >= 2.0
    else:
        # An HTTP-date has whole seconds: the retry is not before that date.
        assert (
            second.wall
            >= datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC).timestamp()
        )


async def test_a_retry_after_holds_even_when_a_reload_cuts_its_recording_short(
    crm_server: EmulatorServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload cancels the flusher while it records a throttling answer (the full-size
    faults campaign: a churn upload 0.63 s early): the flusher the reload starts, which
    finds the request unfinished, must still wait for the Retry-After."""
    crm_server.faults.update(status=429, count=1, retry_after="2")
    await merge(store, [contact_change(1)])
    answered, write = ProviderHealth.answered, Flusher.write
    read: list[float | None] = []

    def answer_read(self: ProviderHealth, exc: ProviderError, flow: Flow) -> float | None:
        read.append(answered(self, exc, flow))  # what the health keeps at once
        return read[-1]

    async def write_cut_short(self: Flusher, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if read:  # the failure's write: the reload comes before it is done
            await anyio.sleep_forever()
        return await write(self, fn, *args, **kwargs)

    async def was_read() -> bool:
        return bool(read)

    # The supervisor's, kept across reloads and shared by the flushers it starts.
    health = ProviderHealth(store, crm_config(crm_server))
    async with crm_provider(crm_server) as provider:
        monkeypatch.setattr(ProviderHealth, "answered", answer_read)
        monkeypatch.setattr(Flusher, "write", write_cut_short)
        cut_short = Flusher(store, crm_config(crm_server), provider, health=health)
        await run_until(cut_short, was_read)
        monkeypatch.setattr(Flusher, "write", write)
        health.restarted(crm_config(crm_server))  # what the supervisor does on reload
        started_again = Flusher(store, crm_config(crm_server), provider, health=health)
        await run_until(started_again, lambda: _zero(store))
    first, second = crm_server.emulator.requests("/account")
    assert first.status == 429 and second.status == 201
    assert second.monotonic - first.monotonic >= 2.0


async def test_one_bad_record_is_dead_lettered_and_the_rest_delivered(
    crm_server: EmulatorServer,
    store: Store,
) -> None:
    good = [contact_change(i) for i in range(9)]
    bad = contact_change(99, email="not-an-address")
    await merge(store, [*good[:4], bad, *good[4:]])
    async with crm_provider(crm_server) as provider:
        flusher = Flusher(store, crm_config(crm_server), provider)
        await run_until(flusher, lambda: _zero(store))
    emulator = crm_server.emulator
    assert isinstance(emulator, CrmEmulator)
    assert set(emulator.contacts) == {c.key for c in good}
    async with store.read() as db:
        letters = list(
            await db.execute_fetchall("SELECT id, key, http_status, reason FROM dead_letters")
        )
    assert [(r[1], r[2]) for r in letters] == [("not-an-address", 422)]
    assert "not a valid address" in letters[0][3]
    assert await store.transact(outbox.retry_dead_letters, provider="crm", ids=[], now=1) == 1
    assert await pending(store) == 1


async def test_restart_mid_backoff_keeps_the_next_attempt_time(
    crm_server: EmulatorServer,
    tmp_path: Path,
) -> None:
    path = tmp_path / "restart.db"
    crm_server.faults.update(status=503, retry_after="3600")
    async with await Store.open(path) as first:
        await first.transact(outbox.register_providers, [("crm", "crm")], now=1)
        await merge(first, [contact_change(1)])
        async with crm_provider(crm_server) as provider:
            flusher = Flusher(first, crm_config(crm_server), provider)

            async def backing_off() -> bool:
                state = await first.call(outbox.provider_state, "crm")
                return state is not None and state.state == "backing-off"

            await run_until(flusher, backing_off)
        before = await first.call(outbox.provider_state, "crm")
    assert before is not None and before.next_attempt_at is not None
    crm_server.faults.clear()
    arrived = len(crm_server.emulator.requests("/account"))
    async with await Store.open(path) as second:
        await second.transact(outbox.register_providers, [("crm", "crm")], now=2)
        async with crm_provider(crm_server) as provider:
            flusher = Flusher(second, crm_config(crm_server), provider)
            with anyio.move_on_after(1.0):
                await flusher.run()
        after = await second.call(outbox.provider_state, "crm")
    assert after == before
    assert len(crm_server.emulator.requests("/account")) == arrived


async def test_favourites_two_way_newer_wins_on_both_sides(tmp_path: Path) -> None:
    emulator = FavouritesEmulator({"tok-a": "alice"})
    emulator.seed(
        "alice",
        [
            {"item": "s1", "action": "ADD", "actionDate": "2024-01-01T00:00:00.000Z"},
            {"item": "s2", "action": "ADD", "actionDate": "2024-03-01T00:00:00.000Z"},
        ],
    )
    with EmulatorServer(emulator) as server:
        config = parse_config(
            {
                "store": {"path": str(tmp_path / "f.db")},
                "drop": {"path": str(tmp_path / "drop")},
                "daemon": {"max_clock_skew_s": 300},
                "providers": {
                    "fav": {
                        "kind": "favourites",
                        "base_url": server.base_url,
                        "secret_env": "UNUSED",
                    }
                },
                "collections": {"favourites": {"providers": ["fav"]}},
            },
            "test",
        )
        async with await Store.open(config.store_path) as store:
            # Local: a DELETE of s1 newer than the remote ADD; an ADD of s2 older than remote.
            reader = DocumentReader(
                config.collection("favourites"),
                origin="drop",
                max_skew_ms=300_000,
                now_ms=int(time.time() * 1000),
            )
            local = [
                reader.change(
                    {
                        "user": "alice",
                        "item": "s1",
                        "action": "DELETE",
                        "actionDate": "2024-02-01T00:00:00.000Z",
                    }
                ),
                reader.change(
                    {
                        "user": "alice",
                        "item": "s2",
                        "action": "DELETE",
                        "actionDate": "2024-02-01T00:00:00.000Z",
                    }
                ),
            ]
            await store.transact(lambda c: apply_changes(c, local, config.routes(), now=1))
            supervisor = ProviderSupervisor(store, config)
            provider = FavouritesProvider(
                "fav", server.base_url, favourite_options({}), {"alice": "tok-a"}, 5, None
            )
            async with provider:
                await supervisor.pull_once(config.providers["fav"], provider)
                flusher = Flusher(store, config.providers["fav"], provider)
                await run_until(flusher, lambda: _zero_for(store, "fav"))
            async with store.read() as db:
                rows = await db.execute_fetchall(
                    "SELECT key, deleted, origin FROM records ORDER BY key"
                )
    # s1: the local DELETE (newer) wins here and at the provider.
    # s2: the remote ADD (newer) wins here, and the provider keeps it.
    assert [tuple(r) for r in rows] == [("alice:s1", 1, "drop"), ("alice:s2", 0, "fav")]
    assert emulator.items["alice"]["s1"]["action"] == "DELETE"
    assert emulator.items["alice"]["s2"]["action"] == "ADD"


async def _zero_for(store: Store, provider: str) -> bool:
    return await pending(store, provider) == 0


async def test_flaky_provider_gets_everything_exactly_once(
    crm_server: EmulatorServer, store: Store
) -> None:
    # Random 500s, cut connections after the request was applied, and a burst of 503s.
    crm_server.faults.update(failure_rate=0.3, seed=11, drop=3)
    await merge(store, [contact_change(i) for i in range(3000)])
    async with crm_provider(crm_server) as provider:
        flusher = Flusher(
            store,
            crm_config(crm_server, backoff_base_s=0.01, backoff_cap_s=0.05, batch_max_items=100),
            provider,
        )
        crm_server.faults.update(status=503, count=3, retry_after="0")
        await run_until(flusher, lambda: _zero(store), limit_s=60)
    emulator = crm_server.emulator
    assert isinstance(emulator, CrmEmulator)
    assert len(emulator.contacts) == 3000
    assert max(emulator.applied.values()) == 1  # retries of applied batches were replayed
    statuses = {a.status for a in emulator.requests("/account")}
    assert {201, 500, 503} <= statuses
    async with store.read() as db:
        letters = await db.execute_fetchall("SELECT COUNT(*) FROM dead_letters")
    assert [tuple(r) for r in letters] == [(0,)]


class DownOnSecondPush:
    """The real CRM adapter, except that its second push finds the provider down."""

    def __init__(self, inner: CrmProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.limits = inner.limits
        self.pushes = 0

    async def __aenter__(self) -> DownOnSecondPush:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.inner.__aexit__(*exc_info)

    def check(self, change: OutgoingChange) -> str | None:
        return self.inner.check(change)

    async def push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        self.pushes += 1
        if self.pushes == 2:
            raise ProviderUnavailable("connection refused")
        return await self.inner.push(batch, idempotency_key=idempotency_key)

    async def pull(self, cursor: str | None) -> PullPage:
        return await self.inner.pull(cursor)


async def test_a_failure_after_a_delivered_batch_is_recorded_after_it(
    crm_server: EmulatorServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first batch's delivery is recorded while the second is sent; the second one's
    # failure must still be written last, so the provider ends up offline, not online.
    # The recording is made slow, so that the failure comes first unless it waits.
    delivered = Flusher.delivered

    def slow_delivered(self: Flusher, work: Callable[[Any], Any], then: Any) -> None:
        def slow_work(conn: Any) -> Any:
            time.sleep(0.3)  # in the store's thread
            return work(conn)

        delivered(self, slow_work, then)

    monkeypatch.setattr(Flusher, "delivered", slow_delivered)
    await merge(store, [contact_change(i) for i in range(2500)])
    async with DownOnSecondPush(crm_provider(crm_server)) as provider:
        flusher = Flusher(store, crm_config(crm_server, backoff_base_s=60), provider)
        assert await flusher.flush_once() is False
    assert flusher.paused
    assert isinstance(flusher.sender, BatchSender)
    assert flusher.sender._outgoing == {}  # nothing held for the batches not sent
    assert await pending(store) == 1500
    state = await store.call(outbox.provider_state, "crm")
    async with store.read() as db:
        attempts = await db.execute_fetchall("SELECT items, state FROM deliveries ORDER BY id")
    assert state is not None and state.state == "offline" and state.failures == 1
    assert state.next_attempt_at is not None
    assert [tuple(r) for r in attempts] == [(1000, "accepted"), (1000, "failed")]


async def test_an_unfinished_request_the_check_now_refuses_is_not_sent_again(
    crm_server: EmulatorServer, store: Store
) -> None:
    # A request written ahead by a run whose config let it through (here: a body without
    # the email the CRM's check asks for). Sent again as it was, the adapter could not send
    # it; it is given up with the reason, and its entries take the usual way.
    await merge(store, [contact_change(i) for i in range(3)])
    async with store.snapshot() as db:
        entries = await outbox.take_batch(db, "crm", 10)
    stale = [entries[0]._replace(body='{"n": 0}'), *entries[1:]]
    [written] = await store.transact(
        lambda conn: outbox.open_requests(conn, "crm", [("stale-key", stale)], now=1)
    )
    async with crm_provider(crm_server) as provider:
        flusher = Flusher(store, crm_config(crm_server), provider)
        with capture_logs() as logs:
            assert await flusher.flush_once() is True
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["request_not_resent"]
    arrived = crm_server.emulator.requests("/account")
    assert [a.idempotency_key for a in arrived] != ["stale-key"] and len(arrived) == 1
    async with store.read() as db:
        rows = [
            tuple(r)
            for r in await db.execute_fetchall(
                "SELECT id, state, error, entries IS NULL FROM deliveries ORDER BY id"
            )
        ]
    assert rows[0][0] == written and rows[0][1] == "failed" and rows[0][3] == 1
    assert "not sent again" in rows[0][2]
    assert [r[1:] for r in rows[1:]] == [("accepted", None, 1)]
    assert await pending(store) == 0
