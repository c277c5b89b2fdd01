"""Reading a drop file's documents into batches of changes.

Parsing (splitting the file into documents and reading each, ``daemon.ingest.jsonstream``;
shape recognition, timestamps, the canonical body and its digest) is most of the
CPU work of an ingest, and it needs no store. Small files are parsed in the daemon
itself (``parse_here``); a big one in a parser process (``daemon.ingest.parser``), which runs
this module's ``parse_batches``: both ways yield exactly the same batches.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from dropsync.store.merge import Change

from ..config import CollectionConfig
from ..documents import DocumentReader
from ..errors import DocumentError
from ..jsontext import DEFAULT_LIMITS, Bad, JsonLimits
from .jsonstream import json_documents, ndjson_documents

DOCUMENT_SUFFIXES = (".json", ".ndjson")
# A batch is cut at batch_size documents or at this many characters of bodies, whichever
# comes first: memory stays bounded when the documents are large.
BATCH_MAX_CHARS = 8 << 20


@dataclass(slots=True)
class DocumentFailure:
    """One document that could not be applied."""

    index: int
    reason: str
    line: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The receipt entry."""
        entry: dict[str, Any] = {"index": self.index, "reason": self.reason}
        if self.line is not None:
            entry["line"] = self.line
        return entry


@dataclass(frozen=True, slots=True)
class ParseJob:
    """Everything needed to parse one file (sent to the parser process as is)."""

    path: Path
    collection: CollectionConfig
    file_id: int
    resume_from: int  # documents before this index were committed by an earlier run
    batch_size: int
    max_skew_ms: int
    now_ms: int
    origin: str = field(default="drop")
    limits: JsonLimits = field(default=DEFAULT_LIMITS)


class ParsedBatch(NamedTuple):
    """Up to ``batch_size`` changes, with the file's progress after them."""

    changes: list[Change]
    seen: int  # documents read so far, this batch included
    failures: list[DocumentFailure]  # bad documents found since the previous batch
    rejected: int  # how many of those are new (at or after resume_from)


def iter_documents(
    path: Path, limits: JsonLimits = DEFAULT_LIMITS
) -> Iterator[tuple[int, object, int | None]]:
    """Yield ``(index, document, line)``; a ``DocumentFailure`` stands in for a bad one.

    A bad document costs only itself wherever the file's syntax shows where the
    next one starts (in NDJSON, always: the next line); see ``daemon.ingest.jsonstream``.
    """
    if path.suffix not in DOCUMENT_SUFFIXES:
        yield (
            0,
            DocumentFailure(
                0, f"unsupported file type {path.suffix or '(none)'!r}: drop .json or .ndjson files"
            ),
            None,
        )
        return
    with path.open("rb") as handle:
        if path.suffix == ".ndjson":
            for index, (value, line) in enumerate(ndjson_documents(handle, limits)):
                if isinstance(value, Bad):
                    yield index, DocumentFailure(index, value.reason, line), line
                else:
                    yield index, value, line
            return
        for index, value in enumerate(json_documents(handle, limits)):
            if isinstance(value, Bad):
                yield index, DocumentFailure(index, value.reason), None
            else:
                yield index, value, None


def parse_batches(job: ParseJob) -> Iterator[ParsedBatch]:
    """The file's documents as batches of changes; the last batch may be empty."""
    reader = DocumentReader(
        job.collection, origin=job.origin, max_skew_ms=job.max_skew_ms, now_ms=job.now_ms
    )
    batch: list[Change] = []
    chars = 0  # of the batch's bodies
    failures: list[DocumentFailure] = []
    rejected = 0
    seen = job.resume_from
    for index, document, line in iter_documents(job.path, job.limits):
        failure = None
        if isinstance(document, DocumentFailure):
            failure = document
        else:
            try:
                change = reader.change(document, file_id=job.file_id, doc_index=index)
            except DocumentError as exc:
                failure = DocumentFailure(index, str(exc), line)
            else:
                if index >= job.resume_from:
                    batch.append(change)
                    chars += len(change.body or "")
        if index < job.resume_from:
            if failure is not None:
                failures.append(failure)  # re-listed for the receipt only
            continue
        seen = index + 1
        if failure is not None:
            failures.append(failure)
            rejected += 1
        if len(batch) >= job.batch_size or chars >= BATCH_MAX_CHARS:
            yield ParsedBatch(batch, seen, failures, rejected)
            batch, failures, rejected, chars = [], [], 0, 0
    yield ParsedBatch(batch, seen, failures, rejected)


async def parse_here(job: ParseJob) -> AsyncGenerator[ParsedBatch, None]:
    """The file's batches, parsed in this process (the event loop runs between batches)."""
    for parsed in parse_batches(job):
        yield parsed
