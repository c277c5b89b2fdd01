"""The daemon subprocess against an emulator: auth failure and recovery, secrets kept secret."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer

from tests.e2e.crm_support import crm_config
from tests.support import DaemonProcess, drop_json, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these

SECRET = "s3cr3t-crm-token-7f9e2a"


@pytest.fixture
def crm() -> Iterator[EmulatorServer]:
    with EmulatorServer(CrmEmulator({"acc_1": SECRET})) as server:
        yield server


def config(tmp_path: Path, base_url: str, secret_line: str) -> str:
    return crm_config(tmp_path, base_url, secret_line, backoff_cap_s=0.5)


def drop_contacts(tmp_path: Path, name: str, count: int) -> None:
    docs = [
        {"email": f"{name}{i}@example.com", "updated_at": 1_700_000_000_000 + i}
        for i in range(count)
    ]
    drop_json(tmp_path / "drop/contacts", name, docs)


def status(tmp_path: Path) -> dict[str, object]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "status",
            "--json",
            "--config",
            str(tmp_path / "dropsync.toml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_401_pauses_keeps_everything_and_reload_with_the_fixed_secret_resumes(
    tmp_path: Path,
    crm: EmulatorServer,
) -> None:
    secret_file = tmp_path / "crm.secret"
    secret_file.write_text("wrong-token\n")
    daemon = DaemonProcess(
        tmp_path, config(tmp_path, crm.base_url, f'secret_file = "{secret_file}"')
    )
    try:
        daemon.start()
        drop_contacts(tmp_path, "a", 5)
        daemon.wait_for("provider_auth_failed")
        report = status(tmp_path)
        providers = report["providers"]
        assert isinstance(providers, list) and len(providers) == 1
        provider: dict[str, object] = providers[0]
        assert provider["state"] == "auth-failed" and provider["pending"] == 5
        error = str(provider["last_error"])
        assert "401" in error and "wrong-token" not in error
        human = subprocess.run(
            [
                sys.executable,
                "-m",
                "dropsync.daemon.cli",
                "status",
                "--config",
                str(tmp_path / "dropsync.toml"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "auth-failed" in human

        secret_file.write_text(SECRET + "\n")
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded")
        wait_until(
            lambda: query(tmp_path / "store.db", "SELECT COUNT(*) FROM outbox") == [(0,)],
            what="delivery after reload",
        )
        assert len(crm.emulator.contacts) == 5  # type: ignore[attr-defined]
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_credential_secret_is_used_and_never_logged_or_stored(
    tmp_path: Path,
    crm: EmulatorServer,
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "crm").write_text(SECRET)
    daemon = DaemonProcess(
        tmp_path,
        config(tmp_path, crm.base_url, 'credential = "crm"'),
        env={"CREDENTIALS_DIRECTORY": str(credentials)},
    )
    try:
        daemon.start()
        drop_contacts(tmp_path, "c", 3)
        wait_until(
            lambda: len(crm.emulator.contacts) == 3,  # type: ignore[attr-defined]
            what="contacts at the emulator",
        )
        crm.faults.update(status=401, count=1)
        drop_contacts(tmp_path, "d", 1)
        daemon.wait_for("provider_auth_failed")
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert SECRET not in daemon.log_path.read_text()
    assert SECRET.encode() not in (tmp_path / "store.db").read_bytes()
    wal = tmp_path / "store.db-wal"
    assert not wal.exists() or SECRET.encode() not in wal.read_bytes()
    assert SECRET not in json.dumps(status(tmp_path))


def test_run_dry_run_shows_batches_and_sends_nothing(tmp_path: Path, crm: EmulatorServer) -> None:
    daemon = DaemonProcess(
        tmp_path, config(tmp_path, crm.base_url, 'secret_env = "T_CRM"'), env={"T_CRM": SECRET}
    )
    try:
        daemon.start("--dry-run")
        drop_contacts(tmp_path, "dry", 4)
        batch = daemon.wait_for("dry_run_batch")
        assert batch["items"] == 4 and batch["provider"] == "crm"
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert crm.emulator.requests("/account") == []
    assert query(tmp_path / "store.db", "SELECT COUNT(*) FROM outbox") == [(4,)]
    assert query(tmp_path / "store.db", "SELECT COUNT(*) FROM deliveries") == [(0,)]
