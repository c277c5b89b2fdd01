"""Splitting a drop file into documents as a stream, in bounded memory.

A file is read and decoded (UTF-8) a block at a time into a sliding window.
Each document is read by ``daemon.jsontext`` with its rules; finding where a
document ends is the C scanner's work in the common case. When a document
cannot be read, or runs past the window, a scanner that keeps only a depth
count and string state finds where it ends: a document too deep or too long
is skipped without ever being held whole, and reading goes on after it
wherever the file's brackets and quotes show where the next one starts.
An unusable document is a ``Bad`` in the stream (docs/drop-folder.md).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import IO

from ..errors import DocumentError
from ..jsontext import (
    Bad,
    JsonLimits,
    decode_error,
    decode_value,
    read_whole,
    refusal,
    skip_whitespace,
    too_deep,
    too_long,
)

BLOCK_BYTES = 1 << 18  # read and decoded at a time
_COMMA = re.compile(r"[ \t\n\r]*,[ \t\n\r]*").match


class _Source:
    """A file's text, decoded as UTF-8 a block at a time into a sliding window."""

    def __init__(self, handle: IO[bytes], head: bytes) -> None:
        self.handle = handle
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.text = ""
        self.eof = False
        self.tainted = False  # some bytes were not UTF-8 (kept as surrogate escapes)
        self._append(head)

    def _append(self, block: bytes) -> None:
        final = not block
        state = self.decoder.getstate()
        try:
            decoded = self.decoder.decode(block, final)
        except UnicodeDecodeError:
            # Keep the bad bytes as U+DC80..U+DCFF: the document holding one is refused.
            self.decoder.setstate(state)
            self.decoder.errors = "surrogateescape"
            decoded = self.decoder.decode(block, final)
            self.decoder.errors = "strict"
            self.tainted = True
        self.text += decoded
        self.eof = final

    def more(self, keep_from: int) -> bool:
        """Drop the text before ``keep_from`` and read on; False once the file is at its end."""
        if self.eof:
            return False
        self.text = self.text[keep_from:]
        self._append(self.handle.read(BLOCK_BYTES))
        return True


_NEXT_OUTSIDE = re.compile(r'["\[\]{},]')
_NEXT_IN_STRING = re.compile(r'["\\]')
_SCALAR = re.compile(r'[^ \t\n\r\[\]{},"]*')


def _scalar_end(text: str, pos: int) -> int:
    found = _SCALAR.match(text, pos)
    assert found is not None  # the pattern matches the empty string
    return found.end()


class _ItemEnd:
    """Finds where one top-level item ends, keeping only a depth count and string state.

    In an array an item ends at the ``,`` or ``]`` on its level; at the top of the
    file, where its value closes. Memory stays constant however deep or long the
    item is, and it may be fed a block at a time (``scan`` resumes where it stopped).
    """

    def __init__(self, in_array: bool) -> None:
        self.in_array = in_array
        self.depth = 0
        self.deepest = 0
        self.in_string = False
        self.escaped = False
        self.started = in_array
        self.scalar = False

    def scan(self, text: str, pos: int) -> int:
        """Where the item ends (exclusive), or -1 if it runs past ``text``."""
        end = len(text)
        if self.scalar:
            stop = _scalar_end(text, pos)
            return stop if stop < end else -1
        if not self.started and pos < end:
            self.started = True
            if text[pos] not in '"[{':
                stop = _scalar_end(text, pos)
                if stop == pos:  # a stray "," "]" or "}"
                    return pos + 1
                self.scalar = True
                return stop if stop < end else -1
        while pos < end:
            if self.escaped:
                self.escaped = False
                pos += 1
                continue
            if self.in_string:
                found = _NEXT_IN_STRING.search(text, pos)
                if found is None:
                    return -1
                pos = found.start() + 1
                if text[pos - 1] == "\\":
                    self.escaped = True
                    continue
                self.in_string = False
                if not self.in_array and self.depth == 0:
                    return pos
                continue
            found = _NEXT_OUTSIDE.search(text, pos)
            if found is None:
                return -1
            pos = found.start()
            char = text[pos]
            pos += 1
            if char == '"':
                self.in_string = True
            elif char in "[{":
                self.depth += 1
                self.deepest = max(self.deepest, self.depth)
            elif self.depth:
                if char == ",":
                    continue
                self.depth -= 1  # "]" or "}" closing a level
                if not self.in_array and self.depth == 0:
                    return pos
            elif self.in_array and char != "}":
                return pos - 1  # the "," or "]" after the item
            # else: a stray "}" (or "," between top-level values): part of this bad item
        return -1


def _attempt(
    source: _Source, start: int, limits: JsonLimits, complete: bool
) -> tuple[object, int] | str | None:
    """Parse the value at ``start``: (value or Bad, its end), the parser's error, or None
    when it parsed but may go on past the window (a number or literal at its very end)."""
    text = source.text
    try:
        value, end = decode_value(text, start)
    except DocumentError as exc:
        return str(exc)
    except RecursionError:
        return too_deep(limits)
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        return decode_error(exc, start)
    if end == len(text) and not complete and not isinstance(value, dict | list | str):
        return None
    reason = refusal(text, start, end, limits, source.tainted)
    return (value if reason is None else Bad(reason)), end


def _read_item(
    source: _Source, start: int, in_array: bool, limits: JsonLimits
) -> tuple[object, int]:
    """The value (or a Bad) of the item at ``start``, and where reading goes on.

    That is the end of the value, or of the unreadable item. Reading on replaces
    ``source.text`` (its earlier text dropped): the position is in the new text.
    """
    outcome = _attempt(source, start, limits, source.eof)
    if isinstance(outcome, tuple):
        return outcome
    # Unreadable, or not all here yet: find where the item ends, reading on as needed.
    scanner = _ItemEnd(in_array)
    pos = start
    oversized = read_on = False
    while (end := scanner.scan(source.text, pos)) < 0:
        pos = len(source.text)
        if pos - start > limits.max_bytes:
            oversized = True  # from here on the item is only scanned, never kept
        keep_from = pos if oversized else start
        if not source.more(keep_from):
            end = len(source.text)
            break
        read_on = True
        pos -= keep_from
        start -= keep_from
    if oversized:
        return Bad(too_long(None, limits)), end
    if scanner.deepest > limits.max_depth:
        return Bad(too_deep(limits)), end
    if end == len(source.text) and (scanner.depth or scanner.in_string):
        return Bad("the file ends inside this document (was it cut short?)"), end
    if read_on:  # the whole item is here now: the same attempt again
        outcome = _attempt(source, start, limits, True)
        if isinstance(outcome, tuple):
            return outcome
    return Bad(outcome or "invalid JSON"), end


def _next_char(source: _Source, pos: int) -> int:
    """The position of the next non-whitespace character, reading on; the text's end at EOF."""
    while True:
        pos = skip_whitespace(source.text, pos)
        if pos < len(source.text) or not source.more(pos):
            return pos
        pos = 0


_ENCODINGS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _encoding_problem(head: bytes) -> str | None:
    """Why the file's first bytes show it is not UTF-8 text, or None."""
    for bom, name in _ENCODINGS:
        if head.startswith(bom):
            return f"the file is {name} (it starts with a {name} byte order mark): save it as UTF-8"
    if b"\x00" in head[:4096]:
        return "the file holds NUL bytes (UTF-16 or UTF-32 text, or not text): save it as UTF-8"
    return None


def _open_source(handle: IO[bytes]) -> tuple[_Source, int] | str:
    head = handle.read(max(BLOCK_BYTES, 4096))  # enough to see a byte order mark or NULs
    problem = _encoding_problem(head)
    if problem is not None:
        return problem
    source = _Source(handle, head)
    return source, 1 if source.text.startswith("\ufeff") else 0


def json_documents(handle: IO[bytes], limits: JsonLimits) -> Iterator[object]:
    """The documents of a ``.json`` file: each element of a top-level array, or each value.

    Yields a document's value, or a ``Bad`` in its place.
    """
    opened = _open_source(handle)
    if isinstance(opened, str):
        yield Bad(opened)
        return
    source, pos = opened
    pos = _next_char(source, pos)
    if pos == len(source.text):
        yield Bad("the file is empty: expected a JSON array, object or NDJSON")
        return
    inside = after_comma = no_comma = False
    bad_to_the_end = False
    quarter, max_depth = limits.max_bytes >> 2, limits.max_depth
    while True:
        pos = _next_char(source, pos)
        text = source.text
        if pos == len(text):
            if inside and not bad_to_the_end:
                yield Bad("the file ends before its array is closed with ']' (was it cut short?)")
            return
        char = text[pos]
        if inside and char == "]":
            if after_comma:
                yield Bad("a ',' with no document after it, before the closing ']'")
            inside = after_comma = no_comma = False
            pos += 1
            continue
        if not inside and char == "[":
            inside, pos = True, pos + 1
            continue
        read = False  # read by the fast path below, which left pos after it
        if inside and not no_comma:
            # The common case without the general machinery: document, comma, document...
            start, end_of_text, eof = pos, len(text), source.eof
            while True:
                try:
                    value, end = decode_value(text, pos)
                except (ValueError, RecursionError, DocumentError):
                    break  # read again below, for the reason
                if end == end_of_text and not eof and not isinstance(value, dict | list | str):
                    break  # a number that may go on in the next block
                if (
                    end - pos > quarter
                    or source.tainted
                    or text.count("{", pos, end) + text.count("[", pos, end) > max_depth
                ):
                    reason = refusal(text, pos, end, limits, source.tainted)
                    value = value if reason is None else Bad(reason)
                yield value
                comma = _COMMA(text, end)
                if comma is None:
                    pos, read = end, True
                    break
                pos, after_comma = comma.end(), True
            if not read and pos != start:
                continue
        if not read:
            value, pos = _read_item(source, pos, inside, limits)
            # An unreadable item that ran to the end of the file says all there is to say.
            bad_to_the_end = isinstance(value, Bad) and source.eof and pos == len(source.text)
            if no_comma:
                value = Bad("a ',' is missing between this document and the one before it")
            yield value
        if inside:
            pos = _next_char(source, pos)
            text = source.text
            after_comma = pos < len(text) and text[pos] == ","
            no_comma = pos < len(text) and text[pos] not in ",]"
            pos += after_comma


def ndjson_documents(handle: IO[bytes], limits: JsonLimits) -> Iterator[tuple[object, int]]:
    """The documents of an ``.ndjson`` file, one a line (blank lines skipped), with line numbers.

    Yields ``(value or Bad, line)``; a bad line costs only itself.
    """
    opened = _open_source(handle)
    if isinstance(opened, str):
        yield Bad(opened), 1
        return
    source, pos = opened
    line = 0
    while True:
        text = source.text
        newline = text.find("\n", pos)
        if newline < 0:
            if len(text) - pos > limits.max_bytes:  # skip the rest of this line unread
                line += 1
                yield Bad(too_long(None, limits)), line
                while source.more(len(source.text)):
                    if (newline := source.text.find("\n")) >= 0:
                        break
                else:
                    return
                pos = newline + 1
                continue
            if source.more(pos):
                pos = 0
                continue
            if pos >= len(text):
                return
            newline = len(text)  # the last line has no line break
        line += 1
        segment = text[pos:newline]
        pos = newline + 1
        start = skip_whitespace(segment)
        if start < len(segment):
            yield read_whole(segment, start, limits, source.tainted), line
