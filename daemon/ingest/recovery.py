"""Finishing what interrupted ingests left behind, while the daemon runs.

An ingest can be interrupted by a kill, a crash, or an error it does not expect. What
it leaves is always one of these (see ``store.files`` and ``daemon.ingest.dropfiles``), and
``sweep`` finishes each, without restarting anything:

* a file in ``.processing/`` with an unfinished row at that path: ingest resumes after
  the last committed batch;
* a file in ``.processing/`` with no row (killed right after the claim): a new row,
  and it is ingested like a new file;
* an unfinished row whose path is in ``.done/`` or ``.quarantine/``: the move was under
  way; the file is moved there (from ``.processing/``, under the same name) and the row
  finished;
* an unfinished row whose file is nowhere (someone deleted it): the row is finished as
  quarantined, saying so;
* at start, an entry of ``.quarantine/`` with no receipt and no row (killed while
  quarantining an unreadable entry): its row and receipt.

Every file it takes up, it locks first; a file a live ingest holds is left alone, so
the watcher, ``dropsync ingest`` and the sweep never work on the same file. A row whose
file was deleted under a live ingest of this daemon is left to that ingest too
(``Ingestor.holds``: such a file's lock can no longer be seen by its path). A file
whose ingest fails is tried again later, waiting longer each time (1 s doubling, at
most ``MAX_RETRY_S``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import structlog
from dropsync.store import files as ledger
from dropsync.store.backoff import backoff_s

from ..clock import now_ms
from ..names import is_text
from .dropfiles import (
    DONE,
    PROCESSING,
    QUARANTINE,
    RECEIPT_SUFFIX,
    collection_folders,
    fits_receipt,
    free_name,
    is_own_folder,
    kind_of,
    list_entries,
    rename_noreplace,
    take_over,
)
from .ingestor import VANISHED, Ingestor, IngestReport, not_utf8_reason

log = structlog.get_logger(__name__)

MAX_RETRY_S = 300.0


class Retries:
    """Files whose ingest failed, and when each may be tried again."""

    def __init__(self) -> None:
        self._next: dict[str, tuple[int, float]] = {}

    def due(self, path: Path) -> bool:
        """True unless ``path`` failed recently."""
        entry = self._next.get(str(path))
        return entry is None or time.monotonic() >= entry[1]

    def failed(self, path: Path) -> float:
        """Record a failure; returns the seconds until the next try."""
        failures = self._next.get(str(path), (0, 0.0))[0] + 1
        delay = backoff_s(failures, first_s=1.0, cap_s=MAX_RETRY_S)
        self._next[str(path)] = (failures, time.monotonic() + delay)
        return delay

    def succeeded(self, path: Path) -> None:
        """Forget ``path``'s failures."""
        self._next.pop(str(path), None)

    def next_due_in(self) -> float | None:
        """Seconds until the earliest retry, if any is waiting."""
        if not self._next:
            return None
        return max(0.0, min(deadline for _, deadline in self._next.values()) - time.monotonic())


def _place(drop: Path, path: str) -> tuple[Path, str, str] | None:
    """(collection folder, ``.processing``/``.done``/``.quarantine``, name) of a drop path."""
    candidate = Path(path)
    folder = candidate.parent
    if folder.name not in (PROCESSING, DONE, QUARANTINE):
        return None
    if Path(os.path.abspath(folder.parent.parent)) != Path(os.path.abspath(drop)):
        return None
    return folder.parent, folder.name, candidate.name


class Sweeper:
    """Runs ``sweep`` passes for one ingestor, remembering which files keep failing."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.retries = Retries()

    async def sweep(self, *, at_start: bool = False) -> list[IngestReport]:
        """Finish every interrupted ingest that no live ingest holds (see the module doc)."""
        ingestor = self.ingestor
        drop = ingestor.config.drop_path
        reports: list[IngestReport] = []

        async def attempt(path: Path, work: Callable[[], Awaitable[IngestReport | None]]) -> None:
            if not self.retries.due(path):
                return
            try:
                report = await work()
            except Exception as exc:
                delay = self.retries.failed(path)
                log.exception("ingest_failed", file=str(path), error=str(exc), retry_in_s=delay)
                return
            self.retries.succeeded(path)
            if report is not None:
                reports.append(report)

        for row in await ingestor.store.call(ledger.processing_rows):
            place = _place(drop, row.path)
            if place is not None and place[1] in (DONE, QUARANTINE):
                await attempt(Path(row.path), partial(_finish_move, ingestor, row, *place))
        for folder in collection_folders(drop):
            if not is_own_folder(folder / PROCESSING):  # a link is never followed
                continue
            for entry in list_entries(folder / PROCESSING):
                if not entry.name.startswith("."):
                    path = Path(entry.path)
                    await attempt(path, partial(_resume, ingestor, path, folder.name))
        for row in await ingestor.store.call(ledger.processing_rows):
            place = _place(drop, row.path)
            if place is not None:
                await attempt(Path(row.path), partial(_finish_vanished, ingestor, row, *place))
        if at_start:
            for folder in collection_folders(drop):
                if not is_own_folder(folder / QUARANTINE):
                    continue
                for entry in list_entries(folder / QUARANTINE):
                    path = Path(entry.path)
                    await attempt(path, partial(_adopt_orphan, ingestor, path))
        return reports


async def _resume(ingestor: Ingestor, path: Path, collection: str) -> IngestReport | None:
    """Take up a file left in ``.processing/``."""
    if not (is_text(path.name) and is_text(collection)):
        # Never claimed by an ingest (none takes such a name): put there by hand.
        return await ingestor.quarantine_unreadable(
            path,
            collection,
            "found in .processing/: " + not_utf8_reason(path, collection),
            home=path.parent.parent,
        )
    claim = take_over(path, collection, path.name)
    if claim is None:
        return None  # a live ingest holds it, or it was filed away meanwhile
    try:
        folder = path.parent.parent
        row = await ingestor.store.call(
            ledger.processing_at,
            [str(path), str(folder / DONE / path.name), str(folder / QUARANTINE / path.name)],
        )
        if row is None:
            log.info("ingest_resume", collection=collection, file=path.name, row="new")
            return await ingestor.ingest_claimed(claim, await ingestor.new_row(claim))
        claim.name = row.name
        if row.path == str(path):
            log.info("ingest_resume", collection=collection, file=row.name, file_id=row.id)
            return await ingestor.ingest_claimed(claim, row.id, resume=row)
        return await _move_and_finish(ingestor, row, claim.path, Path(row.path))
    finally:
        claim.close()


async def _finish_move(
    ingestor: Ingestor, row: ledger.FileRow, folder: Path, place: str, name: str
) -> IngestReport | None:
    """Finish a row whose file was being moved to ``.done/`` or ``.quarantine/``."""
    final = Path(row.path)
    source = folder / PROCESSING / name
    held = final if os.path.lexists(final) else source
    claim = take_over(held, folder.name, row.name)
    if claim is None:
        return None  # a live ingest holds it (or neither place has it: see _finish_vanished)
    try:
        current = await ingestor.store.call(ledger.get_file, row.id)
        if current is None or current.status != "processing" or current.path != row.path:
            return None  # its owner moved on meanwhile
        return await _move_and_finish(ingestor, current, claim.path, final)
    finally:
        claim.close()


async def _move_and_finish(
    ingestor: Ingestor, row: ledger.FileRow, source: Path, final: Path
) -> IngestReport:
    """Move the locked file at ``source`` to the row's destination and finish the row."""
    status = "quarantined" if final.parent.name == QUARANTINE else "done"
    if source != final:
        try:
            await ingestor.disk(lambda: rename_noreplace(source, final))
        except FileExistsError:  # someone else's file took the name meanwhile
            moved = final.parent / free_name(final.parent.parent, row.name)
            await ingestor.disk(lambda: rename_noreplace(source, moved))
            receipt = final.with_name(final.name + RECEIPT_SUFFIX)
            if status == "quarantined" and os.path.lexists(receipt):
                moved_receipt = moved.with_name(moved.name + RECEIPT_SUFFIX)
                await ingestor.disk(lambda: os.replace(receipt, moved_receipt))
            await ingestor.store.transact(
                partial(ledger.move_if, file_id=row.id, was=str(final), path=str(moved))
            )
            final = moved
    error = (
        f"{row.docs_rejected} document(s) rejected (listed in the receipt)"
        if status == "quarantined"
        else None
    )
    await ingestor.store.transact(
        partial(
            ledger.finish_if,
            file_id=row.id,
            path=str(final),
            status=status,
            error=error,
            now=now_ms(),
        )
    )
    log.info("ingest_move_finished", file=row.name, file_id=row.id, path=str(final), status=status)
    return IngestReport(
        row.id,
        row.collection,
        row.name,
        status,
        final,
        row.docs_applied,
        row.docs_unchanged,
        row.docs_rejected,
        duplicate_of=row.duplicate_of,
        error=error,
    )


async def _finish_vanished(
    ingestor: Ingestor, row: ledger.FileRow, folder: Path, place: str, name: str
) -> IngestReport | None:
    """Finish a row whose file is in none of the places it can be."""
    if ingestor.holds(row.id):
        return None  # deleted under a live ingest, which finishes its row itself
    places = [Path(row.path), folder / PROCESSING / name]
    if not row.sha256:
        # Killed between its row and its move: the file still waits in the collection
        # folder, and its next claim takes this row over (ledger.insert_claimed).
        places.append(folder / row.name)
    if any(os.path.lexists(p) for p in places):
        return None
    if not row.sha256 and row.docs_seen == 0:
        # Taken away between its claim and its move (moved back out by its writer, say):
        # nothing of it was read, so it was never taken, and no row says it was.
        forgotten = await ingestor.store.transact(
            ledger.forget_unread,
            row.id,
            path=row.path,
            gone=lambda: not ingestor.holds(row.id) and not any(os.path.lexists(p) for p in places),
        )
        if forgotten:
            log.info("file_withdrawn", collection=row.collection, file=row.name, file_id=row.id)
        return None
    finished = await ingestor.store.transact(
        partial(
            ledger.finish_if,
            file_id=row.id,
            path=row.path,
            status="quarantined",
            error=VANISHED,
            now=now_ms(),
        )
    )
    if not finished or any(os.path.lexists(p) for p in places):
        return None
    log.warning("file_vanished", collection=row.collection, file=row.name, file_id=row.id)
    return IngestReport(
        row.id, row.collection, row.name, "quarantined", Path(row.path), error=VANISHED
    )


async def _adopt_orphan(ingestor: Ingestor, path: Path) -> IngestReport | None:
    """Give an entry of ``.quarantine/`` with no receipt its row and receipt."""
    if path.name.startswith(".") or path.name.endswith(RECEIPT_SUFFIX):
        return None
    collection = path.parent.parent.name
    if not (is_text(path.name) and is_text(collection)):
        # Put there by hand (the daemon quarantines such a name under its escaped form).
        return await ingestor.quarantine_unreadable(
            path,
            collection,
            "found in .quarantine/: " + not_utf8_reason(path, collection),
            home=path.parent.parent,
        )
    if os.path.lexists(path.with_name(path.name + RECEIPT_SUFFIX)):
        return None
    if await ingestor.store.call(ledger.row_at, str(path)) is not None:
        return None
    name = path.name
    if not fits_receipt(path.parent.parent, name):  # put there by hand: no room for a receipt
        moved = path.parent / free_name(path.parent.parent, name)
        try:
            await ingestor.disk(lambda: rename_noreplace(path, moved))
        except (FileNotFoundError, FileExistsError):
            return None  # gone, or its new name taken meanwhile: the next start looks again
        path = moved
    try:
        reason = kind_of(path, os.lstat(path).st_mode) or (
            "found in .quarantine/ with neither receipt nor ledger row "
            "(the daemon stopped while quarantining it, or it was put there by hand)"
        )
    except FileNotFoundError:
        return None
    return await ingestor.record_unreadable(path, collection, name, reason)
