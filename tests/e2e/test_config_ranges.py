"""Every number of the configuration at the ends of its range, through ``dropsync run`` (the
ranges themselves: tests/daemon/test_config.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.test_config import (
    RUN_SAMPLE,
    SECRETS,
    documented_ranges,
    numeric_keys,
    reference,
    toml_text,
    with_value,
)
from tests.support import DaemonProcess, drop_json, free_port, query, wait_until

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("path", "value"), RUN_SAMPLE, ids=str)
def test_run_refuses_a_number_outside_its_range_with_exit_2_naming_the_key(
    tmp_path: Path, path: tuple[str, ...], value: object
) -> None:
    raw = reference()
    raw["store"]["path"] = str(tmp_path / "store.db")
    raw["drop"]["path"] = str(tmp_path / "drop")
    config = tmp_path / "dropsync.toml"
    config.write_text(toml_text(with_value(raw, path, value)))
    done = subprocess.run(
        [sys.executable, "-m", "dropsync.daemon.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**SECRETS, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    said = done.stdout + done.stderr  # run logs the fatal error as a JSON line
    assert done.returncode == 2, said[-2000:]
    assert f"{config}: {'.'.join(path)}: expected " in said
    assert not (tmp_path / "store.db").exists()


@pytest.mark.parametrize("end", ["lowest", "highest"])
def test_a_daemon_with_every_number_at_one_end_of_its_range_starts_ingests_and_stops(
    tmp_path: Path, end: str
) -> None:
    raw = reference()
    ranges = documented_ranges()
    for key, path in numeric_keys(raw).items():
        kind, low, high = ranges[key]
        value = low if end == "lowest" else high
        raw = with_value(raw, path, int(value) if kind == "integer" else value)
    port = free_port()
    raw["listener"].update(port=port, public_url=f"http://127.0.0.1:{port}")
    raw["store"]["path"] = str(tmp_path / "store.db")
    raw["drop"]["path"] = str(tmp_path / "drop")
    # Two ends a test cannot wait out: a stop overdue after 0.1 s, a file settling for an hour.
    raw["daemon"]["shutdown_grace_s"] = 60
    raw["drop"]["settle_ms"] = 20
    for provider in raw["providers"].values():
        provider["base_url"] = "http://127.0.0.1:9"  # nobody listens: no DNS, no waiting
    daemon = DaemonProcess(tmp_path, toml_text(raw), env=SECRETS)
    try:
        daemon.start()
        documents = [{"email": "a@x.com", "updated_at": 1_700_000_000_000}]
        drop_json(tmp_path / "drop/contacts", "a", documents)
        wait_until(
            lambda: query(tmp_path / "store.db", "SELECT status FROM files") == [("done",)],
            what="the file ingested",
        )
        assert daemon.process is not None and daemon.process.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.close()
