"""docs/quickstart.md: every command in its ``sh`` blocks runs, exactly as written and in
order, in one shell, in an empty folder, with this ``dropsync`` on the ``PATH``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("sqlite3") is None:
        pytest.fail("the quickstart uses the sqlite3 command-line shell: apt-get install sqlite3")
    blocks = BLOCK.findall((ROOT / "docs/quickstart.md").read_text())
    assert len(blocks) >= 6
    script = "set -euo pipefail\nset -m\n" + "\n".join(blocks)
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("DROPSYNC_CONFIG", "STATE_DIRECTORY")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "dropsync demo: everything is synced." in done.stderr  # stdout: JSON lines only
    assert "daemon: running (pid " in done.stdout
    assert "ann@example.com|Ann Lee|sql" in done.stdout
    assert "contacts/ann@example.com: current version" in done.stdout
    log = (tmp_path / "mysync/daemon.log").read_text()
    assert "daemon_stopped" in log and "error" not in log.lower().replace("error=none", "")
