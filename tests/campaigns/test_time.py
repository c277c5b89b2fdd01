"""Campaign 7: the wall clock jumps (freezegun, the event loop's monotonic clock left real).

A backoff is a span of time: the flusher must not wait an hour because the wall clock was set
back an hour in the middle of it, nor send early because it was set forward. LWW decisions
compare the changes' own timestamps, so a skewed daemon clock changes no winner; only the
skew guard looks at the clock, and it says so.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from dropsync.adapters.crm.adapter import CrmProvider
from dropsync.adapters.crm.adapter import parse_options as crm_options
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.daemon.config import ProviderConfig
from dropsync.daemon.delivery.flusher import Flusher
from dropsync.daemon.documents import FutureLimit, inbox_change
from dropsync.daemon.errors import DocumentError
from dropsync.store import outbox
from dropsync.store.handle import Store
from dropsync.store.merge import Change, apply_changes
from freezegun import freeze_time

pytestmark = [pytest.mark.anyio, pytest.mark.campaign]

START = datetime(2026, 3, 29, 0, 59, 0, tzinfo=UTC)
TOKEN = "crm-time-token"


@pytest.fixture
def crm() -> Iterator[EmulatorServer]:
    with EmulatorServer(CrmEmulator({"acc_1": TOKEN})) as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "s.db")
    await opened.transact(outbox.register_providers, [("crm", "crm")], now=1)
    yield opened
    await opened.close()


async def _backing_off(store: Store) -> bool:
    state = await store.call(outbox.provider_state, "crm")
    return state is not None and state.next_attempt_at is not None


def _row(key: str, ts: int) -> tuple[object, ...]:
    return (1, "contacts", key, "upsert", f'{{"email": "{key}"}}', ts)


@pytest.mark.parametrize("jump", [timedelta(hours=-1)], ids=["back-an-hour"])
async def test_a_backoff_ends_on_time_when_the_wall_clock_jumps(
    crm: EmulatorServer, store: Store, jump: timedelta
) -> None:
    provider = CrmProvider(
        "crm", crm.base_url, crm_options({"account_id": "acc_1"}), TOKEN, 5, None
    )
    config = ProviderConfig(
        name="crm", kind="crm", base_url=crm.base_url, backoff_base_s=0.2, backoff_cap_s=0.2
    )
    with freeze_time(START, tick=True, real_asyncio=True) as clock:
        now = int(time.time() * 1000)
        change = inbox_change(_row("a@x", now - 1000), future=FutureLimit.at(now, 300_000))
        await store.transact(lambda c: apply_changes(c, [change], {"contacts": ("crm",)}, now=now))
        crm.faults.update(status=500, count=1)
        async with provider:
            flusher = Flusher(store, config, provider)
            with anyio.move_on_after(3):  # bounds a wedge; the backoff itself is 0.2 s
                async with anyio.create_task_group() as tg:
                    tg.start_soon(flusher.run)
                    while not await _backing_off(store):  # noqa: ASYNC110
                        await anyio.sleep(0.005)
                    clock.move_to(START + jump)  # mid-backoff: its end is already stored
                    while len(crm.emulator.requests("/account")) < 2:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                    tg.cancel_scope.cancel()
    assert len(crm.emulator.requests("/account")) == 2, "no retry within 3 s of a 0.2 s backoff"


@pytest.mark.parametrize("offset", [timedelta(hours=-3), timedelta(hours=5)])
def test_a_skewed_daemon_clock_changes_no_winner_and_the_guard_says_so(
    offset: timedelta,
) -> None:
    true_now = int(time.time() * 1000)
    older, newer = true_now - 60_000, true_now - 1_000
    with freeze_time(datetime.now(UTC) + offset):
        skewed_now = int(time.time() * 1000)
        outcomes: list[Change | str] = []
        for ts in (older, newer):
            try:
                outcomes.append(
                    inbox_change(_row("k", ts), future=FutureLimit.at(skewed_now, 300_000))
                )
            except DocumentError as exc:
                outcomes.append(str(exc))
    if offset < timedelta(0):
        # The daemon's clock is behind: the true present looks like the future. Refused, and
        # the reason names the skew guard; never taken silently.
        assert all(isinstance(o, str) and "max_clock_skew_s" in o for o in outcomes), outcomes
    else:
        # Ahead: both are accepted, and the newer still has the larger timestamp.
        assert [o.ts for o in outcomes if not isinstance(o, str)] == [older, newer]
