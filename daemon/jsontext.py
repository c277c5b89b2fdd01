"""JSON text to values: every document that arrives as text is read here, one way.

A drop file's documents and an inbox row's body go through one parser, the
standard library's ``json`` scanner (in C), with one set of rules
(docs/drop-folder.md, "What a document may hold"):

* integers keep every digit (Python integers are unbounded; ``documents.canonical``
  writes them back as they came);
* a number with a fraction or exponent becomes the nearest 64-bit float; one too large
  for that (``1e400``) or too small to be anything but 0 (``1e-400``) makes the
  document unusable, and so do ``NaN`` and ``Infinity`` (not JSON);
* text is UTF-8: bytes that are not make the document unusable (the BOM at the very
  start of a file is skipped), and so does a lone UTF-16 surrogate escape
  (``"\\ud800"``, caught when the canonical body is written);
* a document is at most ``max_depth`` levels deep and ``max_bytes`` long.

Drop files are split into documents by ``daemon.ingest.jsonstream``, which reads each one
with the functions here. Outgoing bodies (``load_outgoing``) keep their long
integers too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import NamedTuple

import orjson

from .errors import DocumentError


class JsonLimits(NamedTuple):
    """How deep and how long one document may be (``drop.max_depth``, ``max_document_mb``)."""

    max_depth: int = 64
    max_bytes: int = 1 << 20


DEFAULT_LIMITS = JsonLimits()


class Bad(NamedTuple):
    """A document (or a stretch of a file) that could not be read, and why."""

    reason: str


_INF = float("inf")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SPACES = frozenset(" \t\n\r")
_NONZERO_MANTISSA = re.compile(r"-?0*\.?0*[1-9]")


def skip_whitespace(text: str, pos: int = 0) -> int:
    """The position of the first character at or after ``pos`` that is not JSON whitespace."""
    if pos == len(text) or (0 <= pos < len(text) and text[pos] not in _SPACES):
        return pos  # the usual cases (a document's first character, a line's end): no regex
    found = _WHITESPACE.match(text, pos)
    assert found is not None  # the pattern matches the empty string
    return found.end()


def _read_float(literal: str) -> float:
    value = float(literal)
    if value in (_INF, -_INF):
        raise DocumentError(
            f"the number {literal[:40]} is too large for a 64-bit float: send it as a string"
        )
    if value == 0.0 and _NONZERO_MANTISSA.match(literal):
        raise DocumentError(
            f"the number {literal[:40]} is too small for a 64-bit float (it would become 0): "
            "send it as a string"
        )
    return value


def _refuse_constant(name: str) -> object:
    raise DocumentError(f"{name} is not a JSON number: write null or a string instead")


# ``decode_value(text, pos) -> (value, end)``: one JSON value at ``pos``, by the rules above.
decode_value = json.JSONDecoder(parse_float=_read_float, parse_constant=_refuse_constant).raw_decode


def decode_error(exc: Exception, start: int) -> str:
    """A reason for the parser's exception, positions relative to the document."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} (at character {exc.pos - start} of the document)"
    message = str(exc)
    if "integer string conversion" in message:
        return "an integer with more than 4300 digits: send it as a string"
    return f"not valid JSON: {message[:200]}"


_STRINGS = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.S)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]++")
_INNERMOST = re.compile(r"[\[{][\]}]")


def nests_deeper(text: str, start: int, end: int, limit: int) -> bool:
    """True if the JSON value in ``text[start:end]`` nests more than ``limit`` levels."""
    if text.count("{", start, end) + text.count("[", start, end) <= limit:
        return False  # the common case: too few brackets to be that deep
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text[start:end]))
    for _ in range(limit):
        brackets, removed = _INNERMOST.subn("", brackets)
        if not removed:
            return False
    return bool(brackets)


_SURROGATE = re.compile("[\ud800-\udfff]")


def refusal(text: str, start: int, end: int, limits: JsonLimits, tainted: bool) -> str | None:
    """Why the parsed document ``text[start:end]`` is refused, or None.

    ``tainted``: the text was decoded keeping bytes that are not UTF-8 as U+DC80..U+DCFF.
    """
    if (
        end - start > limits.max_bytes >> 2  # only then can it be longer than the limit
        and len(text[start:end].encode("utf-8", "surrogateescape")) > limits.max_bytes
    ):
        return too_long(None, limits)
    if nests_deeper(text, start, end, limits.max_depth):
        return too_deep(limits)
    if tainted and (found := _SURROGATE.search(text, start, end)):
        return _not_utf8(found.group(), found.start() - start)
    return None


def too_long(size: int | None, limits: JsonLimits) -> str:
    """The reason for a document over ``limits.max_bytes`` (``size`` when known)."""
    what = f"{size:,} bytes, " if size is not None else ""
    return (
        f"the document is {what}longer than the limit of {limits.max_bytes:,} bytes "
        "(drop.max_document_mb)"
    )


def too_deep(limits: JsonLimits) -> str:
    """The reason for a document nested deeper than ``limits.max_depth``."""
    return f"the document is nested more than {limits.max_depth} levels deep (drop.max_depth)"


def _not_utf8(char: str, offset: int) -> str:
    code = ord(char)
    byte = f"byte 0x{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else "a byte"
    return f"{byte} at character {offset} of the document is not UTF-8: save the file as UTF-8"


def read_whole(text: str, start: int, limits: JsonLimits, tainted: bool) -> object:
    """The one JSON value in ``text`` from ``start`` (only whitespace may follow), or a Bad."""
    try:
        value, end = decode_value(text, start)
    except DocumentError as exc:
        return Bad(str(exc))
    except RecursionError:
        return Bad(too_deep(limits))
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        return Bad(decode_error(exc, start))
    if skip_whitespace(text, end) != len(text):
        return Bad(f"unexpected text after the JSON value (at character {end - start})")
    reason = refusal(text, start, end, limits, tainted)
    return value if reason is None else Bad(reason)


def load_document(raw: str | bytes, limits: JsonLimits) -> object:
    """One JSON value from text or UTF-8 bytes (an inbox body); DocumentError says why not."""
    if isinstance(raw, bytes):
        if len(raw) > limits.max_bytes:
            raise DocumentError(too_long(len(raw), limits))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(
                f"not valid UTF-8 text (byte 0x{raw[exc.start]:02X} at offset {exc.start}): "
                "write it as UTF-8"
            ) from None
    else:
        text = raw
    start = skip_whitespace(text)
    if start == len(text):
        raise DocumentError("no JSON value: the text is empty")
    value = read_whole(text, start, limits, False)
    if isinstance(value, Bad):
        raise DocumentError(value.reason)
    return value


# Canonical bodies are orjson's output: no whitespace, so an integer is preceded by one of
# these. Map them to ":" and digits (and "-") to "0"; 19 zeros after ":" may be a big integer.
_BIG_INT_HINT = bytes.maketrans(b",[-0123456789", b"::" + b"0" * 11)
_BIG_INT_MARK = b":0000000000000000000"


def load_outgoing(text: str) -> object:
    """A stored body, parsed to be sent: integers beyond 64 bits stay exact.

    orjson turns such an integer into a float when it parses, and refuses it when
    it serialises; here it becomes an ``orjson.Fragment`` of its digits, which
    every adapter's ``orjson.dumps`` writes as is. Bodies without a long run of
    digits (nearly all) take orjson's fast path.
    """
    if text.encode().translate(_BIG_INT_HINT).find(_BIG_INT_MARK) < 0:
        return orjson.loads(text)
    return exact_integers(json.loads(text))


def load_outgoing_many(texts: Sequence[str | None]) -> list[object]:
    """``load_outgoing`` of each text of a batch (None stays None), with one look for long
    integers over the whole batch: when it finds none, each text is orjson's alone."""
    try:
        hint = "\x00".join([text or "" for text in texts]).encode().translate(_BIG_INT_HINT)
    except UnicodeEncodeError:  # a lone surrogate: the text that holds it raises below
        hint = _BIG_INT_MARK
    if hint.find(_BIG_INT_MARK) >= 0:
        return [None if text is None else load_outgoing(text) for text in texts]
    loads = orjson.loads
    return [None if text is None else loads(text) for text in texts]


_INT64_MIN, _UINT64_MAX = -(1 << 63), (1 << 64) - 1


def exact_integers(value: object) -> object:
    """``value`` with each integer orjson cannot write replaced by a Fragment of its digits."""
    if isinstance(value, dict):
        return {name: exact_integers(item) for name, item in value.items()}
    if isinstance(value, list):
        return [exact_integers(item) for item in value]
    if type(value) is int and not _INT64_MIN <= value <= _UINT64_MAX:
        return orjson.Fragment(str(value).encode())
    return value
