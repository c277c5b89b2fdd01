"""The status page in a real browser: headless Chromium loads ``GET /`` of a running daemon
(a subprocess with a ``[listener]``, the CRM emulator, a delivered batch, a dead letter whose
reason is markup, a quarantined file) and the test reads the DOM Chromium built: a row per
provider, the chart, the dead letter's reason as text, no script, no style refused by the
page's Content-Security-Policy. Screenshots (desktop and phone width) are kept under the
test's tmp_path, and copied to ``$DROPSYNC_SCREENSHOTS`` when it is set (docs/testing.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer

from tests.daemon.inbound.test_status_page import HOSTILE, Elements
from tests.e2e.crm_support import crm_config
from tests.support import DaemonProcess, drop_json, free_port, query, wait_until

pytestmark = pytest.mark.e2e

CRM_TOKEN = "crm-tok-7a0c55e1d3"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Offline and quiet: no first-run, sync, component or field-trial fetches (there is no network).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
SIZES = {"desktop": "1280,1000", "phone": "390,1700"}

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (Debian's chromium package: .ci/run installs it)",
)


def chromium(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium headless on ``url``, with a new empty profile (else it tries the network)."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def keep(shot: Path) -> None:
    """Copy a screenshot to ``$DROPSYNC_SCREENSHOTS`` when set."""
    folder = os.environ.get("DROPSYNC_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(folder) / shot.name)


@pytest.fixture
def crm() -> Iterator[EmulatorServer]:
    with EmulatorServer(CrmEmulator({"acc_1": CRM_TOKEN})) as server:
        yield server


@needs_chromium
def test_the_status_page_in_headless_chromium(tmp_path: Path, crm: EmulatorServer) -> None:
    port = free_port()
    listener = f'[listener]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
    daemon = DaemonProcess(
        tmp_path,
        crm_config(tmp_path, crm.base_url, 'secret_env = "T_CRM"', backoff_cap_s=0.2) + listener,
        env={"T_CRM": CRM_TOKEN},
    )
    store = tmp_path / "store.db"
    url = f"http://127.0.0.1:{port}/"
    try:
        daemon.start()
        daemon.wait_for("listener_started")
        docs = [{"email": f"c{i}@example.com", "updated_at": 1_700_000_000_000} for i in range(3)]
        drop_json(tmp_path / "drop/contacts", "a", docs)
        daemon.wait_for("batch_delivered", provider="crm")
        # The CRM refuses the next record with a reason that is markup: a dead letter.
        crm.faults.update(status=422, body=f"refused: {HOSTILE}", content_type="text/plain")
        drop_json(
            tmp_path / "drop/contacts",
            "b",
            [{"email": "dl@example.com", "updated_at": 1_700_000_000_000}],
        )
        wait_until(
            lambda: query(store, "SELECT COUNT(*) FROM dead_letters") == [(1,)],
            what="a dead letter",
        )
        crm.faults.clear()
        bad = tmp_path / "drop/contacts/broken.tmp"
        bad.write_bytes(b"[{not json")
        bad.rename(bad.with_suffix(".json"))
        wait_until(
            lambda: (
                query(store, "SELECT COUNT(*) FROM files WHERE status = 'quarantined'") == [(1,)]
            ),
            what="a quarantined file",
        )
        assert httpx.get(url, timeout=10).status_code == 200

        dumped = chromium(url, "--dump-dom", "--enable-logging=stderr", "--v=0")
        assert dumped.returncode == 0, dumped.stderr[-2000:]
        shots = {}
        for name, size in SIZES.items():
            shots[name] = tmp_path / f"status-page-{name}.png"
            shot = chromium(url, f"--screenshot={shots[name]}", f"--window-size={size}")
            assert shot.returncode == 0 and shots[name].stat().st_size > 0, shot.stderr[-2000:]
            keep(shots[name])
        assert daemon.stop() == 0
    finally:
        daemon.close()

    dom = Elements(dumped.stdout)
    [row] = dom.tags("article", "provider")
    assert row["data-provider"] == "crm"
    [chart] = dom.tags("svg", "chart")
    assert chart["data-provider"] == "crm" and "3 records delivered" in (chart["aria-label"] or "")
    assert dom.tags("rect", "d"), "a bar for the delivered batch"
    text = " ".join(dom.text)
    assert f"refused: {HOSTILE}" in text  # the dead letter's reason, as text
    assert "contacts/broken.json" in text  # the quarantined file
    assert not dom.tags("script") and not dom.tags("u")
    assert "dl@example.com" not in dumped.stdout  # the dead letter's key is not shown
    # The page's inline style was applied: nothing refused by its own policy.
    assert "Content Security Policy" not in dumped.stderr, dumped.stderr[-2000:]
