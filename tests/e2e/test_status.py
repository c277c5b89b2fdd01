"""``dropsync status`` beside a real daemon: running, killed, a second run refused, a secret it
cannot read (the rest: tests/daemon/cli/test_status.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.cli.plugin_output import problem_lines
from tests.support import DaemonProcess, drop_json, free_port, query, wait_until

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


def test_a_provider_renamed_by_a_reload_is_shown_as_not_configured(tmp_path: Path) -> None:
    """Its entries stay queued under the old name; status used to show it ``online``, as if
    they were on their way."""
    port = free_port()  # nothing listens: the entries stay pending
    text = (
        f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "d"}"\n'
        'settle_ms = 10\n[collections.contacts]\nkey = "email"\ntimestamp = "at"\n'
        'providers = ["crm"]\n[providers.crm]\nkind = "crm"\n'
        f'base_url = "http://127.0.0.1:{port}"\naccount_id = "a"\nsecret_env = "CRM_TOKEN"\n'
        "backoff_base_s = 3600\n"
    )
    daemon = DaemonProcess(tmp_path, text, env={"CRM_TOKEN": "crm-token-1"})
    status = [sys.executable, "-m", "dropsync.daemon.cli", "status"]
    option = ["--config", str(daemon.config_path)]
    try:
        daemon.start()
        drop_json(tmp_path / "d/contacts", "a", [{"email": "a@x", "at": 1_700_000_000_000}])
        wait_until(lambda: query(tmp_path / "s.db", "SELECT COUNT(*) FROM outbox") == [(1,)])
        daemon.mark_log()
        renamed = text.replace('["crm"]', '["crm2"]').replace("[providers.crm]", "[providers.crm2]")
        daemon.config_path.write_text(renamed)
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded")
        shown = subprocess.run([*status, *option], capture_output=True, text=True, check=True)
        lines = shown.stdout.splitlines()
        [at] = [i for i, x in enumerate(lines) if x.startswith("  crm ")]
        assert lines[at].split()[1:4] == ["unconfigured", "pending", "1"], shown.stdout
        assert "next attempt" not in lines[at]
        assert any("not configured in the running daemon" in x for x in lines[at:]), lines
        as_json = subprocess.run(
            [*status, "--json", *option], capture_output=True, text=True, check=True
        )
        rows = {row["provider"]: row for row in json.loads(as_json.stdout)["providers"]}
        assert rows["crm"]["configured"] is False and rows["crm2"]["configured"] is True
    finally:
        daemon.close()
