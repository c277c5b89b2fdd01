"""Remove outdated "upon next sync" (seed 002), with the daemon as a real process and
incremental pulls on (the default): a participant deleted at the provider is removed by the
next pull; with ``full_pull_interval_s``, only by the next full pull that is due; never by an
unsettled one."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.registrations.emulator import RegistrationsEmulator

from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e

PASSWORD = "Lenos-pa55word-outdated"


@pytest.fixture
def lenos() -> Iterator[EmulatorServer]:
    emulator = RegistrationsEmulator(password=PASSWORD)
    emulator.seed(participants=30, sessions=3)
    with EmulatorServer(emulator) as server:
        yield server


def emulator_of(server: EmulatorServer) -> RegistrationsEmulator:
    assert isinstance(server.emulator, RegistrationsEmulator)
    return server.emulator


def daemon_for(tmp_path: Path, server: EmulatorServer, extra: str = "") -> DaemonProcess:
    config = f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
[providers.lenos]
kind = "registrations"
base_url = "{server.base_url}"
username = "fp-bot"
event_id = "ev-2026"
secret_env = "LENOS_PASSWORD"
pull_interval_s = 0.2
remove_outdated = ["participants"]
{extra}
"""
    return DaemonProcess(tmp_path, config, env={"LENOS_PASSWORD": PASSWORD})


def participant(tmp_path: Path, key: str) -> tuple[int, str] | None:
    """(deleted, origin) of a participant's record, or None."""
    rows = query(
        tmp_path / "store.db",
        "SELECT deleted, origin FROM records WHERE collection = 'participants' AND key = ?",
        (key,),
    )
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def listings(server: EmulatorServer, resource: str) -> list[bool]:
    """Each pull of ``resource`` (its first page): True for a full read, False incremental."""
    with emulator_of(server).lock:
        seen = list(emulator_of(server).listings)
    return ["utcModifiedDate" not in q for name, q in seen if name == resource and q["page"] == "1"]


def test_a_participant_deleted_at_the_provider_is_removed_at_the_next_pull(
    tmp_path: Path, lenos: EmulatorServer
) -> None:
    emulator = emulator_of(lenos)
    daemon = daemon_for(tmp_path, lenos)
    try:
        daemon.start()
        daemon.wait_for("pulled", stream="participants")
        wait_until(lambda: participant(tmp_path, "p30"), what="the first pull")
        emulator.remove("participants", "p2")  # "deleted on the client's side"
        wait_until(lambda: participant(tmp_path, "p2") == (1, "lenos"), what="p2 removed")
        removed = daemon.wait_for("outdated_removed", stream="participants")
        assert removed["removed"] == 1 and removed["collection"] == "participants"
        assert participant(tmp_path, "p3") == (0, "lenos")
        # Only the stream with remove_outdated is read in full each pull.
        assert all(listings(lenos, "participants"))
        assert listings(lenos, "sessions")[0] is True
        wait_until(lambda: len(listings(lenos, "sessions")) >= 3, what="more session pulls")
        assert not any(listings(lenos, "sessions")[1:])
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_with_full_pull_interval_only_the_full_pull_that_is_due_removes(
    tmp_path: Path, lenos: EmulatorServer
) -> None:
    emulator = emulator_of(lenos)
    daemon = daemon_for(tmp_path, lenos, "full_pull_interval_s = 3600")
    store = tmp_path / "store.db"
    try:
        daemon.start()
        wait_until(
            lambda: query(
                store,
                "SELECT updated_at FROM cursors WHERE provider = 'lenos' "
                "AND name = 'participants:full'",
            ),
            what="the first full pull settled",
        )
        emulator.remove("participants", "p2")
        seen = len(listings(lenos, "participants"))
        wait_until(
            lambda: len(listings(lenos, "participants")) >= seen + 3, what="incremental pulls"
        )
        assert listings(lenos, "participants")[1:] == [False] * (
            len(listings(lenos, "participants")) - 1
        )
        assert participant(tmp_path, "p2") == (0, "lenos")
        # An hour passes (the mark of the last full pull moves back an hour).
        writer = sqlite3.connect(store, timeout=10)
        with writer:
            writer.execute(
                "UPDATE cursors SET updated_at = updated_at - 3600000 "
                "WHERE provider = 'lenos' AND name = 'participants:full'"
            )
        writer.close()
        wait_until(lambda: participant(tmp_path, "p2") == (1, "lenos"), what="p2 removed")
        assert listings(lenos, "participants").count(True) == 2
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_an_unsettled_full_pull_removes_nothing(tmp_path: Path, lenos: EmulatorServer) -> None:
    emulator = emulator_of(lenos)
    daemon = daemon_for(tmp_path, lenos)
    try:
        daemon.start()
        wait_until(lambda: participant(tmp_path, "p30"), what="the first pull")
        emulator.remove("participants", "p2")
        # An item the adapter cannot read: every full listing holding it is unsettled.
        emulator.put("participants", [{"id": "odd", "utcModifiedDate": "yesterday-ish"}])
        daemon.mark_log()
        wait_until(
            lambda: len([e for e in daemon.events() if e.get("event") == "pull_unsettled"]) >= 3,
            what="three unsettled full pulls",
        )
        assert participant(tmp_path, "p2") == (0, "lenos")
        assert not any(e.get("event") == "outdated_removed" for e in daemon.events())
        emulator.remove("participants", "odd")
        wait_until(lambda: participant(tmp_path, "p2") == (1, "lenos"), what="p2 removed")
        assert participant(tmp_path, "p3") == (0, "lenos")
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_a_kill_during_the_full_pull_removes_nothing_and_the_next_run_removes(
    tmp_path: Path, lenos: EmulatorServer
) -> None:
    emulator = emulator_of(lenos)
    emulator.seed(participants=3000)
    daemon = daemon_for(tmp_path, lenos)
    store = tmp_path / "store.db"

    def live_participants() -> int:
        return int(
            query(
                store,
                "SELECT COUNT(*) FROM records WHERE collection = 'participants' AND deleted = 0",
            )[0][0]
        )

    try:
        daemon.start()
        wait_until(lambda: live_participants() == 3000, what="the first pull")
        emulator.faults.update(latency_ms=500)  # six slow pages: time to kill between them
        emulator.remove("participants", "p2")
        with emulator.lock:
            emulator.listings.clear()

        def full_pull_under_way() -> bool:
            with emulator.lock:
                return any(
                    name == "participants" and q["page"] == "2" and "utcModifiedDate" not in q
                    for name, q in emulator.listings
                )

        wait_until(full_pull_under_way, what="a full pull past its first page")
        daemon.kill()
        assert participant(tmp_path, "p2") == (0, "lenos")
        assert live_participants() == 3000
        emulator.faults.clear()
        daemon.start()
        wait_until(lambda: participant(tmp_path, "p2") == (1, "lenos"), what="p2 removed")
        assert live_participants() == 2999
        assert daemon.stop() == 0
    finally:
        daemon.close()
