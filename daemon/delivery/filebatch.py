"""The file sender: the delivery loop's sender for providers that take files
(``limits.file_batches``; see ``daemon.delivery.sending``).

A batch can be gigabytes, so nothing of it is held in memory: the pending entries
are read a page at a time and streamed into JSON-array files on disk (one group of
files per ``group_of`` value, each at most ``max_file_bytes``), which entry went
into which file is noted in the scratch database (``store.spool``), and the
adapter uploads the files, streaming them from disk. The answer is sorted by the
loop (``daemon.delivery.flusher``) as for every other request; a permanent refusal of an
upload of several files sends each file alone to find the refused one, and the files
a partial success names as skipped are narrowed down to the documents the provider
refuses, which alone are dead-lettered with its message (``daemon.delivery.narrowing``).
Files that cannot be written (a full disk) pause the provider with backoff
(``spool_failed``); nothing is lost.

A record the adapter cannot place yet (``Waiting``: a value no callback has mapped)
stays in the outbox; ``providers.waiting`` says why. Files are removed once their
outcome is recorded; leftovers of a killed run are removed at start.
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import anyio
import structlog
from dropsync.adapters.base import FileBatchProvider, FilePart, Waiting
from dropsync.adapters.errors import ProviderError
from dropsync.store import callbacks, outbox, spool
from dropsync.store.errors import OutsideFolder
from dropsync.store.removal import remove_inside

from .. import metrics
from ..clock import now_ms
from ..places import SCRATCH_DATABASE
from .narrowing import Narrowing
from .sending import Attempt, to_outgoing

if TYPE_CHECKING:
    from .flusher import Flusher

log = structlog.get_logger(__name__)

MAX_OPEN_FILES = 64  # groups written at once; past that, the open files are finished
NO_FILE = -1  # the part of tombstones: delivered without being sent (the kinds have no delete)
CHUNKS_A_TRANSACTION = 10  # store.spool.CHUNK entries a statement, ten statements a commit
_batches = itertools.count(1)


@dataclass
class _OpenFile:
    index: int
    group: Hashable
    path: Path
    handle: IO[bytes]
    items: int = 0
    size: int = 1


@dataclass
class SpoolWriter:
    """Writes documents into per-group JSON-array files of at most ``max_file_bytes``."""

    folder: Path
    max_file_bytes: int
    name_of: Any  # (group, index) -> file name
    within: Path  # the spool folder: nothing outside it is ever removed
    files: list[_OpenFile] = field(default_factory=list)
    current: dict[Hashable, _OpenFile] = field(default_factory=dict)
    total: int = 0

    def add(self, group: Hashable, document: bytes) -> tuple[int, int]:
        """Append a document to its group's file (a new file when it would pass the cap);
        returns (the file's index, the document's offset in it)."""
        part = self.current.get(group)
        if part is None and len(self.current) >= MAX_OPEN_FILES:
            for open_part in self.current.values():  # a group may span several files
                self._finish(open_part)
            self.current.clear()
        needed = len(document) + 2
        if part is None or (part.items and part.size + needed + 1 > self.max_file_bytes):
            if part is not None:
                self._finish(part)
            self.folder.mkdir(parents=True, exist_ok=True)
            index = len(self.files)
            path = self.folder / self.name_of(group, index)
            part = _OpenFile(index, group, path, path.open("wb", buffering=1 << 20))
            part.handle.write(b"[")
            self.files.append(part)
            self.current[group] = part
            self.total += 1
        if part.items:
            part.handle.write(b",\n")
            part.size += 2
        offset = part.size
        part.handle.write(document)
        part.size += len(document)
        part.items += 1
        self.total += len(document) + 2
        return part.index, offset

    def _finish(self, part: _OpenFile) -> None:
        if not part.handle.closed:
            part.handle.write(b"]")
            part.size += 1
            part.handle.close()

    def close(self, meta_of: Any) -> list[FilePart]:
        """Finish every file; the parts in order."""
        for part in self.files:
            self._finish(part)
        return [FilePart(p.path, meta_of(p.group), p.items, p.size) for p in self.files]

    def discard(self) -> None:
        """Close and remove every file."""
        for part in self.files:
            part.handle.close()
        clear(self.folder, self.within)


def clear(folder: Path, spool: Path) -> None:
    """Remove ``folder`` and what is in it, if it is inside the spool folder (else say so)."""
    try:
        remove_inside(folder, spool)
    except OutsideFolder as exc:
        log.error("spool_not_removed", folder=str(folder), error=str(exc))
    except OSError as exc:  # removed again at the next start
        log.warning("spool_not_removed", folder=str(folder), error=exc.strerror or str(exc))


@dataclass
class _Page:
    refused: dict[str, list[outbox.OutboxEntry]] = field(default_factory=dict)
    rows: list[spool.Row] = field(default_factory=list)
    waiting: Counter[str] = field(default_factory=Counter)


class FileSender:
    """Sends a file-taking provider's outbox, a file batch at a time."""

    def __init__(self, spool_root: Path, name: str) -> None:
        self.spool_root = spool_root
        self.folder = spool_root / name
        self._dry_run_after = 0
        self._oldest = 0  # when the oldest entry of the batch was queued (for /metrics)

    async def start(self, loop: Flusher) -> None:
        """Remove what a killed run left, and attach the scratch notes."""
        await anyio.to_thread.run_sync(clear, self.folder, self.spool_root)
        await loop.call(spool.attach, self.spool_root / SCRATCH_DATABASE)

    def _spool_page(
        self,
        loop: Flusher,
        entries: list[outbox.OutboxEntry],
        mapped: Mapping[str, int],
        writer: SpoolWriter,
        digest: Any,
    ) -> _Page:
        """Decode, check, place and write one page (in a worker thread)."""
        page = _Page()
        provider = cast(FileBatchProvider, loop.provider)
        for entry in entries:
            change = to_outgoing(loop.name, entry)
            reason = provider.check(change)
            if reason is not None:
                page.refused.setdefault(reason, []).append(entry)
                continue
            part, offset, length = NO_FILE, 0, 0
            if not change.deleted:
                group = provider.group_of(change, mapped)
                if isinstance(group, Waiting):
                    page.waiting[group.reason] += 1
                    continue
                document = provider.document(change)
                part, offset = writer.add(group, document)
                length = len(document)
            digest.update(change.idempotency_key.encode() + b"\n")
            page.rows.append(
                (
                    part,
                    entry.id,
                    entry.collection,
                    entry.key,
                    entry.updated_at,
                    entry.attempts,
                    offset,
                    length,
                )
            )
        return page

    async def send_pending(self, loop: Flusher) -> bool:
        """Spool what is pending into files and upload them; False if nothing was sent."""
        provider = cast(FileBatchProvider, loop.provider)
        mapped: Mapping[str, int] | None = None
        batch = next(_batches)
        writer = SpoolWriter(
            self.folder / str(batch),
            provider.max_file_bytes,
            lambda group, index: f"{loop.name}-{batch}-{index + 1:04d}.json",
            self.spool_root,
        )
        digest = hashlib.sha256()
        waiting: Counter[str] = Counter()
        rows = 0
        after = self._dry_run_after
        try:
            while writer.total < provider.limits.max_bytes:
                entries = await loop.take(after)
                if not entries:
                    break
                after = entries[-1].id
                if mapped is None:
                    self._oldest = entries[0].enqueued_at  # taken in queue order
                    # Read after the first take: a mapping committed before an entry was
                    # queued is then always seen with it (a callback then a merge).
                    mapped = await loop.call(provider.mapping)
                page = await anyio.to_thread.run_sync(
                    self._spool_page, loop, entries, mapped, writer, digest
                )
                await loop.dead_letter_refused(page.refused)
                await loop.call(spool.add_rows, batch, page.rows)
                waiting.update(page.waiting)
                rows += len(page.rows)
            parts = writer.close(provider.file_meta)
            await self._note_waiting(loop, waiting)
            if loop.dry_run:
                self._dry_run_after = after
                for part in parts:
                    log.info(
                        "dry_run_file",
                        provider=loop.name,
                        items=part.items,
                        bytes=part.size,
                        **dict(part.meta),
                    )
                return False
            if rows == 0:
                return False
            log.info(
                "files_written",
                provider=loop.name,
                items=rows,
                files=len(parts),
                bytes=sum(part.size for part in parts),
            )
            await self._upload(loop, batch, parts, writer.folder, digest.hexdigest())
        except OSError as exc:  # the spool folder: disk full, permissions
            reason = f"cannot write the upload files in {self.folder}: {exc.strerror or exc}"
            await loop.pause_locally(reason, "spool_failed")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(writer.discard)
                await loop.call(spool.forget, batch)
        return True

    async def _note_waiting(self, loop: Flusher, waiting: Counter[str]) -> None:
        reason = None
        if waiting:
            total = sum(waiting.values())
            reason = f"{total} record(s) wait: " + "; ".join(
                f"{count} as {why}" for why, count in waiting.most_common(5)
            )
            log.info("records_waiting", provider=loop.name, items=total, reason=reason)
        await loop.write(callbacks.set_waiting, loop.name, reason)

    async def _upload(
        self, loop: Flusher, batch: int, parts: list[FilePart], folder: Path, key: str
    ) -> None:
        provider = cast(FileBatchProvider, loop.provider)
        everything = [*range(len(parts)), NO_FILE]
        if not parts:  # only tombstones: nothing to send
            await self.record(loop, batch, everything, key, None, "confirmed", None)
            return
        answer = await loop.send(
            partial(provider.push_files, parts, idempotency_key=key),
            partial(self.note_failure, loop, batch, everything, key),
        )
        metrics.uploaded(loop.name, sum(part.size for part in parts))
        narrowing = Narrowing(self, loop, batch, parts, folder, key)
        if answer.refused is not None:
            await self.record(loop, batch, [NO_FILE], key, None, "confirmed", None)
            refused = answer.refused
            if len(parts) == 1:
                await self.dead_letter(
                    loop, batch, [0], refused.reason, refused.status, key, answer.attempt
                )
                return
            skipped: dict[int, str] = {}
            for index in range(len(parts)):  # find the refused file(s): each alone
                reason = await self._send_alone(loop, batch, index, parts[index], f"{key}:{index}")
                if reason is not None:
                    skipped[index] = reason
            await narrowing.run(skipped)
            return
        result = answer.result
        assert result is not None
        skipped = dict(result.skipped)
        taken = [i for i in everything if i not in skipped]
        await self.record(
            loop, batch, taken, key, answer.attempt, result.state, result.status, result.remote_ref
        )
        await narrowing.run(skipped)

    async def _send_alone(
        self, loop: Flusher, batch: int, index: int, part: FilePart, key: str
    ) -> str | None:
        """Send one part of a refused upload on its own, to find the refused one(s): a
        refused part is dead-lettered; returns the provider's message if it is skipped."""
        provider = cast(FileBatchProvider, loop.provider)
        answer = await loop.send(
            partial(provider.push_files, [part], idempotency_key=key),
            partial(self.note_failure, loop, batch, [index], key),
        )
        metrics.uploaded(loop.name, part.size)
        if answer.refused is not None:
            refused = answer.refused
            await self.dead_letter(
                loop, batch, [index], refused.reason, refused.status, key, answer.attempt
            )
            return None
        result = answer.result
        assert result is not None
        if result.skipped:
            return result.skipped[0][1]
        await self.record(
            loop,
            batch,
            [index],
            key,
            answer.attempt,
            result.state,
            result.status,
            result.remote_ref,
        )
        return None

    async def record(
        self,
        loop: Flusher,
        batch: int,
        parts: Sequence[int],
        key: str,
        attempt: Attempt | None,
        state: str,
        status: int | None,
        remote_ref: str | None = None,
    ) -> None:
        """The provider took these parts (``attempt``: None, nothing was sent for them):
        their ``deliveries`` row, then their entries a chunk per transaction."""
        now = now_ms()
        latency = 0.0 if attempt is None else attempt.latency_ms()

        def record(db: sqlite3.Connection) -> tuple[int, int]:
            return spool.record_delivery(
                db,
                provider=loop.name,
                batch=batch,
                parts=parts,
                batch_id=key,
                state=state,
                http_status=status,
                latency_ms=latency,
                remote_ref=remote_ref,
                now=now,
                sent_at=None if attempt is None else attempt.sent_at,
                held_until=loop.health.held_until(),
            )

        delivery_id, items = await loop.write(record)
        # A transaction per chunk (callbacks and the inbox get the store in between), all of
        # them shielded: a stop waits for the recording, as it waits for any transaction.
        with anyio.CancelScope(shield=True):
            pieces = await loop.call(spool.chunks, batch, parts)
            for start in range(0, len(pieces), CHUNKS_A_TRANSACTION):
                await loop.write(
                    spool.deliver_chunks,
                    provider=loop.name,
                    batch=batch,
                    chunks=pieces[start : start + CHUNKS_A_TRANSACTION],
                    state=state,
                    delivery_id=delivery_id,
                    now=now,
                )
        if items:
            oldest = 0
            if attempt is not None:  # sent: the batch's drop-to-provider time, observed once
                oldest, self._oldest = self._oldest, 0
            metrics.delivered(
                loop.name, items, confirmed=state == "confirmed", oldest_queued_at=oldest
            )
            log.info(
                "batch_delivered",
                provider=loop.name,
                items=items,
                state=state,
                status=status,
                latency_ms=round(latency, 1),
                files=len([p for p in parts if p != NO_FILE]),
            )

    async def dead_letter(
        self,
        loop: Flusher,
        batch: int,
        parts: list[int],
        reason: str,
        status: int | None,
        key: str,
        attempt: Attempt,
    ) -> int:
        """Move the entries of these parts to dead letters with ``reason``; returns how many."""

        def record(db: sqlite3.Connection) -> int:
            now = now_ms()
            moved = spool.dead_letter_parts(
                db,
                provider=loop.name,
                batch=batch,
                parts=parts,
                reason=reason,
                http_status=status,
                now=now,
            )
            self._log_attempt(loop, db, moved, key, attempt, "rejected", status, reason, now)
            return moved

        moved = await loop.write(record)
        metrics.dead_lettered(loop.name, moved)
        log.warning("dead_lettered", provider=loop.name, items=moved, status=status, reason=reason)
        return moved

    def _log_attempt(
        self,
        loop: Flusher,
        db: sqlite3.Connection,
        items: int,
        key: str,
        attempt: Attempt,
        state: str,
        status: int | None,
        error: str,
        now: int,
    ) -> None:
        outbox.record_attempt(
            db,
            provider=loop.name,
            batch_id=key,
            items=items,
            state=state,
            now=now,
            http_status=status,
            latency_ms=attempt.latency_ms(),
            error=error,
        )

    def note_failure(
        self,
        loop: Flusher,
        batch: int,
        parts: list[int],
        key: str,
        db: sqlite3.Connection,
        attempt: Attempt,
        exc: ProviderError,
        now: int,
    ) -> int:
        """A failed upload: its parts' entries count one more attempt, and the attempt is
        logged in ``deliveries``; returns the records it carried."""
        spool.count_attempt(db, batch, parts)
        sizes = spool.part_sizes(db, batch)
        items = sum(sizes.get(p, 0) for p in parts)
        self._log_attempt(loop, db, items, key, attempt, "failed", exc.status, str(exc), now)
        return items
