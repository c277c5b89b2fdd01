"""``dropsync demo`` and ``dropsync emulate`` as a user runs them."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
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
    assert f"dropsync status --config {config}" in done.stderr  # the summary says how
    assert '"level":"error"' not in done.stdout
    # Not on a terminal, stdout is the daemon's JSON lines only (`dropsync demo | jq`): the
    # banner and the summary went to stderr.
    lines = done.stdout.splitlines()
    assert lines and all(isinstance(orjson.loads(line), dict) for line in lines)
    assert "dropsync demo in " in done.stderr
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


# The demo with one more sample file: a guest the CRM refuses (no valid email address, so
# dead-lettered after the 422) and a document the drop folder rejects (no key).
_REFUSED_SAMPLE = """
import sys
from dropsync.daemon import demo
from dropsync.daemon.cli import main
samples = demo.sample_files
def sample_files(drop, parts):
    samples(drop, parts)
    demo.write_samples(drop, {"contacts/walk-ins.json": [
        {"email": "no-address", "name_first": "Gus", "updated_at": "2024-05-05T08:00:00Z"},
        {"name_first": "Hal", "updated_at": "2024-05-05T08:01:00Z"},
    ]})
demo.sample_files = sample_files
sys.exit(main(["demo", *sys.argv[1:]]))
"""


@pytest.mark.parametrize("exit_when_synced", [True, False], ids=["exit-when-synced", "ctrl-c"])
def test_demo_with_a_dead_letter_and_a_rejected_document_exits_1_naming_them(
    tmp_path: Path, exit_when_synced: bool
) -> None:
    db = tmp_path / "dropsync-demo/dropsync.db"
    process = subprocess.Popen(
        [sys.executable, "-c", _REFUSED_SAMPLE, *(["--exit-when-synced"] * exit_when_synced)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        if not exit_when_synced:  # the demo runs until Ctrl-C: once the CRM refused the guest

            def dead_lettered() -> bool:
                try:
                    return query(db, "SELECT COUNT(*) FROM dead_letters") == [(1,)]
                except sqlite3.Error:  # not there yet, or not migrated yet
                    return False

            wait_until(dead_lettered, what="the dead letter")
            process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert query(db, "SELECT provider, key FROM dead_letters") == [("crm", "no-address")]
    assert process.returncode == 1, output[-3000:]
    assert "everything is synced" not in output
    summary = output[output.index("dropsync demo: ") :]
    heading = "synced" if exit_when_synced else "stopped"
    assert summary.startswith(f"dropsync demo: {heading}, but not everything arrived:\n")
    assert "  crm: 1 dead letter (latest: HTTP 422" in summary
    assert "is not a valid address" in summary  # the provider's reason
    assert "  contacts/walk-ins.json: 1 document rejected, the file quarantined (" in summary
    assert "key field email is missing" in summary
    assert "dropsync dead-letters list --config" in summary
