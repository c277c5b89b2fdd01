"""``dropsync demo`` on a terminal, driven as a person would: live progress, the summary,
the offline step (the outbox holds while the CRM is away, then drains), Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pexpect
import pytest

pytestmark = pytest.mark.e2e


def test_demo_on_a_terminal_shows_progress_the_summary_and_the_offline_step(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "DROPSYNC_LOG_FORMAT")}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "dropsync.daemon.cli", "demo", "--dir", str(tmp_path / "demo")],
        cwd=str(tmp_path),
        env={**env, "TERM": "xterm", "COLUMNS": "160", "LINES": "50"},
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 160),
    )
    try:
        child.expect("dropsync demo in ")
        child.expect(r"records \d+")  # the live block
        child.expect("crm +(online|offline|backing-off)")
        child.expect("dropsync demo: everything is synced.")
        child.expect(f"dropsync status --config {tmp_path / 'demo/dropsync.toml'}")
        child.expect("SELECT provider, state, pending, dead_letters FROM pending_by_provider")
        child.expect("Press Enter to take the CRM offline")
        child.sendline("")
        child.expect("The CRM is offline: its outbox holds the new guests")
        child.expect(r"crm +\S+ +3 ")  # three guests wait in the outbox
        child.sendline("")
        child.expect("The CRM has every guest again: nothing was lost")
        child.kill(signal.SIGINT)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    log = (tmp_path / "demo/dropsync-demo.log").read_text()
    assert '"level":"error"' not in log
    assert '"event":"daemon_stopped"' in log
