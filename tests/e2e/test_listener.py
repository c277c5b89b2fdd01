"""The listener in the daemon as a real subprocess: a port held by another program pauses
the listener (not the daemon), says which address in the log and in ``status``, and the
listener starts by itself once the port is free; what its log says of refused requests and
of an unexpected error."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from dropsync.adapters.churn.adapter import callback_signature
from dropsync.adapters.emulators.common import EmulatorServer

from tests.churn_support import CALLBACK_SECRET, churn_daemon, listener_emulator
from tests.support import drop_json, free_port, query, wait_until

pytestmark = pytest.mark.e2e


def _status(config_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dropsync.daemon.cli", "status", *extra]
    return subprocess.run(
        [*command, "--config", str(config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_busy_port_pauses_the_listener_the_daemon_goes_on_and_it_listens_once_free(
    tmp_path: Path,
) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    address = f"127.0.0.1:{port}"
    with EmulatorServer(listener_emulator(port)) as server:
        daemon = churn_daemon(tmp_path, server.base_url, port)
        try:
            daemon.start()
            refused = daemon.wait_for("listener_cannot_listen")
            assert refused["level"] == "error"
            assert refused["address"] == address
            assert refused["reason"] == "in use by another program"
            # Ingest and deliveries go on without the listener.
            docs = [{"data": {"id": 1}, "createdAt": 1, "updatedAt": 1_700_000_000_002}]
            drop_json(tmp_path / "drop/users", "a", docs)
            daemon.wait_for("batch_delivered", provider="churn")
            assert query(tmp_path / "store.db", "SELECT state FROM deliveries") == [("accepted",)]

            # status says which address is busy; --check makes it a warning.
            def status_names_it() -> str | None:
                out = _status(daemon.config_path).stdout
                return out if address in out else None

            shown = wait_until(status_names_it, what="status naming the busy address")
            assert "address in use: listener paused since" in shown
            assert f"cannot listen on {address}: in use by another program" in shown
            checked = _status(daemon.config_path, "--check")
            assert checked.returncode == 1, checked.stdout
            assert f"WARNING: daemon (pid {daemon.process.pid}): address in use" in checked.stdout  # type: ignore[union-attr]
            # Once the port is free, the listener starts by itself and takes callbacks.
            daemon.mark_log()
            holder.close()
            daemon.wait_for("listener_started", address=address)
            daemon.wait_for("work_resumed", work="listener", condition="address in use")
            health = httpx.get(f"http://{address}/healthz", timeout=10)
            assert health.status_code == 200
            control = f"{server.base_url}/_emulator/send"
            assert httpx.post(control, json={"kind": "sync-status"}).json() == {"status": 200}
            assert query(tmp_path / "store.db", "SELECT state FROM deliveries") == [("confirmed",)]
            assert address not in _status(daemon.config_path).stdout
            assert daemon.stop() == 0
        finally:
            holder.close()
            daemon.close()
    assert not [e for e in daemon.events() if e.get("event") == "raw"]


def test_a_daemon_whose_listener_waits_for_its_port_stops_cleanly(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    daemon = churn_daemon(tmp_path, "http://127.0.0.1:9", port)
    try:
        daemon.start()
        daemon.wait_for("listener_cannot_listen", address=f"127.0.0.1:{port}")
        assert daemon.stop() == 0
    finally:
        holder.close()
        daemon.close()
    shown = _status(daemon.config_path)
    assert "listener paused" not in shown.stdout and "not running" in shown.stdout.lower()


def test_refusals_are_summarised_and_an_unexpected_error_has_its_traceback_in_the_log(
    tmp_path: Path,
) -> None:
    """The daemon's JSON log: a flood of forged callbacks is three lines and a count; an
    error no caller causes (the replay memory dropped by hand) is one line with its type and
    traceback, the callback key nowhere."""
    port = free_port()
    forged = orjson.dumps({"data": {"status": 200}, "signature": "0" * 128})
    with EmulatorServer(listener_emulator(port)) as server:
        daemon = churn_daemon(tmp_path, server.base_url, port)
        try:
            daemon.start()
            daemon.wait_for("listener_started")
            url = f"http://127.0.0.1:{port}/callbacks/churn"
            with httpx.Client(timeout=10) as client:
                for _ in range(50):
                    assert client.post(f"{url}/sync-status", content=forged).status_code == 401
                raw = sqlite3.connect(tmp_path / "store.db")
                raw.execute("DROP TABLE callback_signatures")
                raw.commit()
                raw.close()
                data = {"stopChurnBrandId": 7, "brandIdFromClient": "b1"}
                body = {"data": data, "signature": callback_signature(CALLBACK_SECRET, data)}
                assert client.post(f"{url}/brand", json=body).status_code == 500
            assert daemon.stop() == 0
        finally:
            daemon.close()
    events = daemon.events()
    refused = [e for e in events if e.get("event") == "callback_refused"]
    assert [e.get("repeats") for e in refused] == [None, None, None, 47]
    [error] = [e for e in events if e.get("event") == "listener_error"]
    assert error["level"] == "error" and error["route"] == "brand"
    assert error["error"].startswith("OperationalError: no such table: callback_signatures")
    assert "Traceback (most recent call last)" in error["exception"]
    assert "remember_signature" in error["exception"]
    assert CALLBACK_SECRET not in daemon.log_path.read_text()
