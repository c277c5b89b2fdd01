"""The real daemon under a notify socket the test owns, as systemd would run it."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import DaemonProcess, wait_until

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
