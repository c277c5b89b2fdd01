"""sd_notify: datagrams on a real AF_UNIX socket the test owns, watchdog timing rules."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from dropsync.daemon.process.notify import Notifier, run_watchdog
from structlog.testing import capture_logs


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in tmp_path and its path."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    """One datagram parsed into its assignments."""
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def pending(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock`` without blocking."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return out


def test_unset_is_a_no_op(clean_env: pytest.MonkeyPatch) -> None:
    notifier = Notifier.from_environment()
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    with capture_logs() as logs:
        notifier.ready("x")
        notifier.status("y")
        notifier.reloading()
        notifier.watchdog()
        notifier.stopping()
        notifier.close()
    assert logs == []


def test_empty_notify_socket_is_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NOTIFY_SOCKET", "")
    assert not Notifier.from_environment().enabled


def test_messages_on_a_path_socket(
    clean_env: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    clean_env.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier.from_environment()
    assert notifier.enabled

    notifier.ready()
    assert receive(sock) == {"READY": "1"}
    notifier.ready(status="started")
    assert receive(sock) == {"READY": "1", "STATUS": "started"}
    notifier.status("pending crm=3\nsecond line")
    assert receive(sock) == {"STATUS": "pending crm=3 second line"}
    notifier.watchdog()
    assert receive(sock) == {"WATCHDOG": "1"}
    notifier.stopping()
    assert receive(sock) == {"STOPPING": "1"}
    notifier.close()
    notifier.close()
    notifier.status("after close")
    assert receive(sock) == {"STATUS": "after close"}
    notifier.close()


def test_reloading_sends_monotonic_usec(
    clean_env: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    clean_env.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier.from_environment()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = receive(sock)
    notifier.close()
    assert fields["RELOADING"] == "1"
    assert set(fields) == {"RELOADING", "MONOTONIC_USEC"}
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_abstract_namespace(clean_env: pytest.MonkeyPatch) -> None:
    name = f"dropsync-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        clean_env.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier.from_environment()
        assert notifier.enabled
        notifier.ready(status="abstract")
        assert receive(sock) == {"READY": "1", "STATUS": "abstract"}
        notifier.close()
    finally:
        sock.close()


def test_send_failure_is_logged_not_raised(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    notifier = Notifier.from_environment()
    with capture_logs() as logs:
        notifier.ready()
        notifier.watchdog()
    notifier.close()
    assert [entry["event"] for entry in logs] == ["notify_failed", "notify_failed"]
    assert logs[0]["state"] == "READY"
    assert logs[1]["state"] == "WATCHDOG"


def test_relative_socket_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NOTIFY_SOCKET", "relative.sock")
    with capture_logs() as logs:
        notifier = Notifier.from_environment()
        notifier.ready()
    assert not notifier.enabled
    assert [entry["event"] for entry in logs] == ["notify_failed"]


def test_watchdog_interval_is_half_of_watchdog_usec(
    clean_env: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    _, path = listener
    clean_env.setenv("NOTIFY_SOCKET", path)
    clean_env.setenv("WATCHDOG_USEC", "30000000")
    assert Notifier.from_environment().watchdog_interval() == 15.0


def test_watchdog_pid_must_be_ours(
    clean_env: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    _, path = listener
    clean_env.setenv("NOTIFY_SOCKET", path)
    clean_env.setenv("WATCHDOG_USEC", "2000000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_environment().watchdog_interval() == 1.0
    clean_env.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.from_environment().watchdog_interval() is None


@pytest.mark.parametrize("value", ["", "0", "-5", "soon"])
def test_no_watchdog_without_a_usable_usec(
    clean_env: pytest.MonkeyPatch, listener: tuple[socket.socket, str], value: str
) -> None:
    _, path = listener
    clean_env.setenv("NOTIFY_SOCKET", path)
    clean_env.setenv("WATCHDOG_USEC", value)
    assert Notifier.from_environment().watchdog_interval() is None


def test_no_watchdog_without_a_socket(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WATCHDOG_USEC", "100000")
    assert Notifier.from_environment().watchdog_interval() is None


@pytest.mark.anyio
async def test_run_watchdog_returns_when_not_configured(clean_env: pytest.MonkeyPatch) -> None:
    with anyio.fail_after(5):
        await run_watchdog(Notifier.from_environment())


@pytest.mark.anyio
async def test_run_watchdog_sends_periodic_pings(
    clean_env: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    clean_env.setenv("NOTIFY_SOCKET", path)
    clean_env.setenv("WATCHDOG_USEC", "100000")
    notifier = Notifier.from_environment()
    received: list[bytes] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_watchdog, notifier)
            while len(received) < 2:
                await anyio.sleep(0.01)
                received += pending(sock)
            tg.cancel_scope.cancel()
    notifier.close()
    assert len(received) >= 2
    assert set(received) == {b"WATCHDOG=1"}
