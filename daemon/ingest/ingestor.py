"""Drop-file ingest: claim, stream-parse, merge in batches, and file the result.

A file ``<drop>/<collection>/<name>.json|.ndjson`` is claimed by locking it and
renaming it into ``<collection>/.processing/`` (see ``daemon.ingest.dropfiles``: one ingest
owns a file at a time); it gets its ``files`` ledger row at once, then its sha256; its
documents are parsed as a stream (``daemon.ingest.jsonstream``, a block at a time) and
merged in batches, each batch in one transaction together with the file's progress,
so a crash resumes after the last committed batch without applying anything twice.
The policy is per document: good documents are applied, bad ones are listed (index
and reason) in ``.quarantine/<name>.error.json`` and the file is quarantined if it had
any. The same content dropped again changes nothing. Anything in a collection folder
that is not a regular file (a link, a FIFO, a directory, ...), and a file whose name
(or collection folder's name) is not UTF-8, is quarantined unread; an entry that cannot
be moved is left where it is, said once in the log.

A busy store or a full disk pauses the file's ingest where it is (the store and
``_disk`` wait and try again); anything else that interrupts it leaves the file in
``.processing/`` with its row, and ``daemon.ingest.recovery`` takes it up again.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import aclosing, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson
import structlog
from dropsync.store import files as ledger
from dropsync.store.handle import PauseListener, Store, retrying
from dropsync.store.merge import Change, MergeResult, apply_changes

from .. import metrics
from ..clock import now_ms
from ..config import Config
from ..errors import FileTaken
from ..names import is_text, shown
from ..process.health import file_condition
from .dropfiles import (
    DONE,
    PROCESSING,
    QUARANTINE,
    RECEIPT_SUFFIX,
    Claim,
    Unreadable,
    claim_in_place,
    fits_receipt,
    free_name,
    is_ignored,
    lock_dropped,
    own_folder,
    processing_place,
    rename_noreplace,
    write_receipt,
)
from .parse import DocumentFailure, ParseJob, parse_here
from .parser import parse_in_process

log = structlog.get_logger(__name__)

# A file this big is ingested with the store's bulk page cache (``Store.bulk``): the larger
# cache pays for b-tree inserts by the hundred thousand, and smaller files never touch it, so
# the daemon's memory under steady traffic stays where it is.
BULK_MIN_BYTES = 64 << 20

__all__ = ["DONE", "PROCESSING", "QUARANTINE", "IngestReport", "Ingestor", "is_ignored"]

MAX_LISTED_ERRORS = 1000
VANISHED = (
    "the file disappeared before its ingest finished (deleted or moved by someone else); "
    "documents merged before that stay merged"
)
_READ_CHUNK = 1 << 20
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
T = TypeVar("T")


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
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-able summary (the CLI prints it)."""
        return {
            "file_id": self.file_id,
            "collection": shown(self.collection),
            "name": shown(self.name),
            "status": self.status,
            "path": shown(str(self.path)),
            "applied": self.applied,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "duplicate_of": self.duplicate_of,
            "errors": [f.as_json() for f in self.failures[:MAX_LISTED_ERRORS]],
        }


def file_digest(fd: int) -> tuple[str, int]:
    """sha256 (hex) and size of the open file ``fd``, read in chunks from its start."""
    digest = hashlib.sha256()
    size = 0
    offset = 0
    while chunk := os.pread(fd, _READ_CHUNK, offset):
        digest.update(chunk)
        size += len(chunk)
        offset += len(chunk)
    return digest.hexdigest(), size


class Ingestor:
    """Ingests drop files through the store; one instance per daemon (or CLI run)."""

    def __init__(self, store: Store, config: Config, pauses: PauseListener | None = None) -> None:
        self.store = store
        self.config = config
        self.pauses = pauses
        # Told of each committed batch (the daemon wakes the providers it queued for), so
        # their records go out while the file is still being filed away, or still parsed.
        self.on_merge: Callable[[MergeResult], None] | None = None
        self._left: set[tuple[str, int, int]] = set()  # entries that could not be moved
        self._held: dict[int, Claim] = {}  # ledger rows whose file a claim of ours holds

    def holds(self, file_id: int) -> bool:
        """True while a claim of this process holds the file of ledger row ``file_id``.

        The recovery sweep asks this before finishing a row whose file is nowhere: a file
        deleted under a live ingest can no longer be seen locked by its path, and its row
        is that ingest's to finish (``file_vanished``), not the sweep's to forget.
        """
        claim = self._held.get(file_id)
        return claim is not None and claim.fd >= 0  # a closed claim released its lock

    def reserved_names(self, folder: Path) -> set[str]:
        """The names live ingests of this process hold in collection folder ``folder``'s
        own folders, their files there or not (``free_name`` gives none of them).

        Asked at each claim, it forgets the claims closed since (their ingests are over).
        """
        for file_id, claim in list(self._held.items()):
            if claim.fd < 0:
                del self._held[file_id]
        return {claim.path.name for claim in self._held.values() if claim.folder == folder}

    def collection_of(self, path: Path) -> str | None:
        """The collection of an entry directly inside ``<drop>/<collection>/``, else None.

        The entry itself is not resolved (a link is a link, to be quarantined), nor is a
        collection folder that is a link to elsewhere taken for one.
        """
        drop = Path(os.path.abspath(self.config.drop_path))
        absolute = Path(os.path.abspath(path))
        try:
            parts = absolute.relative_to(drop).parts
        except ValueError:
            try:
                parts = absolute.parent.resolve().relative_to(drop.resolve()).parts
                parts = (*parts, absolute.name)
            except (ValueError, OSError):
                return None
        if len(parts) != 2 or parts[0].startswith("."):
            return None
        if os.path.islink(drop / parts[0]):
            return None
        return parts[0]

    async def disk(self, operation: Callable[[], T]) -> T:
        """A file operation; on a full disk it waits and tries again (``disk full``)."""
        if self.pauses is None:
            return operation()

        async def attempt() -> T:
            return operation()

        return await retrying(attempt, self.pauses, "ingest", file_condition)

    async def ingest_dropped(self, path: Path) -> IngestReport | None:
        """Claim and ingest an entry of a collection folder (None if another ingest took it)."""
        collection = self.collection_of(path)
        if collection is None or is_ignored(path):
            return None
        if not (is_text(path.name) and is_text(collection)):
            reason = not_utf8_reason(path, collection)
            return await self.quarantine_unreadable(path, collection, reason)
        try:
            claim = lock_dropped(path, collection)
        except Unreadable as exc:
            return await self.quarantine_unreadable(path, collection, str(exc))
        except (FileNotFoundError, NotADirectoryError):
            return None  # the collection folder went away meanwhile
        if claim is None:
            return None
        try:
            file_id = await self._claim(claim)
            if file_id is None:
                return None
            return await self.ingest_claimed(claim, file_id)
        finally:
            claim.close()

    async def _claim(self, claim: Claim) -> int | None:
        """Give a locked file its row, then move it into ``.processing/`` (None: it vanished).

        The row comes first: should the store be busy or the disk full, the file waits
        where it was dropped, and no file is in ``.processing/`` without a row.
        """
        reserved = self.reserved_names(claim.path.parent)
        place = await self.disk(partial(processing_place, claim, reserved))
        file_id = await self.new_row(claim, place)
        while True:
            try:
                await self.disk(lambda: rename_noreplace(claim.path, place))  # noqa: B023
                break
            except FileExistsError:  # another ingest took that name meanwhile
                reserved = self.reserved_names(claim.path.parent)
                was, place = place, await self.disk(partial(processing_place, claim, reserved))
                await self._move_row(file_id, str(was), place)
            except (FileNotFoundError, NotADirectoryError):
                return None  # taken away though locked: the recovery sweep forgets its row
        claim.path = place
        return file_id

    async def new_row(self, claim: Claim, place: Path | None = None) -> int:
        """The ledger row of a locked file (at ``place`` once moved; hashed later).

        The row is held (``holds``) until the claim is closed or its ingest is over.
        """
        file_id: int = await self.store.transact(
            partial(
                ledger.insert_claimed,
                collection=shown(claim.collection),
                name=shown(claim.name),
                path=shown(str(place or claim.path)),
                size=os.fstat(claim.fd).st_size,
                now=now_ms(),
                # In place: never another file's row (those are for drop-folder claims).
                exists=os.path.lexists if claim.move else lambda path: True,
                held=self.holds,
            )
        )
        self._held[file_id] = claim
        return file_id

    async def ingest_in_place(self, path: Path, collection: str) -> IngestReport:
        """Ingest a file outside the drop folder without moving it (``dropsync ingest``).

        Raises ``FileTaken`` if another ingest of the same file is under way.
        """
        given = path
        # The file itself (a link to one is taken as the file, never locked in its place),
        # named from any working directory in its row.
        path = Path(os.path.realpath(path))
        claim = claim_in_place(path, collection)
        if claim is None:
            raise FileTaken(f"{given}: another ingest of this file is under way")
        try:
            # A row left ``processing`` at this path is a dead ingest's (this claim holds
            # the file's lock): go on from where it stopped, under that row.
            places = list(dict.fromkeys([shown(str(path)), shown(str(given))]))
            row = await self.store.call(ledger.processing_at, places)
            if row is not None and row.collection == shown(collection):
                return await self.ingest_claimed(claim, row.id, resume=row)
            return await self.ingest_claimed(claim, await self.new_row(claim))
        finally:
            claim.close()

    async def recover(self) -> list[IngestReport]:
        """Finish what interrupted ingests left behind (see ``daemon.ingest.recovery``)."""
        from .recovery import Sweeper

        return await Sweeper(self).sweep(at_start=True)

    async def ingest_claimed(
        self, claim: Claim, file_id: int, resume: ledger.FileRow | None = None
    ) -> IngestReport:
        """Hash, merge and file away a claimed file whose ledger row is ``file_id``.

        ``resume``: the row an interrupted ingest of this file left (its progress is
        kept: documents before ``docs_seen`` are not applied again). A file deleted
        (or whose collection folder was removed) under it is finished as quarantined,
        saying so; what was merged before stays merged.
        """
        started = time.perf_counter()
        self._held[file_id] = claim
        try:
            report = await self._ingest_claimed(claim, file_id, resume)
        except Exception as exc:
            if not only_errors_of(exc, (FileNotFoundError, NotADirectoryError)) or (
                os.path.lexists(claim.path)
            ):
                raise
            report = await self._vanished(claim, file_id)
        finally:
            self._held.pop(file_id, None)
        outcome = "duplicate" if report.duplicate_of is not None else report.status
        metrics.file_filed(self._label(claim.collection), outcome, started)
        return report

    def _label(self, collection: str) -> str:
        return metrics.collection_label(collection, self.config.collections)

    async def _vanished(self, claim: Claim, file_id: int) -> IngestReport:
        """Finish the row of a claimed file that someone deleted while it was ingested."""
        row = await self.store.call(ledger.get_file, file_id)
        path = row.path if row is not None else shown(str(claim.path))
        await self.store.transact(
            partial(
                ledger.finish_if,
                file_id=file_id,
                path=path,
                status="quarantined",
                error=VANISHED,
                now=now_ms(),
            )
        )
        log.warning("file_vanished", collection=claim.collection, file=claim.name, file_id=file_id)
        applied, unchanged, rejected = (
            (row.docs_applied, row.docs_unchanged, row.docs_rejected) if row else (0, 0, 0)
        )
        return IngestReport(
            file_id,
            claim.collection,
            claim.name,
            "quarantined",
            Path(path),
            applied,
            unchanged,
            rejected,
            error=VANISHED,
        )

    async def _ingest_claimed(
        self, claim: Claim, file_id: int, resume: ledger.FileRow | None
    ) -> IngestReport:
        config = self.config
        # In a thread: hashing a 2 GB file takes seconds, and the event loop must not wait.
        sha256, size = await anyio.to_thread.run_sync(file_digest, claim.fd)
        if resume is not None and resume.sha256 not in ("", sha256):
            log.warning("ingest_restart_changed_file", file=str(claim.path), file_id=file_id)
            resume = None  # its content changed since: start over, keeping nothing
        duplicate = await self.store.transact(ledger.set_content, file_id, sha256, size)
        if duplicate is not None and (resume is None or resume.docs_seen == 0):
            log.info(
                "ingest_duplicate",
                collection=claim.collection,
                file=claim.name,
                duplicate_of=duplicate,
            )
            report = await self._file_away(claim, file_id, "done", [], (0, 0, 0))
            report.duplicate_of = duplicate
            return report
        resume_from, counts = 0, (0, 0, 0)
        if resume is not None:
            resume_from = resume.docs_seen
            counts = (resume.docs_applied, resume.docs_unchanged, resume.docs_rejected)
        job = ParseJob(
            claim.path,
            config.collection(claim.collection),
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
        label = self._label(claim.collection)

        async def commit_batches() -> None:
            nonlocal counts
            async with receive:
                async for changes, seen, rejected in receive:
                    merged, counts = await self.store.transact(
                        _commit_batch, file_id, changes, routes, seen, counts, rejected
                    )
                    providers.update(merged.providers)
                    metrics.documents(label, merged.applied, merged.unchanged, rejected)
                    if self.on_merge is not None and merged.providers:
                        self.on_merge(merged)

        in_parser_process = size >= config.parser_process_min_bytes
        batches = parse_in_process(job) if in_parser_process else parse_here(job)
        bulk = self.store.bulk() if size >= BULK_MIN_BYTES else nullcontext()
        async with bulk, anyio.create_task_group() as tg, aclosing(batches):
            tg.start_soon(commit_batches)
            async with send:
                try:
                    async for parsed in batches:
                        failures.extend(parsed.failures)
                        await send.send((parsed.changes, parsed.seen, parsed.rejected))
                except anyio.BrokenResourceError:
                    pass  # the committer stopped: the task group raises why, alone
        status = "quarantined" if failures or counts[2] else "done"
        report = await self._file_away(claim, file_id, status, failures, counts)
        report.providers = providers
        return report

    async def _file_away(
        self,
        claim: Claim,
        file_id: int,
        status: str,
        failures: list[DocumentFailure],
        counts: tuple[int, int, int],
    ) -> IngestReport:
        """Write the receipt, move the file to ``.done/`` or ``.quarantine/``, finish its row.

        The row names the destination before the file moves (see ``store.files``), so
        an ingest killed in between is finished by ``daemon.ingest.recovery``.
        """
        applied, unchanged, rejected = counts
        error = None
        if status == "quarantined":
            listed = failures[0] if failures else None
            error = f"{max(rejected, len(failures))} document(s) rejected" + (
                f"; first: #{listed.index}: {listed.reason}" if listed else ""
            )
        final = claim.path
        if claim.move:
            folder = await self.disk(
                lambda: own_folder(claim.folder, QUARANTINE if status == "quarantined" else DONE)
            )
            name = claim.path.name  # free in every folder since the claim (see free_name)
            if status == "quarantined" and not fits_receipt(claim.folder, name):
                # claimed by an older version
                name = free_name(claim.folder, claim.name, self.reserved_names(claim.folder))
            row_path = str(claim.path)
            while True:
                final = folder / name
                if status == "quarantined":
                    await self._write_receipt(final, claim, file_id, failures, counts)
                await self._move_row(file_id, row_path, final)
                row_path = str(final)
                try:
                    await self.disk(lambda: rename_noreplace(claim.path, final))  # noqa: B023
                    break
                except FileExistsError:  # put there by someone else meanwhile
                    await self._move_row(file_id, row_path, claim.path)
                    row_path = str(claim.path)
                    name = free_name(claim.folder, claim.name, self.reserved_names(claim.folder))
            claim.path = final
        finished = await self.store.transact(
            partial(
                ledger.finish_if,
                file_id=file_id,
                path=shown(str(final)),  # as new_row wrote it
                status=status,
                error=error,
                now=now_ms(),
            )
        )
        if not finished:
            log.warning("ingest_row_changed", file_id=file_id, path=str(final))
        event = "file_quarantined" if status == "quarantined" else "file_ingested"
        log.info(
            event,
            collection=claim.collection,
            file=claim.name,
            file_id=file_id,
            applied=applied,
            unchanged=unchanged,
            rejected=rejected,
            error=error,
        )
        return IngestReport(
            file_id,
            claim.collection,
            claim.name,
            status,
            final,
            applied,
            unchanged,
            rejected,
            failures=failures,
            error=error,
        )

    async def _move_row(self, file_id: int, was: str, path: Path) -> None:
        moved = await self.store.transact(
            partial(ledger.move_if, file_id=file_id, was=was, path=str(path))
        )
        if not moved:
            log.warning("ingest_row_changed", file_id=file_id, path=str(path))

    async def _write_receipt(
        self,
        final: Path,
        claim: Claim,
        file_id: int,
        failures: list[DocumentFailure],
        counts: tuple[int, int, int],
    ) -> None:
        applied, unchanged, rejected = counts
        rejected = max(rejected, len(failures))
        listed = failures[:MAX_LISTED_ERRORS]
        receipt = final.with_name(final.name + RECEIPT_SUFFIX)
        content = orjson.dumps(
            {
                "file": claim.name,
                "collection": claim.collection,
                "file_id": file_id,
                "status": "quarantined",
                "policy": "per-document: every document not listed "
                "here was merged (applied or already current)",
                "applied": applied,
                "unchanged": unchanged,
                "rejected": rejected,
                "errors": [f.as_json() for f in listed],
                "errors_not_listed": rejected - len(listed),
            },
            option=orjson.OPT_INDENT_2,
        )
        await self.disk(lambda: write_receipt(receipt, content))

    async def quarantine_unreadable(
        self, path: Path, collection: str, reason: str, home: Path | None = None
    ) -> IngestReport | None:
        """Move an entry that is not read (a link, FIFO, directory, ...) to ``.quarantine/``.

        The entry itself is moved (a link is not followed), gets a ledger row and a
        receipt saying why; a name that is not UTF-8 is moved to its escaped form
        (``bad\\xff.json``, see ``daemon.names``). None if it was gone before it could
        be moved, or if it cannot be moved (a mount point, a folder the daemon may not
        write): it is left where it is, and the log says so once. ``home``: the
        collection folder, when the entry is not directly in it.
        """
        home = home or path.parent
        try:
            folder = await self.disk(lambda: own_folder(home, QUARANTINE))
            while True:
                final = folder / free_name(home, shown(path.name))
                try:
                    await self.disk(lambda: rename_noreplace(path, final))  # noqa: B023
                    break
                except FileExistsError:
                    continue
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self._left_in_place(path, collection, reason, exc)
            return None
        return await self.record_unreadable(final, shown(collection), shown(path.name), reason)

    def _left_in_place(self, path: Path, collection: str, reason: str, exc: OSError) -> None:
        """Say once (per entry) that an entry to be quarantined could not be moved."""
        try:
            info = os.lstat(path)
        except OSError:
            return
        entry = (str(path), info.st_dev, info.st_ino)
        if entry in self._left:
            return
        self._left.add(entry)
        log.warning(
            "entry_left_in_place",
            collection=collection,
            file=path.name,
            error=f"not ingested: {reason}; it cannot be moved to .quarantine/ "
            f"({exc.strerror or exc}): remove it from the drop folder",
        )

    async def record_unreadable(
        self, final: Path, collection: str, name: str, reason: str
    ) -> IngestReport:
        """The ledger row and receipt of an entry moved to ``.quarantine/`` unread."""
        error = shown(f"not ingested: {reason}")
        collection, name = shown(collection), shown(name)
        file_id = await self.store.transact(
            partial(
                ledger.insert_file,
                collection=collection,
                name=name,
                path=str(final),
                sha256=_EMPTY_SHA256,
                size=0,
                status="quarantined",
                now=now_ms(),
                error=error,
            )
        )
        receipt = final.with_name(final.name + RECEIPT_SUFFIX)
        content = orjson.dumps(
            {
                "file": name,
                "collection": collection,
                "file_id": file_id,
                "status": "quarantined",
                "error": error,
                "read": False,
            },
            option=orjson.OPT_INDENT_2,
        )
        await self.disk(lambda: write_receipt(receipt, content))
        log.warning(
            "file_quarantined", collection=collection, file=name, file_id=file_id, error=error
        )
        metrics.file_filed(self._label(collection), "quarantined")
        return IngestReport(file_id, collection, name, "quarantined", final, error=error)


def not_utf8_reason(path: Path, collection: str) -> str:
    """Why an entry whose name (or collection folder's name) is not UTF-8 is not read."""
    what = "its name" if not is_text(path.name) else "its collection folder's name"
    named = shown(path.name if not is_text(path.name) else collection)
    return (
        f"{what} is not UTF-8 (shown here as {named}, each byte that is not UTF-8 as \\xNN); "
        "rename it to a UTF-8 name and drop it again"
    )


def only_errors_of(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """True if ``exc`` is one of ``kinds``, or an exception group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(only_errors_of(inner, kinds) for inner in exc.exceptions)
    return isinstance(exc, kinds)


def _commit_batch(
    conn: sqlite3.Connection,
    file_id: int,
    batch: list[Change],
    routes: dict[str, tuple[str, ...]],
    seen: int,
    counts: tuple[int, int, int],
    rejected: int,
) -> tuple[MergeResult, tuple[int, int, int]]:
    """One transaction: merge a batch and record the file's progress with it.

    It changes nothing but the store, so it can be run again whole after a busy store
    or a full disk rolled it back; the caller takes the new counts once it committed.
    """
    merged = apply_changes(conn, batch, routes, now=now_ms())
    applied, unchanged, rejected_before = counts
    after = (applied + merged.applied, unchanged + merged.unchanged, rejected_before + rejected)
    ledger.record_progress(
        conn, file_id, docs_seen=seen, applied=after[0], unchanged=after[1], rejected=after[2]
    )
    return merged, after
