"""``dropsync status`` beside a real daemon: running, killed, a second run refused, a secret it
cannot read (the rest: tests/daemon/cli/test_status.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.cli.plugin_output import problem_lines
from tests.support import DaemonProcess

pytestmark = pytest.mark.e2e


def test_status_follows_a_real_daemon_running_then_killed(tmp_path: Path) -> None:
    daemon = DaemonProcess(
        tmp_path, f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "d"}"\n'
    )
    status = [sys.executable, "-m", "dropsync.daemon.cli", "status"]
    option = ["--config", str(daemon.config_path)]
    try:
        daemon.start()
        assert daemon.process is not None
        pid = daemon.process.pid
        shown = subprocess.run([*status, *option], capture_output=True, text=True, check=True)
        assert shown.stdout.startswith(f"daemon: running (pid {pid})")
        checked = subprocess.run(
            [*status, "--check", *option], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout
        assert problem_lines(checked.stdout)[0].startswith(f"OK: dropsync running (pid {pid})")
        daemon.kill()
        checked = subprocess.run(
            [*status, "--check", *option], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 2
        assert checked.stdout.startswith("DROPSYNC CRITICAL: daemon: not running")
        shown = subprocess.run([*status, *option], capture_output=True, text=True, check=True)
        assert shown.stdout.startswith("daemon: NOT RUNNING")
    finally:
        daemon.close()


def test_a_second_run_on_the_same_store_is_refused_naming_the_first(tmp_path: Path) -> None:
    config = f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "d"}"\n'
    first = DaemonProcess(tmp_path, config)
    (tmp_path / "second").mkdir()
    second = DaemonProcess(tmp_path / "second", config)
    try:
        first.start()
        assert first.process is not None
        second.spawn()
        assert second.process is not None
        assert second.process.wait(timeout=60) == 1
        [fatal] = [e for e in second.events() if e.get("event") == "fatal_error"]
        assert f"another dropsync daemon (pid {first.process.pid}) is running" in fatal["error"]
        assert str(tmp_path / "s.db.lock") in fatal["error"]
        # The first one was not disturbed, and a run after it stops is accepted.
        assert first.stop() == 0
        second.start()
        assert second.stop() == 0
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("source", ["secret_env", "secret_file", "credential"])
def test_an_unreadable_secret_at_start_is_a_config_error_exit_2(
    tmp_path: Path, source: str
) -> None:
    value = {
        "secret_env": "DROPSYNC_TEST_UNSET_TOKEN",
        "secret_file": str(tmp_path / "missing-token"),
        "credential": "crm",
    }[source]
    daemon = DaemonProcess(
        tmp_path,
        f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "d"}"\n'
        '[providers.crm]\nkind = "crm"\nbase_url = "http://127.0.0.1:9"\n'
        f'account_id = "a"\n{source} = "{value}"\n',
        env={"CREDENTIALS_DIRECTORY": str(tmp_path / "no-credentials")},
    )
    daemon.env.pop("DROPSYNC_TEST_UNSET_TOKEN", None)
    try:
        daemon.spawn()
        assert daemon.process is not None
        assert daemon.process.wait(timeout=60) == 2
        [fatal] = [e for e in daemon.events() if e.get("event") == "fatal_error"]
        assert fatal["error"].startswith(
            f"{daemon.config_path}: providers.crm.{source}: provider crm: "
        )
        assert not (tmp_path / "s.db").exists()  # refused before anything was created
    finally:
        daemon.close()
