"""The parser process: a big drop file parsed beside the daemon, and the pipe between them.

Parsing is most of the CPU work of an ingest and needs no store (``daemon.ingest.parse``). A
file of ``parser_process_min_mb`` or more is therefore parsed in a separate process
(``parser_main``), which streams ready batches to the daemon: the parser uses one core
while the daemon's store thread writes on the other, instead of the two taking turns
for one interpreter lock. Small files are parsed in the daemon itself, where a new
process would cost more than it saves.

The pipes: the daemon writes the pickled ``ParseJob`` to the parser's stdin; the
parser writes one message per batch (``marshal`` data of plain tuples), then an
end message, or the exception that stopped it, to a pipe of its own (its file
descriptor is the one argument; stdout and stderr stay the daemon's, so a stray
print cannot garble the stream). If the parser cannot start or dies, the daemon
parses the rest of the file itself, from the last batch it received
(``parse_in_process``).

The parser process imports this module: what only the daemon's end needs (anyio,
structlog) is imported where that end runs, so the parser starts with this module's
few dependencies.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from typing import IO

from dropsync.store.merge import Change

from ..errors import ParserProcessError
from ..process.memory import tune_garbage_collector
from .parse import DocumentFailure, ParsedBatch, ParseJob, parse_batches, parse_here

# How the daemon starts a parser process: ``sys.executable``, these, then the pipe's fd.
PARSER_ARGS = ("-P", "-c", "from dropsync.daemon.ingest.parser import parser_main; parser_main()")


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


async def parse_in_process(job: ParseJob) -> AsyncGenerator[ParsedBatch, None]:
    """The file's batches, parsed by a parser process (see ``daemon.ingest.parse``).

    Should the parser not start, or die, the rest of the file is parsed here, from
    the last batch received (and a warning says so): a big file never waits for a
    restart because of its parser.
    """
    import structlog

    seen = job.resume_from
    try:
        async with aclosing(_parse_by_parser(job)) as batches:
            async for parsed in batches:
                seen = parsed.seen
                yield parsed
        return
    except ParserProcessError as exc:
        structlog.get_logger(__name__).warning(
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
    import anyio

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
    """A new parser process and the pipe its batches come through (see the module doc)."""
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
