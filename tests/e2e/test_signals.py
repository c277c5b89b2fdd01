"""Signals in the first instants of ``dropsync run``: a SIGHUP never ends it, a SIGTERM stops it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import DaemonProcess, StoreLockHolder, wait_until

pytestmark = pytest.mark.e2e


def config_text(tmp_path: Path) -> str:
    return f'[store]\npath = "{tmp_path / "store.db"}"\n[drop]\npath = "{tmp_path / "drop"}"\n'


def empty_store(path: Path) -> None:
    """A store file not migrated yet: opening it needs the write lock."""
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA journal_mode = WAL")
    raw.close()


def has_open(pid: int, path: Path) -> bool:
    """True once the process has ``path`` open (it is opening the store)."""
    try:
        return any(p.resolve() == path for p in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def spawn(daemon: DaemonProcess) -> subprocess.Popen[bytes]:
    """``dropsync run`` without waiting for it to be ready (``events()`` see this run only)."""
    daemon._log_offset = daemon.log_path.stat().st_size if daemon.log_path.exists() else 0
    log = daemon.log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "dropsync.daemon.cli", "run", "--config", str(daemon.config_path)],
        cwd=daemon.workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=daemon.env,
    )
    log.close()
    daemon.process = process
    return process


def test_sighup_while_starting_does_not_end_the_daemon_and_sigterm_stops_it(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store.db"
    empty_store(store)
    daemon = DaemonProcess(tmp_path, config_text(tmp_path))
    holder = StoreLockHolder(store)  # start-up waits for it, inside its first instants
    try:
        process = spawn(daemon)
        wait_until(lambda: has_open(process.pid, store.resolve()), what="opening the store")
        for _ in range(5):
            process.send_signal(signal.SIGHUP)
            time.sleep(0.01)
        assert process.poll() is None
        holder.release()
        daemon.wait_for("daemon_ready")
        daemon.wait_for("config_reloaded")  # the HUPs after the config was read: one reload
        assert daemon.stop() == 0

        # A SIGTERM while it waits for the store: it stops, cleanly.
        holder = StoreLockHolder(store)
        process = spawn(daemon)
        wait_until(lambda: has_open(process.pid, store.resolve()), what="opening the store")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        holder.close()
        daemon.close()


def test_sighup_from_the_moment_handling_is_in_place_never_ends_the_daemon(
    tmp_path: Path,
) -> None:
    daemon = DaemonProcess(tmp_path, config_text(tmp_path))
    try:
        for _ in range(3):
            process = spawn(daemon)
            status = Path(f"/proc/{process.pid}/status")

            def hup_handled(status: Path = status) -> bool:
                try:
                    fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
                except (OSError, ValueError):
                    return False
                mask = int(fields["SigCgt"], 16) | int(fields["SigIgn"], 16)
                return bool(mask & (1 << (signal.SIGHUP - 1)))

            wait_until(hup_handled, what="SIGHUP handled")
            while not any(e.get("event") == "daemon_ready" for e in daemon.events()):
                assert process.poll() is None, "a SIGHUP ended the daemon while it started"
                process.send_signal(signal.SIGHUP)
                time.sleep(0.005)
            assert daemon.stop() == 0
    finally:
        daemon.close()


def test_sighup_after_sigterm_does_not_reload_a_stopping_daemon(tmp_path: Path) -> None:
    """A reload that came after the stop used to meet the store being closed: exit 1 with a
    fatal_error ("no active connection") instead of a clean stop."""
    daemon = DaemonProcess(tmp_path, config_text(tmp_path))
    try:
        for _ in range(3):
            daemon.start()
            assert daemon.process is not None
            daemon.send_signal(signal.SIGTERM)
            while daemon.process.poll() is None:  # SIGHUPs until it has exited
                daemon.send_signal(signal.SIGHUP)
                time.sleep(0.002)
            # Or ended by a SIGHUP in its last instant: between asyncio giving the signals
            # back to their default and the daemon ignoring them (after the store is closed).
            assert daemon.process.returncode in (0, -signal.SIGHUP), daemon.log_path.read_text()[
                -2000:
            ]
            events = [e["event"] for e in daemon.events()]
            assert "fatal_error" not in events
            stopping = events.index("daemon_stopping")
            assert "config_reloaded" not in events[stopping:]
    finally:
        daemon.close()
