"""Reading a drop file's documents into batches of changes, here or in a parser process.

Parsing (ijson, shape recognition, timestamps, the canonical body and its digest)
is most of the CPU work of an ingest, and it needs no store. A big file is
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

import ijson
import orjson
from dropsync.daemon.config import CollectionConfig
from dropsync.daemon.documents import DocumentReader
from dropsync.daemon.errors import DocumentError, DropsyncError
from dropsync.daemon.memory import tune_garbage_collector
from dropsync.store.merge import Change

DOCUMENT_SUFFIXES = (".json", ".ndjson")


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


def _first_byte(handle: IO[bytes]) -> bytes:
    """The first non-blank byte of the file (after a UTF-8 BOM); the handle is rewound."""
    head = handle.read(4096)
    while head and not head.strip():
        head = handle.read(4096)
    handle.seek(0)
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]


def iter_documents(path: Path) -> Iterator[tuple[int, object, int | None]]:
    """Yield ``(index, document, line)``; a ``DocumentFailure`` stands in for a bad one.

    Syntax errors in a JSON file end the stream (nothing after them can be read);
    in NDJSON only the bad line is lost.
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
            index = 0
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield index, orjson.loads(line), number
                except orjson.JSONDecodeError as exc:
                    yield index, DocumentFailure(index, f"invalid JSON: {exc}", number), number
                index += 1
            return
        first = _first_byte(handle)
        if not first:
            yield (
                0,
                DocumentFailure(0, "file is empty: expected a JSON array, object or NDJSON"),
                None,
            )
            return
        prefix = "item" if first == b"[" else ""
        index = 0
        try:
            for document in ijson.items(
                handle, prefix, use_float=True, multiple_values=True, buf_size=1 << 18
            ):
                yield index, document, None
                index += 1
        except ijson.JSONError as exc:
            yield (
                index,
                DocumentFailure(
                    index,
                    f"invalid JSON after {index} document(s): {exc}; the rest of the file "
                    "could not be read",
                ),
                None,
            )


def parse_batches(job: ParseJob) -> Iterator[ParsedBatch]:
    """The file's documents as batches of changes; the last batch may be empty."""
    reader = DocumentReader(
        job.collection, origin=job.origin, max_skew_ms=job.max_skew_ms, now_ms=job.now_ms
    )
    batch: list[Change] = []
    failures: list[DocumentFailure] = []
    rejected = 0
    seen = job.resume_from
    for index, document, line in iter_documents(job.path):
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
        if index < job.resume_from:
            if failure is not None:
                failures.append(failure)  # re-listed for the receipt only
            continue
        seen = index + 1
        if failure is not None:
            failures.append(failure)
            rejected += 1
        if len(batch) >= job.batch_size:
            yield ParsedBatch(batch, seen, failures, rejected)
            batch, failures, rejected = [], [], 0
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
