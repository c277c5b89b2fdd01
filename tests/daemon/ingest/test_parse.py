"""Parsing drop files into batches, in the daemon and in a parser process."""

from __future__ import annotations

import io
import marshal
import os
import signal
import struct
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path

import anyio
import orjson
import pytest
from dropsync.daemon.config import CollectionConfig
from dropsync.daemon.errors import ParserProcessError
from dropsync.daemon.ingest import parser as parser_module
from dropsync.daemon.ingest.parse import ParsedBatch, ParseJob, parse_batches, parse_here
from dropsync.daemon.ingest.parser import (
    parse_in_process,
    read_message,
)
from structlog.testing import capture_logs

pytestmark = pytest.mark.anyio
NOW = 1_700_000_000_000


def envelope(i: int) -> dict[str, object]:
    return {"data": {"id": i, "email": f"u{i}@x"}, "createdAt": 1, "updatedAt": 1000 + i}


def job(path: Path, *, resume_from: int = 0, batch_size: int = 3) -> ParseJob:
    return ParseJob(
        path,
        CollectionConfig(name="users", timestamp_unit="ms"),  # its small times are ms
        file_id=7,
        resume_from=resume_from,
        batch_size=batch_size,
        max_skew_ms=60_000,
        now_ms=NOW,
    )


def parser_processes() -> list[int]:
    """PIDs of this process's children that run the parser."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"parser_main" in cmdline:
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """True once ``pid`` has exited and been reaped."""
    return not Path(f"/proc/{pid}").exists()


async def collect(batches: AsyncGenerator[ParsedBatch, None]) -> list[ParsedBatch]:
    return [batch async for batch in batches]


@pytest.mark.parametrize("resume_from", [0, 4])
async def test_parser_process_yields_exactly_what_parsing_here_does(
    tmp_path: Path, resume_from: int
) -> None:
    docs: list[object] = [envelope(i) for i in range(9)]
    docs[2] = {"data": {"id": 2}, "updatedAt": "last tuesday"}
    docs[6] = ["not", "an", "object"]
    path = tmp_path / "users.json"
    path.write_bytes(orjson.dumps(docs))
    here = await collect(parse_here(job(path, resume_from=resume_from)))
    there = await collect(parse_in_process(job(path, resume_from=resume_from)))
    assert there == here
    assert here == list(parse_batches(job(path, resume_from=resume_from)))
    changes = [c for batch in there for c in batch.changes]
    assert [c.doc_index for c in changes] == [i for i in (0, 1, 3, 4, 5, 7, 8) if i >= resume_from]
    assert all(c.file_id == 7 and c.origin == "drop" for c in changes)
    # Failures before resume_from are listed again for the receipt but not counted again.
    assert [f.index for batch in there for f in batch.failures] == [2, 6]
    assert sum(batch.rejected for batch in there) == (2 if resume_from == 0 else 1)
    assert there[-1].seen == 9


async def test_an_error_in_the_parser_process_reaches_the_daemon(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await collect(parse_in_process(job(tmp_path / "gone.json")))


async def test_if_the_parser_dies_the_rest_of_the_file_is_parsed_here(tmp_path: Path) -> None:
    docs: list[object] = [envelope(i) for i in range(20_000)]
    docs[150] = {"data": {"id": 150}, "updatedAt": "soon"}  # received before the parser dies
    docs[19_000] = ["not an object"]  # found after, by the daemon itself
    path = tmp_path / "users.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in docs))
    received: list[ParsedBatch] = []
    with capture_logs() as logs:
        async with aclosing(parse_in_process(job(path, batch_size=100))) as batches:
            async for parsed in batches:
                received.append(parsed)
                if len(received) == 2:
                    [parser] = parser_processes()
                    os.kill(parser, signal.SIGKILL)
    assert gone(parser)
    [warning] = [e for e in logs if e["event"] == "parser_process_failed"]
    assert warning["log_level"] == "warning" and warning["parse_here_from"] >= 200
    # Every document exactly once, every bad one listed once: as if nothing had happened.
    indexes = [c.doc_index for batch in received for c in batch.changes]
    assert indexes == [i for i in range(20_000) if i not in (150, 19_000)]
    assert [f.index for batch in received for f in batch.failures] == [150, 19_000]
    assert sum(batch.rejected for batch in received) == 2
    assert received[-1].seen == 20_000


async def test_a_parser_that_cannot_start_leaves_the_parsing_to_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "users.json"
    path.write_bytes(orjson.dumps([envelope(i) for i in range(7)]))

    def refused() -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(parser_module, "_start_parser", refused)
    with capture_logs() as logs:
        batches = await collect(parse_in_process(job(path)))
    assert batches == await collect(parse_here(job(path)))
    assert [e["event"] for e in logs] == ["parser_process_failed"]
    assert "Operation not permitted" in logs[0]["error"]


async def test_closing_early_stops_the_parser_process(tmp_path: Path) -> None:
    path = tmp_path / "users.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(envelope(i)) for i in range(20_000)))
    batches = parse_in_process(job(path, batch_size=100))
    await anext(batches)
    [parser] = parser_processes()
    await batches.aclose()
    assert gone(parser)


@pytest.mark.parametrize(
    "stream",
    [
        b"",
        b"B\x10\x00",
        b"B\x10\x00\x00\x00short",
        b"Z\x00\x00\x00\x00",
        b"B\x03\x00\x00\x00xyz",
        b"E\x03\x00\x00\x00xyz",
    ],
    ids=["empty", "cut-header", "cut-payload", "unknown-tag", "bad-batch", "bad-error"],
)
def test_a_garbled_stream_is_a_parser_failure(stream: bytes) -> None:
    with pytest.raises(ParserProcessError):
        read_message(io.BytesIO(stream))


def test_a_parser_of_another_version_is_a_parser_failure() -> None:
    # After an upgrade on disk, a new parser may send rows of another shape.
    payload = marshal.dumps(
        ([("users", "k", "{}", 1, False, "drop", "d", 7, 0, None, "x")], 1, [], 0)
    )
    stream = io.BytesIO(struct.pack("<cI", b"B", len(payload)) + payload)
    with pytest.raises(ParserProcessError, match="another version"):
        read_message(stream)


async def test_cancelling_the_ingest_stops_and_reaps_the_parser(tmp_path: Path) -> None:
    path = tmp_path / "users.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(envelope(i)) for i in range(20_000)))
    parsers: list[int] = []
    with anyio.CancelScope() as scope:
        async with aclosing(parse_in_process(job(path, batch_size=100))) as batches:
            async for _ in batches:
                parsers = parsers or parser_processes()
                scope.cancel()
    assert scope.cancelled_caught
    assert len(parsers) == 1 and gone(parsers[0])


async def test_the_working_directory_cannot_shadow_the_parser_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 9 item 18: a `dropsync.py` or `daemon.py` where the daemon was started must not be
    # what the parser process imports (python -P keeps the working directory off its path).
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    for name in ("dropsync.py", "daemon.py"):
        (workdir / name).write_text("raise SystemExit('the working directory was imported')\n")
    monkeypatch.chdir(workdir)
    path = tmp_path / "users.json"
    path.write_bytes(orjson.dumps([envelope(i) for i in range(5)]))
    with capture_logs() as logs:
        there = await collect(parse_in_process(job(path)))
    assert [e["event"] for e in logs if e["event"] == "parser_process_failed"] == []
    assert there == await collect(parse_here(job(path)))
