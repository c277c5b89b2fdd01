"""docs/providers.md, "Signing a callback by hand": its ``sh`` block runs as written (openssl
and curl) against a running daemon, whose listener takes both callbacks; the same body sent
again is a replay, refused."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from dropsync.adapters.emulators.common import EmulatorServer

from tests.churn_support import CHURN_ENV, churn_daemon, listener_emulator
from tests.support import ROOT, drop_json, free_port, query, wait_until

pytestmark = pytest.mark.e2e

UPLOADED = 1_700_000_000_000
SECTION = re.compile(r"\*\*Signing a callback by hand\*\*.*?^```sh\n(.*?)^```$", re.S | re.M)


def test_the_documented_openssl_and_curl_callbacks_are_taken_once(tmp_path: Path) -> None:
    for program in ("openssl", "curl"):
        if shutil.which(program) is None:
            pytest.fail(f"the documented example needs {program}")
    [block] = SECTION.findall((ROOT / "docs/providers.md").read_text())
    port = free_port()
    with EmulatorServer(listener_emulator(port)) as server:
        daemon = churn_daemon(tmp_path, server.base_url, port)
        try:
            daemon.start()
            # An upload sent before the sync status: the example's callback confirms it.
            drop_json(
                tmp_path / "drop/users",
                "a",
                [{"data": {"id": 1}, "createdAt": UPLOADED, "updatedAt": UPLOADED}],
            )
            store = tmp_path / "store.db"
            wait_until(
                lambda: query(store, "SELECT state FROM delivered") == [("accepted",)],
                what="the upload accepted",
            )
            env = {**os.environ, **CHURN_ENV, "LISTENER": f"http://127.0.0.1:{port}"}

            def run_block() -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    ["bash", "-c", "set -euo pipefail\n" + block],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=60,
                )

            first = run_block()
            assert first.returncode == 0, first.stdout + first.stderr
            answers = first.stdout.splitlines()
            assert len(answers) == 2 and all('"ok":true' in a for a in answers), answers
            assert query(store, "SELECT state FROM delivered") == [("confirmed",)]
            assert query(store, "SELECT client_brand_id, stop_churn_brand_id FROM brands") == [
                ("acme", 15)
            ]
            # Run again: the sync status is a new one (a new timestamp, a new signature), taken;
            # the brand's body is the same as before: a replay, refused 401, nothing changed.
            again = run_block()
            assert again.returncode == 22, again.stdout + again.stderr  # curl --fail-with-body
            sync, brand = again.stdout.splitlines()
            assert '"ok":true' in sync
            assert "replay" in brand
            assert daemon.stop() == 0
        finally:
            daemon.close()
