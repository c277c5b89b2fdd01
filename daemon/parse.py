"""Reading a drop file's documents into batches of changes, here or in a parser process.

Parsing (splitting the file into documents and reading each, ``daemon.jsonstream``;
shape recognition, timestamps, the canonical body and its digest) is most of the
CPU work of an ingest, and it needs no store. A big file is
therefore parsed in a separate process (``parser_main``, which imports only
this module's few dependencies), streaming ready batches to the
daemon over its stdout: the parser uses one core while the daemon's store thread
writes on the other, instead of the two taking turns for one interpreter lock.
Small files are parsed in the daemon itself, where a new process would cost more
than it saves. Both ways yield exactly the same batches (``parse_batches``).

The pipes: the daemon writes the pickled ``ParseJob`` to the parser's stdin; the
parser writes one message per batch (``marshal`` data of plain tuples), then an
end message, or the exception that stopped it, to a pipe of its own (its file
descriptor is the one argument; stdout and stderr stay the daemon's, so a stray
print cannot garble the stream).
If the parser cannot start or dies, the daemon parses the rest of the file
itself, from the last batch it received (``daemon.ingest.parse_in_process``).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import pickle
import signal
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from dropsync.daemon.config import CollectionConfig
from dropsync.daemon.documents import DocumentReader
from dropsync.daemon.errors import DocumentError, DropsyncError
from dropsync.daemon.jsonstream import json_documents, ndjson_documents
from dropsync.daemon.jsontext import DEFAULT_LIMITS, Bad, JsonLimits
from dropsync.daemon.memory import tune_garbage_collector
from dropsync.store.merge import Change

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


class ParserProcessError(DropsyncError):
    """The parser process ended without finishing its file."""


# How the daemon starts a parser process: ``sys.executable``, these, then the pipe's fd.
PARSER_ARGS = ("-P", "-c", "from dropsync.daemon.parse import parser_main; parser_main()")


def iter_documents(
    path: Path, limits: JsonLimits = DEFAULT_LIMITS
) -> Iterator[tuple[int, object, int | None]]:
    """Yield ``(index, document, line)``; a ``DocumentFailure`` stands in for a bad one.

    A bad document costs only itself wherever the file's syntax shows where the
    next one starts (in NDJSON, always: the next line); see ``daemon.jsonstream``.
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


# One message on the parser's pipe: a tag byte and the payload's length, then the payload.
_HEADER = struct.Struct("<cI")
_BATCH, _DONE, _ERROR = b"B", b"D", b"E"


def _write_message(out: IO[bytes], tag: bytes, payload: bytes = b"") -> None:
    out.write(_HEADER.pack(tag, len(payload)))
    out.write(payload)
    out.flush()


def _encode_batch(parsed: ParsedBatch) -> bytes:
    """A batch as ``marshal`` data: plain tuples of str, int, bool and None.

    marshal is the cheapest encoding both ways (no memo, no classes), and both ends
    run the same interpreter (the parser is started with ``sys.executable``).
    """
    failures = [(f.index, f.reason, f.line) for f in parsed.failures]
    return marshal.dumps((list(map(tuple, parsed.changes)), parsed.seen, failures, parsed.rejected))


def read_message(stream: IO[bytes]) -> ParsedBatch | None:
    """The parser's next batch, or None at the end; raises what stopped the parser.

    ``ParserProcessError`` when the stream ends early or is garbled (the parser died).
    """
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise ParserProcessError("the stream ended before the parser finished")
    tag, length = _HEADER.unpack(header)
    payload = stream.read(length)
    if len(payload) < length:
        raise ParserProcessError("the stream ended in the middle of a batch")
    if tag == _DONE:
        return None
    if tag not in (_BATCH, _ERROR):
        raise ParserProcessError(f"unexpected message {tag!r} on the parser's pipe")
    try:
        if tag == _ERROR:
            error = pickle.loads(payload)
        else:
            rows, seen, failures, rejected = marshal.loads(payload)
            if rows and len(rows[0]) != len(Change._fields):
                # The package was replaced on disk while the daemon runs (an upgrade).
                raise ParserProcessError(
                    "the parser process runs another version of dropsync "
                    f"({len(rows[0])} fields a change, this daemon has {len(Change._fields)})"
                )
            return ParsedBatch(
                [tuple.__new__(Change, row) for row in rows],  # no Python-level __new__ per row
                seen,
                [DocumentFailure(*failure) for failure in failures],
                rejected,
            )
    except (ValueError, TypeError, EOFError, pickle.UnpicklingError) as exc:
        raise ParserProcessError(f"a garbled message on the parser's pipe: {exc}") from None
    raise error if isinstance(error, Exception) else ParserProcessError(repr(error))


def parser_main() -> None:
    """The parser process: read the job from stdin, write the batches to the fd in argv."""
    # Stopping is the daemon's decision: it kills this process, or closes the pipe by exiting.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tune_garbage_collector()
    out = os.fdopen(int(sys.argv[1]), "wb")
    try:
        try:
            job = pickle.load(sys.stdin.buffer)
        except Exception as exc:  # e.g. a parser of another version: the daemon parses instead
            raise ParserProcessError(f"the parser could not read its job: {exc!r}") from None
        for parsed in parse_batches(job):
            _write_message(out, _BATCH, _encode_batch(parsed))
        _write_message(out, _DONE)
    except BrokenPipeError:
        pass  # the daemon stopped listening (shutdown, or it died): nothing to do
    except Exception as exc:  # reported to the daemon, which decides
        try:
            payload = pickle.dumps(exc)
        except Exception:  # the exception itself would not pickle
            payload = pickle.dumps(ParserProcessError(f"{type(exc).__name__}: {exc}"))
        with contextlib.suppress(BrokenPipeError):
            _write_message(out, _ERROR, payload)
    finally:
        with contextlib.suppress(BrokenPipeError):
            out.close()
