"""``dropsync run --config FILE`` before and after the command (every other command:
tests/daemon/cli/test_config_option.py)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.daemon.cli.test_config_option import make_work
from tests.support import DaemonProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config naming a store with one ingested record, and an empty working directory."""
    return make_work(tmp_path, monkeypatch)


@pytest.mark.parametrize("position", ["before", "after"])
def test_run_with_config_before_or_after_uses_the_file(work: Path, position: str) -> None:
    config = work / "conf/dropsync.toml"
    daemon = DaemonProcess(config.parent, config.read_text(), cwd=Path.cwd())
    try:
        daemon.start(config_first=position == "before")
        [started] = [e for e in daemon.events() if e.get("event") == "daemon_starting"]
        assert started["store"] == str(work / "state/s.db")
        assert started["config"] == str(config)
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        daemon.close()
    assert list(Path.cwd().iterdir()) == []
