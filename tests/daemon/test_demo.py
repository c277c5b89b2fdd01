"""``dropsync demo`` and ``dropsync emulate`` as a user runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these


def test_demo_syncs_sample_files_to_the_emulators_and_exits_0(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dropsync.daemon.cli", "demo", "--exit-when-synced"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert '"event":"synced"' in done.stdout
    db = tmp_path / "dropsync-demo/dropsync.db"
    assert query(db, "SELECT COUNT(*) FROM outbox") == [(0,)]
    delivered = query(db, "SELECT provider, state, COUNT(*) FROM delivered GROUP BY 1, 2")
    assert delivered == [
        ("churn", "confirmed", 3),  # by the churn tool's signed sync-status callback
        ("crm", "confirmed", 3),  # by the CRM's webhook
        ("favourites", "confirmed", 2),
        ("registrations", "confirmed", 3),  # the three seat requests, decided
    ]
    assert query(db, "SELECT key, status FROM registration_requests ORDER BY key") == [
        ("r-1", "confirmed"),
        ("r-2", "confirmed"),
        ("r-3", "refused"),  # the keynote has two seats
    ]
    assert query(db, "SELECT COUNT(*) FROM records WHERE collection = 'participants'") == [(20,)]
    # The demo wrote its config beside its store: status finds the store with it.
    config = tmp_path / "dropsync-demo/dropsync.toml"
    status = subprocess.run(
        [sys.executable, "-m", "dropsync.daemon.cli", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"store {db} (schema" in status.stdout
    assert f"dropsync status --config {config}" in done.stdout  # the summary says how
    assert '"level":"error"' not in done.stdout
    # The favourite pulled from the emulator is in the store, and was not sent back.
    assert query(db, "SELECT origin FROM records WHERE key = 'alice:session_21982'") == [
        ("favourites",)
    ]


def test_emulate_serves_every_emulator_until_sigterm() -> None:
    crm_port, favourites_port, registrations_port, churn_port = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "emulate",
            "--crm-port",
            str(crm_port),
            "--favourites-port",
            str(favourites_port),
            "--registrations-port",
            str(registrations_port),
            "--churn-port",
            str(churn_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def up() -> bool:
            try:
                return (
                    httpx.get(
                        f"http://127.0.0.1:{favourites_port}/_emulator/state", timeout=1
                    ).status_code
                    == 200
                )
            except httpx.HTTPError:
                return False

        wait_until(up, what="emulators")
        response = httpx.post(
            f"http://127.0.0.1:{crm_port}/account/acc_1/sync_data",
            json={"origin": "test", "contacts": [{"email": "a@example.com"}]},
            headers={"Authorization": "Token token=demo-crm-token"},
        )
        assert response.status_code == 201 and response.json()["status"] == "queued"
        login = httpx.post(
            f"http://127.0.0.1:{registrations_port}/api/v1/login",
            json={"username": "fp-bot", "password": "demo-lenos-password"},
        )
        assert login.status_code == 200
        sessions = httpx.get(
            f"http://127.0.0.1:{registrations_port}/api/v1/events/ev-2026/sessions",
            params={"page": 1, "pageSize": 500},
            headers={"Authorization": f"Bearer {login.json()['token']}"},
        )
        assert sessions.json()["total"] == 6
        upload = httpx.post(f"http://127.0.0.1:{churn_port}/client-files", data={"data": "[]"})
        assert upload.status_code == 401  # it is there, and wants the demo token
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
