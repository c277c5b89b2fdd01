"""The daemon as a real subprocess against the churn emulator: a file skipped for one bad
document (narrowed down to it, also across a kill in the middle), an early 401 that closes
the connection (auth-failed within seconds), and a sync-status callback that arrives twenty
minutes late, after a restart."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from dropsync.adapters.churn.emulator import ChurnEmulator
from dropsync.adapters.emulators.common import EmulatorServer

from tests.churn_support import (
    CALLBACK_SECRET,
    CHURN_ENV,
    TOKEN,
    churn_daemon,
    daemon_config,
    listener_emulator,
)
from tests.support import DaemonProcess, drop_json, free_port, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these

BAD = 37


def documents(count: int, bad: int | None = BAD) -> list[dict[str, Any]]:
    """``count`` user documents; the one at ``bad`` holds a value the tool refuses."""
    return [
        {
            "data": {"id": i, "email": f"u{i}@x", "city": "POISON" if i == bad else "Limassol"},
            "createdAt": 1_700_000_000_000,
            "updatedAt": 1_700_000_000_000 + i,
        }
        for i in range(count)
    ]


def settled(store: Path, delivered: int, dead: int) -> bool:
    return query(
        store,
        "SELECT (SELECT COUNT(*) FROM delivered), (SELECT COUNT(*) FROM dead_letters), "
        "(SELECT COUNT(*) FROM outbox)",
    ) == [(delivered, dead, 0)]


def assert_99_and_1(store: Path, emulator: ChurnEmulator) -> None:
    letters = query(store, "SELECT key, http_status, reason FROM dead_letters")
    assert [(k, s) for k, s, _ in letters] == [(str(BAD), 206)]
    assert "skipped files: churn-" in letters[0][2]
    good = {f"user:15:{i}@{1_700_000_000_000 + i}" for i in range(100) if i != BAD}
    assert set(emulator.applied) == good  # every good document, none of the bad one


def test_100_documents_one_bad_99_accepted_1_dead_letter_uploads_logged(tmp_path: Path) -> None:
    port = free_port()
    emulator = listener_emulator(port)
    emulator.bad_values.append("POISON")
    with EmulatorServer(emulator) as server:
        daemon = churn_daemon(tmp_path, server.base_url, port)
        try:
            daemon.start()
            drop_json(tmp_path / "drop/users", "a", documents(100))
            line = daemon.wait_for("skipped_files_narrowed", provider="churn")
            wait_until(lambda: settled(tmp_path / "store.db", 99, 1), what="99 and 1")
            assert daemon.stop() == 0
        finally:
            daemon.close()
    assert_99_and_1(tmp_path / "store.db", emulator)
    assert (line["files"], line["items"], line["delivered"], line["dead_lettered"]) == (
        1,
        100,
        99,
        1,
    )
    assert 1 <= line["uploads"] <= 7 and len(emulator.uploads) == 1 + line["uploads"]
    assert sorted(emulator.applied.values()) == [1] * 99


def test_a_kill_in_the_middle_of_narrowing_loses_nothing_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    emulator = listener_emulator(port)
    emulator.bad_values.append("POISON")
    emulator.stall_from_upload = 3  # the first upload and one level are answered; then none
    store = tmp_path / "store.db"
    spool = tmp_path / ".store.db.spool/churn"
    with EmulatorServer(emulator) as server:
        daemon = churn_daemon(tmp_path, server.base_url, port)
        try:
            daemon.start()
            drop_json(tmp_path / "drop/users", "a", documents(100))
            wait_until(lambda: emulator.upload_attempts == 3, what="the second level is sent")
            # The good half of the first level is recorded before the next level goes.
            assert query(store, "SELECT COUNT(*) FROM delivered") == [(50,)]
            daemon.kill()  # in the middle of an upload of halves: no chance to clean up
            assert list(spool.rglob("*.json"))  # the files of the batch in flight stay behind
            emulator.stall_from_upload = None
            daemon.start()
            wait_until(lambda: settled(store, 99, 1), what="99 and 1 after the restart")
            # Once more across a second kill, at once after a start: nothing changes.
            daemon.kill()
            daemon.start()
            assert daemon.stop() == 0
        finally:
            daemon.close()
    assert settled(store, 99, 1)
    assert_99_and_1(store, emulator)
    # The 50 recorded before the kill were not sent again; no document twice.
    assert sorted(emulator.applied.values()) == [1] * 99
    assert not list(spool.rglob("*.json"))


def test_an_early_401_that_closes_the_connection_is_auth_failed_within_seconds(
    tmp_path: Path,
) -> None:
    port = free_port()
    emulator = ChurnEmulator(TOKEN, CALLBACK_SECRET)
    emulator.early_401 = True
    config = daemon_config(tmp_path, "BASE", port).replace(
        "brand_id = 15\n",
        "brand_id = 15\nprobe_above_mb = 64\n",  # no check first: the upload
    )
    with EmulatorServer(emulator) as server:
        daemon = DaemonProcess(
            tmp_path,
            config.replace("BASE", server.base_url),
            env={**CHURN_ENV, "CHURN_TOKEN": "a-token-the-tool-refuses"},
        )
        try:
            daemon.start()
            drop_json(tmp_path / "drop/users", "a", documents(2000, bad=None))
            refused = daemon.wait_for("provider_auth_failed", timeout=30, provider="churn")
            state = query(tmp_path / "store.db", "SELECT state, last_error FROM providers")
            assert daemon.stop() == 0
        finally:
            daemon.close()
    assert state[0][0] == "auth-failed" and "HTTP 401" in state[0][1]
    assert "a-token-the-tool-refuses" not in refused.get("error", "")
    assert emulator.uploads and all(u.get("refused") == 401 for u in emulator.uploads)
    log = daemon.log_path.read_text()
    assert "a-token-the-tool-refuses" not in log and "provider_offline" not in log


def test_a_callback_20_minutes_late_after_a_restart_confirms_the_uploads_before_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    emulator = listener_emulator(port)
    store = tmp_path / "store.db"
    minute = 60_000
    with EmulatorServer(emulator) as server:
        control = f"{server.base_url}/_emulator"
        daemon = churn_daemon(tmp_path, server.base_url, port)
        try:
            daemon.start()
            drop_json(tmp_path / "drop/users", "a", documents(4, bad=None))
            daemon.wait_for("batch_delivered", provider="churn")
            assert daemon.stop() == 0
            # The daemon was down for half an hour: that upload was sent 30 minutes ago. The
            # tool's sync ended 20 minutes ago; its callback could not be delivered then.
            raw = __import__("sqlite3").connect(store)
            raw.execute("UPDATE deliveries SET attempted_at = attempted_at - ?", (30 * minute,))
            raw.commit()
            raw.close()
            down = httpx.post(f"{control}/send", json={"kind": "sync-status", "age_s": 1200})
            assert down.json() == {"status": 0} and len(emulator.undelivered) == 1

            daemon.start()
            drop_json(tmp_path / "drop/users", "b", documents(6, bad=None)[4:])
            wait_until(
                lambda: query(store, "SELECT COUNT(*) FROM deliveries") == [(2,)],
                what="an upload after the restart",
            )
            wait_until(
                lambda: query(store, "SELECT COUNT(*) FROM outbox") == [(0,)], what="recorded"
            )
            late = httpx.post(f"{control}/redeliver")
            assert late.json() == {"statuses": [200]}
            received = daemon.wait_for("sync_status_received", provider="churn")
            states = query(store, "SELECT state FROM deliveries ORDER BY id")
            records = query(store, "SELECT state, COUNT(*) FROM delivered GROUP BY state")
            again = httpx.post(f"{control}/send", json={"kind": "sync-status", "replay": True})
            daemon.wait_for("callback_refused", reason="signature already accepted (replay)")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.process is not None and daemon.process.wait(60) == 0
        finally:
            daemon.close()
    assert received["deliveries"] == 1 and received["status"] == 200
    # The upload before the callback's timestamp is confirmed; the one after it is not.
    assert states == [("confirmed",), ("accepted",)]
    assert sorted(records) == [("accepted", 2), ("confirmed", 4)]
    assert again.json() == {"status": 401}
    assert query(store, "SELECT state FROM deliveries ORDER BY id") == states
