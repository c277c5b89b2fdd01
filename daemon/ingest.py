"""Drop-file ingest: claim, stream-parse, merge in batches, and file the result.

A file ``<drop>/<collection>/<name>.json|.ndjson`` is claimed by renaming it into
``<collection>/.processing/``; its sha256 goes into the ``files`` ledger; its
documents are parsed as a stream (``daemon.jsonstream``, a block at a time)
and merged in batches, each batch in one transaction together with the file's
progress, so a crash resumes after the last committed batch without applying
anything twice. The policy is per document: good documents are applied, bad ones
are listed (index and reason) in ``.quarantine/<name>.error.json`` and the file is
quarantined if it had any. The same content dropped again changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sqlite3
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import anyio
import orjson
import structlog
from dropsync.daemon.clock import now_ms
from dropsync.daemon.config import Config
from dropsync.daemon.parse import (
    PARSER_ARGS,
    DocumentFailure,
    ParsedBatch,
    ParseJob,
    ParserProcessError,
    parse_batches,
    read_message,
)
from dropsync.store import files as ledger
from dropsync.store.handle import Store
from dropsync.store.merge import Change, MergeResult, apply_changes

log = structlog.get_logger(__name__)

IGNORED_SUFFIXES = (".tmp", ".part")
PROCESSING, DONE, QUARANTINE = ".processing", ".done", ".quarantine"
MAX_LISTED_ERRORS = 1000
_READ_CHUNK = 1 << 20


def is_ignored(path: Path) -> bool:
    """Names starting with ``.`` or ending in ``.tmp``/``.part`` wait until renamed."""
    return path.name.startswith(".") or path.name.endswith(IGNORED_SUFFIXES)


@dataclass(slots=True)
class IngestReport:
    """The outcome of one file, as recorded in the ledger."""

    file_id: int
    collection: str
    name: str
    status: str  # done | quarantined
    path: Path
    applied: int = 0
    unchanged: int = 0
    rejected: int = 0
    duplicate_of: int | None = None
    failures: list[DocumentFailure] = field(default_factory=list)
    providers: set[str] = field(default_factory=set)

    def as_json(self) -> dict[str, Any]:
        """A JSON-able summary (the CLI prints it)."""
        return {
            "file_id": self.file_id,
            "collection": self.collection,
            "name": self.name,
            "status": self.status,
            "path": str(self.path),
            "applied": self.applied,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "duplicate_of": self.duplicate_of,
            "errors": [f.as_json() for f in self.failures[:MAX_LISTED_ERRORS]],
        }


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class Ingestor:
    """Ingests drop files through the store; one instance per daemon (or CLI run)."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config

    def collection_of(self, path: Path) -> str | None:
        """The collection of a file directly inside ``<drop>/<collection>/``, else None."""
        try:
            relative = path.resolve().relative_to(self.config.drop_path.resolve())
        except ValueError:
            return None
        parts = relative.parts
        if len(parts) != 2 or parts[0].startswith("."):
            return None
        return parts[0]

    async def ingest_dropped(self, path: Path) -> IngestReport | None:
        """Claim and ingest a file sitting in a collection folder (None if it vanished)."""
        collection = self.collection_of(path)
        if collection is None or is_ignored(path) or not path.is_file():
            return None
        claimed = _unique(path.parent / PROCESSING / path.name)
        claimed.parent.mkdir(exist_ok=True)
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None  # taken by another ingest (or deleted) meanwhile
        return await self._ingest(claimed, collection, path.name, move=True)

    async def ingest_in_place(self, path: Path, collection: str) -> IngestReport:
        """Ingest a file outside the drop folder without moving it (``dropsync ingest``)."""
        return await self._ingest(path, collection, path.name, move=False)

    async def recover(self) -> list[IngestReport]:
        """Finish files a previous run left in ``.processing/`` (after a crash or kill)."""
        reports: list[IngestReport] = []
        drop = self.config.drop_path
        if not drop.is_dir():
            return reports
        for processing in sorted(drop.glob(f"*/{PROCESSING}")):
            for path in sorted(processing.iterdir()):
                if path.is_file() and not is_ignored(path):
                    collection = processing.parent.name
                    log.info("ingest_resume", collection=collection, file=path.name)
                    try:
                        reports.append(
                            await self._ingest(
                                path, collection, path.name, move=True, recovering=True
                            )
                        )
                    except Exception:
                        log.exception("ingest_failed", file=str(path))
        return reports

    async def _ingest(
        self, path: Path, collection: str, name: str, *, move: bool, recovering: bool = False
    ) -> IngestReport:
        config = self.config
        # In a thread: hashing a 2 GB file takes seconds, and the event loop must not wait.
        sha256, size = await anyio.to_thread.run_sync(file_digest, path)
        async with self.store.read() as db:
            previous = await ledger.latest_with_content(db, collection, sha256)
        if previous is not None and recovering and previous.status != "processing":
            # Killed between the ledger's final update and the rename: finish the move.
            final = Path(previous.path)
            if not final.exists():
                os.rename(path, final)
                return IngestReport(
                    previous.id,
                    collection,
                    name,
                    previous.status,
                    final,
                    previous.docs_applied,
                    previous.docs_unchanged,
                    previous.docs_rejected,
                )
        if previous is not None and previous.status == "processing" and move:
            file_id = previous.id
            resume_from = previous.docs_seen
            counts = [previous.docs_applied, previous.docs_unchanged, previous.docs_rejected]
            async with self.store.write() as db:
                await ledger.move_file(db, file_id, str(path))
        else:
            duplicate = previous.id if previous is not None and previous.status == "done" else None
            async with self.store.write() as db:
                file_id = await ledger.insert_file(
                    db,
                    collection=collection,
                    name=name,
                    path=str(path),
                    sha256=sha256,
                    size=size,
                    status="processing",
                    now=now_ms(),
                    duplicate_of=duplicate,
                )
            if duplicate is not None:
                log.info(
                    "ingest_duplicate", collection=collection, file=name, duplicate_of=duplicate
                )
                report = await self._file_away(
                    path, file_id, collection, name, "done", [], counts=(0, 0, 0), move=move
                )
                report.duplicate_of = duplicate
                return report
            resume_from, counts = 0, [0, 0, 0]
        job = ParseJob(
            path,
            config.collection(collection),
            file_id=file_id,
            resume_from=resume_from,
            batch_size=config.ingest_batch,
            max_skew_ms=config.max_clock_skew_ms,
            now_ms=now_ms(),
            limits=config.json_limits,
        )
        routes = config.routes()
        failures: list[DocumentFailure] = []
        providers: set[str] = set()
        # The store's thread commits one batch while the next is parsed.
        send, receive = anyio.create_memory_object_stream[tuple[list[Change], int, int]](0)

        async def commit_batches() -> None:
            async with receive:
                async for changes, seen, rejected in receive:
                    merged = await self.store.transact(
                        _commit_batch, file_id, changes, routes, seen, counts, rejected
                    )
                    providers.update(merged.providers)

        in_parser_process = size >= config.parser_process_min_bytes
        batches = parse_in_process(job) if in_parser_process else parse_here(job)
        async with anyio.create_task_group() as tg, aclosing(batches):
            tg.start_soon(commit_batches)
            async with send:
                async for parsed in batches:
                    failures.extend(parsed.failures)
                    await send.send((parsed.changes, parsed.seen, parsed.rejected))
        status = "quarantined" if failures else "done"
        report = await self._file_away(
            path,
            file_id,
            collection,
            name,
            status,
            failures,
            counts=(counts[0], counts[1], counts[2]),
            move=move,
        )
        report.providers = providers
        return report

    async def _file_away(
        self,
        path: Path,
        file_id: int,
        collection: str,
        name: str,
        status: str,
        failures: list[DocumentFailure],
        *,
        counts: tuple[int, int, int],
        move: bool = True,
    ) -> IngestReport:
        applied, unchanged, rejected = counts
        final = path
        error = None
        if failures:
            first = failures[0]
            error = f"{len(failures)} document(s) rejected; first: #{first.index}: {first.reason}"
        if move:
            folder = path.parent.parent / (QUARANTINE if status == "quarantined" else DONE)
            folder.mkdir(exist_ok=True)
            final = path if path.parent == folder else _unique(folder / name)
        report = IngestReport(
            file_id,
            collection,
            name,
            status,
            final,
            applied,
            unchanged,
            rejected,
            failures=failures,
        )
        if status == "quarantined" and move:
            receipt = final.with_name(final.name + ".error.json")
            receipt.write_bytes(
                orjson.dumps(
                    {
                        "file": name,
                        "collection": collection,
                        "file_id": file_id,
                        "status": "quarantined",
                        "policy": "per-document: every document not listed "
                        "here was merged (applied or already current)",
                        "applied": applied,
                        "unchanged": unchanged,
                        "rejected": len(failures),
                        "errors": [f.as_json() for f in failures[:MAX_LISTED_ERRORS]],
                        "errors_not_listed": max(0, len(failures) - MAX_LISTED_ERRORS),
                    },
                    option=orjson.OPT_INDENT_2,
                )
            )
        async with self.store.write() as db:
            await ledger.finish_file(
                db, file_id, status=status, path=str(final), error=error, now=now_ms()
            )
        if final != path:
            os.rename(path, final)
        event = "file_quarantined" if status == "quarantined" else "file_ingested"
        log.info(
            event,
            collection=collection,
            file=name,
            file_id=file_id,
            applied=applied,
            unchanged=unchanged,
            rejected=rejected,
            error=error,
        )
        return report


async def parse_here(job: ParseJob) -> AsyncGenerator[ParsedBatch, None]:
    """The file's batches, parsed in this process (the event loop runs between batches)."""
    for parsed in parse_batches(job):
        yield parsed


async def parse_in_process(job: ParseJob) -> AsyncGenerator[ParsedBatch, None]:
    """The file's batches, parsed by a parser process (see ``daemon.parse``).

    Should the parser not start, or die, the rest of the file is parsed here, from
    the last batch received (and a warning says so): a big file never waits for a
    restart because of its parser.
    """
    seen = job.resume_from
    try:
        async with aclosing(_parse_by_parser(job)) as batches:
            async for parsed in batches:
                seen = parsed.seen
                yield parsed
        return
    except ParserProcessError as exc:
        log.warning(
            "parser_process_failed", file=job.path.name, error=str(exc), parse_here_from=seen
        )
    async for parsed in parse_here(replace(job, resume_from=seen)):
        # Documents before `seen` were passed on already, their failures included.
        yield parsed._replace(failures=[f for f in parsed.failures if f.index >= seen])


async def _parse_by_parser(job: ParseJob) -> AsyncGenerator[ParsedBatch, None]:
    """The batches of a parser process; ParserProcessError if it cannot start or dies.

    The pipe's buffer is the only queue: the parser waits while the daemon is a
    batch behind, so memory does not grow with the file.
    """
    try:
        process, stream = await anyio.to_thread.run_sync(_start_parser)
    except OSError as exc:
        raise ParserProcessError(f"cannot start a parser process: {exc}") from None
    assert process.stdin is not None
    try:
        try:
            with process.stdin:
                process.stdin.write(pickle.dumps(job))
        except OSError as exc:  # it died before reading its job
            raise ParserProcessError(f"the parser process did not take its job: {exc}") from None
        while True:
            try:
                # Decoded in the reading thread: the event loop only passes batches on.
                parsed = await anyio.to_thread.run_sync(read_message, stream)
            except ParserProcessError as exc:  # it died, maybe mid-batch
                process.kill()
                code = await anyio.to_thread.run_sync(process.wait)
                raise ParserProcessError(
                    f"the parser process ended early (exit code {code}: {exc})"
                ) from None
            if parsed is None:
                return
            yield parsed
    finally:
        if process.poll() is None:
            process.kill()
        stream.close()
        with anyio.CancelScope(shield=True):  # reaped even when the ingest is cancelled
            await anyio.to_thread.run_sync(process.wait)


def _start_parser() -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """A new parser process and the pipe its batches come through (see ``daemon.parse``)."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, *PARSER_ARGS, str(write_end)],
            stdin=subprocess.PIPE,
            pass_fds=(write_end,),
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return process, os.fdopen(read_end, "rb")


def _unique(path: Path) -> Path:
    """``path`` if free, else ``stem-N.suffix`` with the first free N."""
    if not path.exists():
        return path
    stem, suffix = path.stem, path.suffix
    number = 1
    while True:
        candidate = path.with_name(f"{stem}-{number}{suffix}")
        if not candidate.exists():
            return candidate
        number += 1


def _commit_batch(
    conn: sqlite3.Connection,
    file_id: int,
    batch: list[Change],
    routes: dict[str, tuple[str, ...]],
    seen: int,
    counts: list[int],
    rejected: int,
) -> MergeResult:
    """One transaction: merge a batch and record the file's progress with it."""
    merged = apply_changes(conn, batch, routes, now=now_ms())
    counts[0] += merged.applied
    counts[1] += merged.unchanged
    counts[2] += rejected
    ledger.record_progress(
        conn, file_id, docs_seen=seen, applied=counts[0], unchanged=counts[1], rejected=counts[2]
    )
    return merged
