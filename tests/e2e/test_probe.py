"""``dropsync probe`` while the daemon runs (each kind's probe: tests/daemon/cli/test_probe.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.registrations.emulator import RegistrationsEmulator

from tests.daemon.cli.test_probe import ASKED, BAD, GOOD, emulator, write_config
from tests.support import DaemonProcess

pytestmark = pytest.mark.e2e


def test_probe_works_while_the_daemon_runs(tmp_path: Path) -> None:
    registrations = emulator("registrations")
    assert isinstance(registrations, RegistrationsEmulator)
    registrations.seed(participants=3)
    with EmulatorServer(registrations) as lenos:
        config = write_config(tmp_path, {"lenos": ("registrations", lenos.base_url)})
        env = {"PROBE_LENOS": GOOD["registrations"]}
        daemon = DaemonProcess(tmp_path, config.read_text(), env=env)
        try:
            daemon.start()
            daemon.wait_for("pulled", stream="participants")
            for password, code, line in (
                (GOOD["registrations"], 0, f"lenos: ok (registrations: {ASKED['registrations']})"),
                (
                    BAD["registrations"],
                    1,
                    "lenos: refused (registrations): credentials refused (HTTP 401",
                ),
            ):
                done = subprocess.run(
                    [sys.executable, "-m", "dropsync.daemon.cli", "probe", "--config", str(config)],
                    capture_output=True,
                    text=True,
                    check=False,
                    env={**os.environ, "PROBE_LENOS": password},
                )
                assert done.returncode == code, done.stderr
                assert done.stdout.startswith(line)
                assert password not in done.stdout + done.stderr
            assert daemon.process is not None and daemon.process.poll() is None
            assert daemon.stop() == 0
        finally:
            daemon.close()
