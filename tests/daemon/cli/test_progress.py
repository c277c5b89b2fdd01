"""``dropsync ingest BIGFILE`` on a terminal shows a progress bar; elsewhere plain log lines."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import orjson
from dropsync.daemon.cli.progress import ProgressBar
from dropsync.store.handle import Store

INGEST = [sys.executable, "-m", "dropsync.daemon.cli", "ingest"]


def make_store_and_file(tmp_path: Path, documents: int) -> tuple[Path, Path]:
    config = tmp_path / "dropsync.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "drop"}"\n'
        '[collections.users]\nkey = "id"\ntimestamp = "at"\ntimestamp_unit = "ms"\n'
    )

    async def create() -> None:
        async with await Store.open(tmp_path / "s.db"):
            pass

    anyio.run(create)
    big = tmp_path / "big.ndjson"
    big.write_bytes(
        b"".join(
            orjson.dumps({"id": i, "at": 1000 + i, "pad": "x" * 40}) + b"\n"
            for i in range(documents)
        )
    )
    return config, big


def test_on_a_terminal_ingest_draws_a_progress_bar_on_stderr(tmp_path: Path) -> None:
    config, big = make_store_and_file(tmp_path, 60_000)
    leader, follower = os.openpty()
    seen: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    done = subprocess.run(
        [*INGEST, "--config", str(config), "--collection", "users", str(big)],
        stdout=subprocess.PIPE,
        stderr=follower,
        check=False,
        timeout=120,
    )
    os.close(follower)
    reader.join(timeout=10)
    os.close(leader)
    assert done.returncode == 0
    assert orjson.loads(done.stdout)["applied"] == 60_000  # stdout stays data
    drawn = b"".join(seen).decode(errors="replace")
    assert "\r\x1b[K" in drawn  # redrawn in place
    assert "big.ndjson: " in drawn and " documents (" in drawn and "/s)" in drawn


def test_elsewhere_ingest_writes_plain_log_lines(tmp_path: Path) -> None:
    config, big = make_store_and_file(tmp_path, 100)
    done = subprocess.run(
        [*INGEST, "--config", str(config), "--collection", "users", str(big)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0
    assert "\x1b" not in done.stderr and "\r" not in done.stderr
    events = [orjson.loads(line)["event"] for line in done.stderr.splitlines()]
    assert "file_ingested" in events


def test_the_bar_shows_bytes_percent_time_left_and_documents_per_second(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b"x" * 2000)
    bar = ProgressBar(path, open(os.devnull, "w"))  # noqa: SIM115
    bar.line(1500, 0)  # hashing, then the parse starts again at the beginning
    text = bar.line(500, 1234)
    assert text.startswith("f.json: ingesting [######------------------]  25% 500 B/2.0 KB")
    assert " left, 1,234 documents (" in text and "/s)" in text
