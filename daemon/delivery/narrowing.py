"""Narrowing a partial success down to the documents the provider refuses.

A provider that takes files may skip a whole file for one document it cannot take ("files
with errors will be skipped and their list will be in the response message", says one such
provider's document). The file sender (``daemon.delivery.filebatch``) hands the skipped files here.
Each is checked again locally (``verify_file``: a file that fails goes to dead letters
whole, with the check's reason), then the documents of the skipped files are uploaded again
in halves, level by level: every skipped part of the last upload is split in two (in file
order, by the offsets ``store.spool`` noted), and all the halves of a level go out together,
at most ``MAX_FILES_AN_UPLOAD`` files an upload. Halves the provider takes are recorded as
any delivery; halves it skips are split again. A single document skipped after its file was
skipped is a dead letter with the provider's message; a file of one document skipped once is
sent once more as it is (a skip that does not repeat is not the document's fault).

The cost (docs/providers.md, "Skipped files"): a file of n documents with one bad one
takes ceil(log2 n) more uploads of two files each, carrying about twice the file's size
in all (the first level is the whole file again, each next one half the last); with k bad
ones, at most ceil(log2 n) levels of at most 2k files (in ceil(2k / MAX_FILES_AN_UPLOAD)
uploads each), carrying about (log2 k + 2) times the file's size. A level of at least
``BULK_PIECES`` parts that is skipped whole says the provider refuses (nearly) every
document: the narrowing stops there and the documents of those parts become dead letters
together, with the provider's message (``dropsync dead-letters retry`` sends them again once
the cause is fixed). ``skipped_files_narrowed`` in the log says how many uploads it took.

Kills: every part the provider took is recorded (its entries leave the outbox) or
dead-lettered in a transaction of its own before the next level is sent; the halves and
their notes are scratch, removed at the next start. A kill in the middle leaves every
entry not yet recorded in the outbox, and the next pass spools and narrows them again;
a half whose answer came but was not recorded yet is uploaded again (at least once:
documents of such providers are upserts by id). Nothing is lost and nothing is recorded
twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import anyio
import structlog
from dropsync.adapters.base import FileBatchProvider, FilePart
from dropsync.store import spool
from dropsync.store.removal import remove_inside

from .. import metrics
from ..clock import now_ms
from .sending import Attempt

if TYPE_CHECKING:
    from .filebatch import FileSender
    from .flusher import Flusher

log = structlog.get_logger(__name__)

MAX_FILES_AN_UPLOAD = 64
BULK_PIECES = 64  # a level of this many parts or more, all skipped: refused in bulk


@dataclass(frozen=True, slots=True)
class _Skipped:
    index: int  # the part
    reason: str  # the provider's message
    depth: int  # 0: a file of the first upload; n: a half of a half ... of one


@dataclass(slots=True)
class _Tally:
    files: int = 0
    items: int = 0
    uploads: int = 0
    delivered: int = 0
    dead_lettered: int = 0


def write_half(source: Path, half: spool.Half, target: Path) -> int:
    """Write ``[``, the half's bytes of ``source``, ``]`` to ``target``; returns its size."""
    with source.open("rb") as reading, target.open("wb") as out:
        out.write(b"[")
        reading.seek(half.start)
        left = half.end - half.start
        while left > 0:
            chunk = reading.read(min(left, 1 << 20))
            if not chunk:
                raise OSError(f"{source.name} is shorter than its notes say")
            out.write(chunk)
            left -= len(chunk)
        out.write(b"]")
    return half.end - half.start + 2


class Narrowing:
    """Narrows down the skipped files of one upload (``run``)."""

    def __init__(
        self,
        sender: FileSender,
        loop: Flusher,
        batch: int,
        parts: list[FilePart],
        folder: Path,
        key: str,
    ) -> None:
        self.sender = sender
        self.loop = loop
        self.batch = batch
        self.parts = parts  # grows: a half is appended, its index is its part number
        self.folder = folder
        self.key = key
        self.tally = _Tally()

    async def run(self, skipped: dict[int, str]) -> None:
        """Find the refused documents of the ``skipped`` parts (index -> the provider's
        message); every other document of them is delivered."""
        provider = cast(FileBatchProvider, self.loop.provider)
        level = []
        for index, reason in skipped.items():
            part = self.parts[index]
            self.tally.files += 1
            self.tally.items += part.items
            log.warning(
                "file_skipped",
                provider=self.loop.name,
                file=part.path.name,
                items=part.items,
                reason=reason,
            )
            checked = Attempt(now_ms(), time.perf_counter())
            problem = await anyio.to_thread.run_sync(provider.verify_file, part)
            if problem is not None:
                await self._dead_letter([index], problem, None, checked)
                continue
            level.append(_Skipped(index, reason, 0))
        try:
            while level:
                level = await self._level(level)
        finally:
            if self.tally.files:
                log.info(
                    "skipped_files_narrowed",
                    provider=self.loop.name,
                    files=self.tally.files,
                    items=self.tally.items,
                    uploads=self.tally.uploads,
                    delivered=self.tally.delivered,
                    dead_lettered=self.tally.dead_lettered,
                )

    async def _level(self, level: list[_Skipped]) -> list[_Skipped]:
        """Split (or dead-letter) the parts skipped at the last level, send the halves;
        returns the parts skipped at this one."""
        pieces: list[_Skipped] = []
        for skipped in level:
            part = self.parts[skipped.index]
            if part.items <= 1 and skipped.depth > 0:
                await self._dead_letter([skipped.index], skipped.reason, 206, None)
            elif part.items <= 1:
                pieces.append(_Skipped(skipped.index, skipped.reason, 1))
            else:
                pieces += [
                    _Skipped(i, skipped.reason, skipped.depth + 1)
                    for i in await self._split(skipped.index)
                ]
        skipped_now: list[_Skipped] = []
        for start in range(0, len(pieces), MAX_FILES_AN_UPLOAD):
            skipped_now += await self._send(pieces[start : start + MAX_FILES_AN_UPLOAD])
        if len(pieces) >= BULK_PIECES and len(skipped_now) == len(pieces):
            reason = (
                f"{skipped_now[0].reason} (all {len(pieces)} parts of the skipped file(s) "
                "were skipped: not narrowed further)"
            )
            await self._dead_letter([s.index for s in skipped_now], reason, 206, None)
            return []
        return skipped_now

    async def _split(self, index: int) -> tuple[int, int]:
        """Split a part in two new ones (notes, then files); the old file is removed."""
        part = self.parts[index]
        first = len(self.parts)
        halves = await self.loop.call(spool.split_part, self.batch, index, first)
        for half in halves:
            path = self.folder / f"{self.loop.name}-{self.batch}-{half.part + 1:04d}.json"
            size = await anyio.to_thread.run_sync(write_half, part.path, half, path)
            self.parts.append(FilePart(path, part.meta, half.items, size))
        await anyio.to_thread.run_sync(remove_inside, part.path, self.folder)
        return halves[0].part, halves[1].part

    async def _send(self, pieces: list[_Skipped]) -> list[_Skipped]:
        """One upload of these parts; returns those skipped again."""
        provider = cast(FileBatchProvider, self.loop.provider)
        indexes = [p.index for p in pieces]
        self.tally.uploads += 1
        key = f"{self.key}:n{self.tally.uploads}"
        answer = await self.loop.send(
            partial(provider.push_files, [self.parts[i] for i in indexes], idempotency_key=key),
            partial(self.sender.note_failure, self.loop, self.batch, indexes, key),
        )
        metrics.uploaded(self.loop.name, sum(self.parts[i].size for i in indexes))
        if answer.refused is not None:
            refused = answer.refused
            await self._dead_letter(indexes, refused.reason, refused.status, answer.attempt)
            return []
        result = answer.result
        assert result is not None
        # The provider's skipped parts are positions in this upload, not part numbers.
        again = {indexes[position]: reason for position, reason in result.skipped}
        taken = [i for i in indexes if i not in again]
        if taken:
            await self.sender.record(
                self.loop,
                self.batch,
                taken,
                key,
                answer.attempt,
                result.state,
                result.status,
                result.remote_ref,
            )
            self.tally.delivered += sum(self.parts[i].items for i in taken)
        return [_Skipped(p.index, again[p.index], p.depth) for p in pieces if p.index in again]

    async def _dead_letter(
        self, indexes: list[int], reason: str, status: int | None, attempt: Attempt | None
    ) -> None:
        moved = await self.sender.dead_letter(
            self.loop,
            self.batch,
            indexes,
            reason,
            status,
            self.key,
            attempt or Attempt(now_ms(), time.perf_counter()),
        )
        self.tally.dead_lettered += moved
