"""The real daemon under a notify socket the test owns, as systemd would run it."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import DaemonProcess, StoreLockHolder, drop_json, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these


class NotifySocket:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.received: list[tuple[float, str]] = []
        self._cursor = 0

    def drain(self, seconds: float) -> list[str]:
        """Collect datagrams for ``seconds``; returns those that arrived."""
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            self.received.append((time.monotonic(), data))
            got.append(data)
        return got

    def wait_for(self, needle: str, timeout: float = 30.0) -> str:
        """Wait for the next datagram (after the last one matched) containing ``needle``."""

        def seen() -> str | None:
            self.drain(0.1)
            for index in range(self._cursor, len(self.received)):
                message = self.received[index][1]
                if needle in message:
                    self._cursor = index + 1
                    return message
            return None

        return wait_until(seen, timeout=timeout, what=f"notify {needle}")  # type: ignore[no-any-return]


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.sock.close()


def test_ready_watchdog_reload_stopping_and_a_blocked_loop(
    tmp_path: Path, notify: NotifySocket
) -> None:
    store = tmp_path / "store.db"
    daemon = DaemonProcess(
        tmp_path,
        f'[store]\npath = "{store}"\n[drop]\npath = "{tmp_path / "drop"}"\n',
        env={
            "NOTIFY_SOCKET": str(notify.path),
            "WATCHDOG_USEC": "200000",
            "DROPSYNC_DEBUG_HOOKS": "1",
        },
    )
    try:
        daemon.start()
        ready = notify.wait_for("READY=1")
        assert store.exists() and "STATUS=" in ready
        # Several pings at half of WATCHDOG_USEC.
        pings = [m for m in notify.drain(1.0) if "WATCHDOG=1" in m]
        assert len(pings) >= 2

        daemon.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1")
        assert "MONOTONIC_USEC=" in reloading
        notify.wait_for("READY=1")

        # Block the event loop (a debug hook sleeps 5 s on it): the pings must stop.
        daemon.send_signal(signal.SIGUSR2)
        daemon.wait_for("debug_block_event_loop")
        notify.drain(0.3)  # a ping already in flight may still land
        during = [m for m in notify.drain(1.5) if "WATCHDOG=1" in m]
        assert during == []
        notify._cursor = len(notify.received)
        notify.wait_for("WATCHDOG=1", timeout=30)  # and resume once the loop runs again

        assert daemon.stop(signal.SIGTERM) == 0
        notify.wait_for("STOPPING=1", timeout=5)  # queued datagrams outlive the process
    finally:
        daemon.close()


# The daemon with STATUS= every 0.5 s instead of every 30 s (the interval is a constant).
QUICK_STATUS = [
    sys.executable,
    "-c",
    "import sys\n"
    "from dropsync.daemon.process import runner\n"
    "runner.STATUS_EVERY_S = 0.5\n"
    "from dropsync.daemon.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n",
]


def quick_daemon(tmp_path: Path, notify: NotifySocket, extra: str = "") -> DaemonProcess:
    config = (
        f'[store]\npath = "{tmp_path / "store.db"}"\n[drop]\npath = "{tmp_path / "drop"}"\n'
        'settle_ms = 20\n[collections.contacts]\nkey = "email"\ntimestamp = "updated_at"\n'
    )
    return DaemonProcess(
        tmp_path, config + extra, env={"NOTIFY_SOCKET": str(notify.path)}, launcher=QUICK_STATUS
    )


def next_status(notify: NotifySocket) -> str:
    """The next STATUS= line."""
    return notify.wait_for("STATUS=").split("STATUS=", 1)[1].split("\n")[0]


def statuses(notify: NotifySocket, count: int, needle: str) -> list[str]:
    """The next ``count`` STATUS= lines, each of which must contain ``needle``."""
    found = [next_status(notify) for _ in range(count)]
    for line in found:
        assert needle in line, line
    return found


def test_status_names_a_pause_at_once_and_keeps_coming_while_a_lock_is_held(
    tmp_path: Path, notify: NotifySocket
) -> None:
    daemon = quick_daemon(tmp_path, notify)
    holder = None
    try:
        daemon.start()
        notify.wait_for("READY=1")
        statuses(notify, 1, "pending none; inbox 0")
        holder = StoreLockHolder(tmp_path / "store.db")
        drop_json(
            tmp_path / "drop/contacts", "a", [{"email": "a@x", "updated_at": 1_700_000_000_000}]
        )
        daemon.wait_for("work_paused", condition="store busy")
        # The writer waits for the lock; the updates do not wait with it, and name the pause.
        lines = [notify.wait_for("STATUS=store busy: ").split("STATUS=")[1]]
        lines += statuses(notify, 4, "store busy: ")
        assert all(
            re.search(r"store busy: [a-z, ]+ paused since \d\d:\d\d:\d\d; ", line) for line in lines
        )
        assert lines[-1].endswith("pending none; inbox 0")
        holder.release()
        daemon.wait_for("work_resumed", condition="store busy")
        wait_until(lambda: "store busy" not in next_status(notify), what="no pause in STATUS=")
        wait_until(lambda: query(tmp_path / "store.db", "SELECT 1 FROM records"), what="applied")
        assert daemon.stop() == 0
    finally:
        if holder is not None:
            holder.close()
        daemon.close()


def test_a_refused_reload_stays_in_status_and_check_until_a_reload_succeeds(
    tmp_path: Path, notify: NotifySocket
) -> None:
    daemon = quick_daemon(tmp_path, notify)
    status = [sys.executable, "-m", "dropsync.daemon.cli", "status", "--check"]
    option = ["--config", str(daemon.config_path)]

    def check() -> tuple[int, str]:
        done = subprocess.run([*status, *option], capture_output=True, text=True, check=False)
        return done.returncode, done.stdout

    try:
        daemon.start()
        assert daemon.process is not None
        notify.wait_for("READY=1")
        assert check()[0] == 0
        good = daemon.config_path.read_text()
        daemon.config_path.write_text(good.replace("settle_ms = 20", "settle_ms = 'soon'"))
        daemon.send_signal(signal.SIGHUP)
        refused = daemon.wait_for("config_reload_failed")
        ready = notify.wait_for("READY=1")
        assert f"STATUS=reload refused: {refused['error']}; pending none" in ready
        # The next updates still say so (before, the first one overwrote it).
        statuses(notify, 2, f"reload refused: {refused['error']}")
        code, out = check()
        assert code == 1, out
        assert out.startswith(
            f"DROPSYNC WARNING: daemon (pid {daemon.process.pid}): reload refused at "
        )
        assert f", running on its previous config: {refused['error']} | " in out
        daemon.config_path.write_text(good)
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded")
        notify.wait_for("STATUS=reloaded")
        statuses(notify, 1, "pending none; inbox 0")
        code, out = check()
        assert code == 0 and "reload refused" not in out, out
        assert daemon.stop() == 0
    finally:
        daemon.close()
