"""The daemon as a real subprocess against input meant to break it: it rejects, never exits.

Deeply nested drop files, inbox text that is not UTF-8, integers past 64 bits on
their way from a drop file and an inbox row to a provider.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.store.handle import Store
from starlette.requests import Request
from starlette.responses import Response

from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these
TS = 1_700_000_000_000
BIG = 123456789012345678901234567890
NESTED = b"[" * 100_000  # 100 KB: the file that took 24 GB


def config_text(tmp_path: Path, provider_url: str | None = None) -> str:
    text = f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
settle_ms = 10
[daemon]
inbox_poll_s = 0.1
[collections.contacts]
key = "email"
timestamp = "updated_at"
"""
    if provider_url is None:
        return text
    return (
        text
        + f"""providers = ["crm"]
[providers.crm]
kind = "crm"
base_url = "{provider_url}"
account_id = "acc_1"
secret_env = "CRM_TOKEN"
backoff_base_s = 0.05
backoff_cap_s = 0.5
"""
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path, config_text(tmp_path))
    yield process
    process.close()


def drop_file(folder: Path, name: str, content: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tmp").write_bytes(content)
    (folder / f"{name}.tmp").rename(folder / name)


def pending_done(db: Path) -> list[tuple[Any, ...]] | None:
    """The inbox's (key bytes, status, reason) once no row is pending."""
    if query(db, "SELECT 1 FROM inbox WHERE status = 'pending'"):
        return None
    return query(db, "SELECT CAST(key AS BLOB), status, reason FROM inbox ORDER BY id")


def test_a_file_of_100000_nested_brackets_is_quarantined_and_the_daemon_goes_on(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon.start()
    folder = tmp_path / "drop/contacts"
    drop_file(folder, "nested.json", NESTED)
    receipt = folder / ".quarantine/nested.json.error.json"
    # The receipt is written first, the file moved last.
    wait_until((folder / ".quarantine/nested.json").exists, what="the file in .quarantine")
    errors = orjson.loads(receipt.read_bytes())["errors"]
    assert "nested more than 64 levels deep (drop.max_depth)" in errors[0]["reason"]
    assert not list((folder / ".processing").iterdir())
    drop_file(folder, "good.json", b'{"email": "g@example.com", "updated_at": 1700000000005}')
    wait_until(
        lambda: query(tmp_path / "store.db", "SELECT key FROM records") == [("g@example.com",)],
        what="the good file's record",
    )
    assert daemon.process is not None and daemon.process.poll() is None
    assert not [e for e in daemon.events() if e.get("level") in ("error", "critical")]
    assert daemon.stop() == 0


# ``dropsync ingest`` as ``python -m``, writing its peak resident set (VmHWM: this process
# image's own, unlike the rusage of a child forked from a big test process) to PEAK_FILE.
MEASURED_CLI = (
    "import os, runpy\n"
    "try:\n"
    "    runpy.run_module('dropsync.daemon.cli', run_name='__main__')\n"
    "finally:\n"
    "    with open('/proc/self/status') as status:\n"
    "        peak = next(line for line in status if line.startswith('VmHWM:'))\n"
    "    with open(os.environ['PEAK_FILE'], 'w') as out:\n"
    "        out.write(peak.split()[1])\n"
)


def test_dropsync_ingest_of_that_file_ends_with_the_reason_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "dropsync.toml"
    config.write_text(config_text(tmp_path))
    nested = tmp_path / "elsewhere/nested.json"
    nested.parent.mkdir()
    nested.write_bytes(NESTED)

    async def create_store() -> None:  # only `run` creates a store; `ingest` needs one
        async with await Store.open(tmp_path / "store.db"):
            pass

    anyio.run(create_store)
    peak_file = tmp_path / "peak_kb"
    process = subprocess.Popen(
        [sys.executable, "-c", MEASURED_CLI, "ingest", str(nested)],
        env={**os.environ, "DROPSYNC_CONFIG": str(config), "PEAK_FILE": str(peak_file)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # A guard, not the measure: a parser whose cost grows with the nesting (24 GB once)
    # fails fast under this instead of taking the machine's memory.
    resource.prlimit(process.pid, resource.RLIMIT_AS, (4 << 30, 4 << 30))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr.decode(errors="replace")[-2000:]
    assert b"Traceback" not in stderr and b"MemoryError" not in stderr
    report = orjson.loads(stdout.splitlines()[-1])
    assert report["status"] == "quarantined"
    assert "nested more than 64 levels deep" in report["errors"][0]["reason"]
    # The daemon's memory target (ingest peak RSS <= 100 MB, bench/RESULTS.md) holds.
    peak_mb = int(peak_file.read_text()) / 1024
    assert peak_mb <= 100, f"peak RSS {peak_mb:.0f} MB"


def test_inbox_text_that_is_not_utf8_is_rejected_and_the_daemon_stays_up_across_a_restart(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon.start()
    db = tmp_path / "store.db"
    bad = [
        f"('contacts', 'body', 'upsert', CAST(X'7BFF7D' AS TEXT), {TS})",
        f"('contacts', CAST(X'6BFF' AS TEXT), 'upsert', '{{}}', {TS})",
        f"(CAST(X'63FF' AS TEXT), 'collection', 'upsert', '{{}}', {TS})",
        f"('contacts', 'op', CAST(X'7570FF' AS TEXT), '{{}}', {TS})",
        "('contacts', 'updated_at', 'upsert', '{}', CAST(X'32FF' AS TEXT))",
    ]

    def insert(*rows: str) -> None:
        raw = sqlite3.connect(db, timeout=10)
        for values in rows:
            raw.execute(
                f"INSERT INTO inbox (collection, key, op, body, updated_at) VALUES {values}"
            )
        raw.commit()
        raw.close()

    insert(*bad, f"('contacts', 'good', 'upsert', '{{\"email\": \"good\"}}', {TS})")
    rows = wait_until(lambda: pending_done(db), what="inbox processed")
    assert [status for _, status, _ in rows] == ["rejected"] * 5 + ["applied"]
    columns = ["body", "key", "collection", "op", "updated_at"]
    for (_, _, reason), column in zip(rows[:5], columns, strict=True):
        assert reason.startswith(column) and "not valid UTF-8" in reason, reason
    assert daemon.stop() == 0
    daemon.start()  # a restart finds nothing pending and more bad rows change nothing
    insert(bad[0], f"('contacts', 'later', 'upsert', '{{\"email\": \"later\"}}', {TS})")
    rows = wait_until(lambda: pending_done(db), what="inbox processed after the restart")
    assert [status for _, status, _ in rows[-2:]] == ["rejected", "applied"]
    assert query(db, "SELECT key FROM records ORDER BY key") == [("good",), ("later",)]
    assert daemon.process is not None and daemon.process.poll() is None
    assert daemon.stop() == 0


class RawCrmEmulator(CrmEmulator):
    """The CRM emulator, keeping each request's body exactly as it arrived."""

    def __init__(self, accounts: dict[str, str]) -> None:
        super().__init__(accounts)
        self.raw_bodies: list[bytes] = []

    async def handle(self, request: Request, apply: Any) -> Response:
        body = await request.body()
        with self.lock:
            self.raw_bodies.append(body)
        return await super().handle(request, apply)


def test_integers_past_64_bits_reach_the_provider_with_every_digit(tmp_path: Path) -> None:
    emulator = RawCrmEmulator({"acc_1": "crm-token"})
    with EmulatorServer(emulator) as server:
        daemon = DaemonProcess(
            tmp_path, config_text(tmp_path, server.base_url), env={"CRM_TOKEN": "crm-token"}
        )
        try:
            daemon.start()
            drop_file(
                tmp_path / "drop/contacts",
                "big.json",
                b'[{"email": "file@example.com", "updated_at": 1700000000005, "n": %d}]' % BIG,
            )
            raw = sqlite3.connect(tmp_path / "store.db", timeout=10)
            raw.execute(
                "INSERT INTO inbox (collection, key, op, body, updated_at) VALUES "
                "('contacts', 'sql@example.com', 'upsert', ?, ?)",
                (f'{{"email": "sql@example.com", "n": -{BIG}}}', TS),
            )
            raw.commit()
            raw.close()
            wait_until(lambda: len(emulator.contacts) == 2, what="both contacts at the provider")
            assert daemon.stop() == 0
        finally:
            daemon.close()
    sent = b"".join(emulator.raw_bodies)
    assert b'"n":%d' % BIG in sent and b'"n":-%d' % BIG in sent
    bodies = dict(query(tmp_path / "store.db", "SELECT key, body FROM records"))
    assert f'"n":{BIG}' in bodies["file@example.com"]
    assert f'"n":-{BIG}' in bodies["sql@example.com"]
