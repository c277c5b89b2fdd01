"""Sync-status callbacks that arrive before the daemon recorded the upload they are about
(the emulator calls back before it answers the upload): held, and applied once the upload
is recorded; a callback that matches nothing while held is logged, never applied later."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dropsync.adapters.churn.emulator import ChurnEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.daemon.inbound import held_confirmations
from dropsync.store import callbacks
from structlog.testing import capture_logs

from tests.churn_support import (
    churn_config,
    document,
    eventually,
    listener_emulator,
    merge,
    running,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("churn_secrets")]

STATE_SQL = (
    "SELECT (SELECT group_concat(state) FROM (SELECT state FROM deliveries ORDER BY id)), "
    "(SELECT group_concat(state) FROM delivered)"
)


@pytest.fixture
def churn(port: int) -> Iterator[tuple[ChurnEmulator, EmulatorServer]]:
    emulator = listener_emulator(port)
    emulator.callback_before_answer = True
    with EmulatorServer(emulator) as server:
        yield emulator, server


async def test_a_callback_before_the_upload_is_recorded_confirms_it_once_recorded(
    tmp_path: Path, port: int, churn: tuple[ChurnEmulator, EmulatorServer]
) -> None:
    emulator, server = churn
    config = churn_config(
        tmp_path, server.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    async with running(config, port) as daemon:
        with capture_logs() as logs:
            await merge(daemon.store, config, [document("users", i, "x") for i in range(3)])
            daemon.supervisor.wake(["churn"])
            await eventually(
                lambda: daemon.rows("SELECT 1 FROM delivered WHERE state = 'confirmed'"),
                "the held callback confirms the upload",
            )
            await eventually(
                lambda: [e for e in logs if e["event"] == "sync_status_applied_late"], "logged"
            )
        assert [status for _, _, status in emulator.callbacks_sent] == [200]
        received = [e for e in logs if e["event"] == "sync_status_received"]
        assert received[0]["deliveries"] == 0  # it came before the upload was recorded
        await daemon.listener.confirmations.recheck(final=True)  # its last look
        assert await daemon.rows(STATE_SQL) == [("confirmed", "confirmed,confirmed,confirmed")]
        assert not [e for e in logs if e["event"] == "sync_status_unmatched"]


async def test_a_failure_before_the_upload_is_recorded_fails_it_and_queues_it_again(
    tmp_path: Path, port: int, churn: tuple[ChurnEmulator, EmulatorServer]
) -> None:
    emulator, server = churn
    emulator.sync_status = 400
    config = churn_config(
        tmp_path, server.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    async with running(config, port) as daemon:
        await merge(daemon.store, config, [document("users", i, "x") for i in range(2)])
        daemon.supervisor.wake(["churn"])
        # Failed, queued again once, sent again, failed again (not queued a third time).
        await eventually(
            lambda: daemon.rows(
                "SELECT 1 FROM deliveries WHERE state = 'failed' GROUP BY provider "
                "HAVING COUNT(*) = 2"
            ),
            "both uploads failed by their held callbacks",
        )
        assert len(emulator.uploads) == 2
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM integration_errors"), "the error log fetched"
        )
        await daemon.listener.confirmations.recheck(final=True)
        assert await daemon.rows("SELECT COUNT(*) FROM outbox") == [(0,)]
        assert len(emulator.uploads) == 2


async def test_a_callback_that_matches_nothing_while_held_is_logged_and_let_go(
    tmp_path: Path, port: int, churn: tuple[ChurnEmulator, EmulatorServer]
) -> None:
    emulator, server = churn
    config = churn_config(
        tmp_path,
        server.base_url,
        port,
        provider={"brand_id": 15, "brand_field": None, "max_callback_age_s": 1},
    )
    async with running(config, port) as daemon:
        with capture_logs() as logs:
            assert await emulator.send("sync-status", {"status": 200, "timestamp": now()}) == 200
            unmatched = await eventually(
                lambda: [e for e in logs if e["event"] == "sync_status_unmatched"],
                "the hold ends",
            )
        assert unmatched[0]["provider"] == "churn" and unmatched[0]["status"] == 200
        assert daemon.listener.confirmations.held == []
        emulator.callback_before_answer = False
        await merge(daemon.store, config, [document("users", 1, "x")])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM delivered WHERE state = 'accepted'"), "recorded"
        )
        await daemon.listener.confirmations.recheck(final=True)
        assert await daemon.rows(STATE_SQL) == [("accepted", "accepted")]


async def test_a_held_callback_never_covers_an_upload_sent_after_it_arrived(
    tmp_path: Path, port: int, churn: tuple[ChurnEmulator, EmulatorServer]
) -> None:
    """The tool's clock ahead of ours: its timestamp is in our future. An upload the daemon
    starts after the callback arrived cannot be in that sync, held callback or not."""
    emulator, server = churn
    emulator.callback_before_answer = False
    config = churn_config(
        tmp_path, server.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    async with running(config, port) as daemon:
        ahead = now() + 200_000  # within max_clock_skew_s (300 s)
        assert await emulator.send("sync-status", {"status": 200, "timestamp": ahead}) == 200
        assert len(daemon.listener.confirmations.held) == 1
        await merge(daemon.store, config, [document("users", 1, "x")])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM delivered WHERE state = 'accepted'"), "recorded"
        )
        await daemon.listener.confirmations.recheck()
        assert await daemon.rows(STATE_SQL) == [("accepted", "accepted")]


async def test_a_hold_outlives_a_kill_and_confirms_what_was_recorded_before_it(
    tmp_path: Path,
    port: int,
    churn: tuple[ChurnEmulator, EmulatorServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The callback comes before the upload's answer (held); the daemon records the upload
    and is killed before it applies the held callback again. The hold is in the store: the
    next start applies it."""
    emulator, server = churn
    config = churn_config(
        tmp_path, server.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    # No recheck in this run, none at its end either: as a kill right after the recording.
    monkeypatch.setattr(held_confirmations, "RECHECK_S", 3600.0)
    monkeypatch.setattr(held_confirmations, "FINAL_RECHECK_S", 0.0)
    async with running(config, port) as daemon:
        await merge(daemon.store, config, [document("users", i, "x") for i in range(3)])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM outbox_pending WHERE pending = 0"), "recorded"
        )
        assert await daemon.rows(STATE_SQL) == [("accepted", "accepted,accepted,accepted")]
        assert len(await daemon.rows("SELECT 1 FROM held_confirmations")) == 1
    monkeypatch.setattr(held_confirmations, "RECHECK_S", 1.0)
    with capture_logs() as logs:
        async with running(config, port) as daemon:
            await eventually(
                lambda: daemon.rows("SELECT 1 FROM deliveries WHERE state = 'confirmed'"),
                "the held callback confirms the upload after the restart",
            )
            assert await daemon.rows(STATE_SQL) == [("confirmed", "confirmed,confirmed,confirmed")]
    assert [e["held"] for e in logs if e["event"] == "sync_status_holds_resumed"] == [1]
    assert [status for _, _, status in emulator.callbacks_sent] == [200]  # sent once


async def test_a_hold_that_ran_out_while_the_daemon_was_down_is_applied_once_and_let_go(
    tmp_path: Path, port: int, churn: tuple[ChurnEmulator, EmulatorServer]
) -> None:
    emulator, server = churn
    emulator.callback_before_answer = False
    config = churn_config(
        tmp_path, server.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    async with running(config, port) as daemon:
        await daemon.store.transact(
            lambda db: callbacks.hold(
                db, "churn", sent_before=1, failed=False, error="", now=1, held_until=2
            )
        )
    with capture_logs() as logs:
        async with running(config, port) as daemon:
            await eventually(
                lambda: [e for e in logs if e["event"] == "sync_status_unmatched"], "let go"
            )
            assert await daemon.rows("SELECT COUNT(*) FROM held_confirmations") == [(0,)]
            assert daemon.listener.confirmations.held == []


def now() -> int:
    import time

    return int(time.time() * 1000)
