"""A request's whole deadline, met by the daemon as a real subprocess: a provider that trickles
its answer is a failure naming ``timeout_s``, and an answer that waited complete in the socket
while the daemon was stopped (SIGSTOP) is read and used once, not sent again."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.crm_support import crm_config
from tests.raw_provider import RawProvider, RawRequest, answer, head, trickle, wait_stopped
from tests.support import DaemonProcess, drop_json, query, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TOKEN = "crm-tok-deadline-8c2f"
JOB = {"status": "queued", "_id": "job-1"}


def contacts(count: int) -> list[dict[str, object]]:
    return [
        {"email": f"guest{i}@example.com", "updated_at": 1_700_000_000_000 + i}
        for i in range(count)
    ]


def daemon_for(tmp_path: Path, base_url: str) -> DaemonProcess:
    text = crm_config(
        tmp_path, base_url, 'secret_env = "CRM_TOKEN"\ntimeout_s = 1', backoff_cap_s=0.5
    )
    return DaemonProcess(tmp_path, text, env={"CRM_TOKEN": TOKEN})


@pytest.fixture
def stop_trickling() -> Iterator[threading.Event]:
    stop = threading.Event()
    yield stop
    stop.set()


def test_a_trickling_provider_is_a_failure_naming_the_deadline(
    tmp_path: Path, stop_trickling: threading.Event
) -> None:
    """A 201 head, then a byte every 0.2 s: the request is past timeout_s = 1 long before the
    body ends; the provider is offline with the deadline in last_error, the entries stay."""

    def slow(request: RawRequest, connection: socket.socket) -> None:
        body = b'{"status": "queued", "_id": "job-1"}' + b" " * 400
        connection.sendall(head(201, {"Content-Type": "application/json"}, length=len(body)))
        trickle(connection, body, 0.2, stop_trickling)

    with RawProvider(slow) as provider:
        daemon = daemon_for(tmp_path, provider.base_url)
        try:
            daemon.start()
            drop_json(tmp_path / "drop/contacts", "a", contacts(3))

            def failed() -> tuple[str, str] | None:
                rows = query(
                    tmp_path / "store.db",
                    "SELECT state, last_error FROM providers WHERE name = 'crm'",
                )
                if rows and rows[0][0] == "offline" and "timeout_s" in (rows[0][1] or ""):
                    return rows[0]
                return None

            _, error = wait_until(failed, what="the crm offline past its deadline")
            assert "1 s" in error
            assert query(tmp_path / "store.db", "SELECT COUNT(*) FROM outbox") == [(3,)]
            assert query(
                tmp_path / "store.db",
                "SELECT COUNT(*) FROM deliveries WHERE state IN ('accepted', 'confirmed')",
            ) == [(0,)]
            assert daemon.stop() == 0
        finally:
            stop_trickling.set()
            daemon.close()


def test_an_answer_waiting_in_the_socket_through_a_sigstop_is_used_once(tmp_path: Path) -> None:
    """The provider applies the request and answers 201 at once, but the daemon is stopped
    before it reads the answer, for three times its timeout_s. Resumed, it reads the answer
    waiting in its socket: the batch is delivered, once."""
    daemon: DaemonProcess | None = None
    resumed = threading.Event()

    def stop_then_answer(request: RawRequest, connection: socket.socket) -> None:
        assert daemon is not None and daemon.process is not None
        pid = daemon.process.pid
        if len(provider.arrived("/account")) == 1:
            os.kill(pid, signal.SIGSTOP)
            wait_stopped(pid)
            answer(connection, 201, JOB)
            resumed.wait(3)  # the daemon stays stopped for 3 s, timeout_s is 1 s
            os.kill(pid, signal.SIGCONT)
            resumed.set()
            return
        answer(connection, 201, {"status": "queued", "_id": "job-again"})

    with RawProvider(stop_then_answer) as provider:
        daemon = daemon_for(tmp_path, provider.base_url)
        try:
            daemon.start()
            drop_json(tmp_path / "drop/contacts", "a", contacts(30))
            wait_until(resumed.is_set, what="the daemon stopped and resumed")
            wait_until(
                lambda: query(tmp_path / "store.db", "SELECT COUNT(*) FROM outbox") == [(0,)],
                what="the 30 contacts delivered",
            )
            attempts = query(
                tmp_path / "store.db", "SELECT state, remote_ref, error FROM deliveries"
            )
            assert attempts == [("accepted", "job-1", None)], attempts
            assert len(provider.arrived("/account")) == 1
            assert daemon.stop() == 0
            assert len(provider.arrived("/account")) == 1
        finally:
            if daemon.process is not None and daemon.process.poll() is None:
                os.kill(daemon.process.pid, signal.SIGCONT)
            daemon.close()
