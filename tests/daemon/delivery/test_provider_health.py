"""A provider's health on a real store: the moment of the next attempt, the waits of each
flow, what ends them (a resync, the end of the wait), and the one attempt after a restart."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from dropsync.adapters.errors import AuthError, ProviderThrottled, ProviderUnavailable
from dropsync.daemon.clock import now_ms
from dropsync.daemon.config import ProviderConfig
from dropsync.daemon.delivery.provider_health import Flow, ProviderHealth, next_attempt_at
from dropsync.store import outbox
from dropsync.store.handle import Store
from dropsync.store.states import ProviderState
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio
CONFIG = ProviderConfig(name="crm", kind="crm", base_url="http://127.0.0.1:9")


@given(
    now=st.floats(min_value=1e12, max_value=2e12, allow_nan=False),
    delay=st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_the_next_attempt_is_never_a_moment_early(now: float, delay: float) -> None:
    # now_ms() truncates the true time; the moment stored is still not before now + delay.
    stored = next_attempt_at(math.floor(now), delay)
    assert stored >= now + delay * 1000


class Idle(Exception):
    """Raised by the test's idle: the flow would have waited."""


async def idle(seconds: float) -> None:
    raise Idle(seconds)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "s.db") as opened:
        await opened.transact(outbox.register_providers, [("crm", "crm")], now=1)
        yield opened


async def waits(health: ProviderHealth, flow: Flow) -> float | None:
    """How long ``flow`` would wait now (None: it may send)."""
    try:
        await health.wait_turn(flow, idle)
    except Idle as waited:
        return float(waited.args[0])
    return None


async def row(store: Store) -> outbox.ProviderRow:
    found = await store.call(outbox.provider_state, "crm")
    assert found is not None
    return found


async def fail_push(store: Store, health: ProviderHealth, exc: Exception) -> None:
    assert isinstance(exc, ProviderThrottled | ProviderUnavailable | AuthError)
    health.answered(exc, Flow.PUSH)
    failure = await store.transact(health.push_failure, exc, now_ms())
    health.failure_stored(failure, items=1)


async def test_a_push_backoff_holds_pushes_only(store: Store) -> None:
    health = ProviderHealth(store, CONFIG)
    await fail_push(store, health, ProviderUnavailable("connection refused"))
    assert (await row(store)).state is ProviderState.OFFLINE
    assert (await waits(health, Flow.PUSH) or 0) > 0
    assert await waits(health, Flow.PULL) is None


async def test_a_pull_s_retry_after_holds_both_flows_and_is_stored(store: Store) -> None:
    health = ProviderHealth(store, CONFIG)
    await health.pull_failed(ProviderThrottled("HTTP 429", status=429, retry_after=600))
    stored = await row(store)
    assert stored.state is ProviderState.BACKING_OFF  # status shows the wait
    assert stored.next_attempt_at is not None and stored.next_attempt_at > now_ms() + 590_000
    for flow in Flow:
        # Never a moment early: the stored moment is rounded up, so the wait may be asked's
        # plus a millisecond or two when it is read at once.
        assert 590 < (await waits(health, flow) or 0) <= 600.1


async def test_a_delivery_taken_during_a_retry_after_keeps_the_wait(store: Store) -> None:
    # A request in flight when a pull was throttled is taken: the provider's wait stays.
    health = ProviderHealth(store, CONFIG)
    await health.pull_failed(ProviderThrottled("HTTP 429", status=429, retry_after=600))
    before = await row(store)
    await store.transact(
        outbox.provider_delivered, "crm", now=now_ms(), held_until=health.held_until()
    )
    assert (await row(store)).next_attempt_at == before.next_attempt_at
    assert (await waits(health, Flow.PULL) or 0) > 590


async def test_resync_ends_every_wait_of_the_running_daemon(store: Store, tmp_path: Path) -> None:
    health = ProviderHealth(store, CONFIG)
    await fail_push(store, health, ProviderThrottled("HTTP 429", status=429, retry_after=3600))
    assert (await waits(health, Flow.PUSH) or 0) > 3500
    assert (await waits(health, Flow.PULL) or 0) > 3500
    other = sqlite3.connect(tmp_path / "s.db")  # `dropsync resync crm`, another program
    with other:
        outbox.clear_auth_failures(other, "crm")
    other.close()
    health.store_changed()  # what the daemon's watch of the store's WAL says
    assert await waits(health, Flow.PUSH) is None
    assert await waits(health, Flow.PULL) is None


async def test_a_retry_after_whose_recording_was_cut_short_is_written_then(
    store: Store,
) -> None:
    health = ProviderHealth(store, CONFIG)
    health.answered(ProviderThrottled("HTTP 429", status=429, retry_after=60), Flow.PUSH)
    assert (await row(store)).next_attempt_at is None  # a reload cut the write short
    assert (await waits(health, Flow.PUSH) or 0) > 55
    stored = await row(store)
    assert stored.state is ProviderState.BACKING_OFF
    assert stored.next_attempt_at is not None and stored.next_attempt_at > now_ms() + 55_000


async def test_an_auth_failed_provider_gets_one_attempt_per_flow_after_a_restart(
    store: Store,
) -> None:
    health = ProviderHealth(store, CONFIG)
    await fail_push(store, health, AuthError("HTTP 401", status=401))
    assert (await row(store)).state is ProviderState.AUTH_FAILED
    health.restarted(CONFIG)
    for flow in Flow:
        assert await waits(health, flow) is None  # its one attempt
        assert await waits(health, flow) is not None  # then it waits for a change
    health.restarted(CONFIG)  # a reload
    assert await waits(health, Flow.PUSH) is None


async def test_a_wait_is_never_longer_than_the_provider_s_ceiling(store: Store) -> None:
    health = ProviderHealth(store, CONFIG)
    year_9999 = 253_402_300_799_000
    await store.transact(
        outbox.set_provider_state,
        "crm",
        state=ProviderState.BACKING_OFF,
        now=1,
        next_attempt_at=year_9999,
    )
    with anyio.fail_after(10):
        left = await waits(health, Flow.PUSH)
    assert left is not None and left <= CONFIG.max_delay_s


@pytest.mark.parametrize("value", ["'soon'", "x'00ff'", "9e999", "-5"])
async def test_a_providers_row_edited_by_hand_stops_nothing(
    store: Store, tmp_path: Path, value: str
) -> None:
    # A TypeError in the flusher's wait once ended the daemon (fatal_error, exit 1).
    other = sqlite3.connect(tmp_path / "s.db")
    with other:
        other.execute(f"UPDATE providers SET next_attempt_at = {value}, failures = 'x'")
    other.close()
    health = ProviderHealth(store, CONFIG)
    assert await waits(health, Flow.PUSH) is None  # not a number: no wait
    await health.pull_failed(ProviderThrottled("HTTP 429", status=429, retry_after=60))
    stored = await row(store)
    assert stored.next_attempt_at is not None and stored.next_attempt_at > now_ms() + 55_000
    await fail_push(store, health, ProviderUnavailable("connection refused"))
    assert (await row(store)).failures == 1


async def test_a_hold_brought_back_within_a_lower_ceiling_is_shortened(
    store: Store, tmp_path: Path
) -> None:
    # A reload with a lower max_retry_after_s brings the stored moment back (the supervisor's
    # clamp): the copy in memory follows the store.
    health = ProviderHealth(store, CONFIG)
    await health.pull_failed(ProviderThrottled("HTTP 429", status=429, retry_after=600))
    await store.transact(outbox.clamp_next_attempts, [("crm", now_ms() + 60_000)])
    for flow in Flow:
        assert 50 < (await waits(health, flow) or 0) <= 60
