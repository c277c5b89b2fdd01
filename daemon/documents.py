"""Turning documents into changes: shapes, identity, timestamps, canonical bodies.

Shapes recognised per document (docs/drop-folder.md):

* the envelope ``{data, createdAt, updatedAt}``: key ``data.id``, timestamp ``updatedAt``
* the action ``{user, item, action, actionDate}``: key ``user:item``, timestamp
  ``actionDate``, ``action: DELETE`` is a delete
* a plain object, with the collection's configured ``key`` and ``timestamp`` paths

The first two are the documents of two seeds (docs/drop-folder.md says which), recognised
whatever the collection's providers. A collection's configured paths override the envelope
defaults. Any document may carry ``"_deleted": true`` to delete its key (an action says it
with ``DELETE`` instead).

Two rules live here once for every way a change arrives (drop file, inbox row,
provider pull): the canonical body and its digest (``canonical``), and the
refusal of timestamps too far in the future (``FutureLimit``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

import orjson
from dropsync.store.merge import MAX_TIME_BYTES, Change

from .clock import format_timestamp
from .config import TIMESTAMP_UNITS, CollectionConfig
from .errors import DocumentError
from .jsontext import DEFAULT_LIMITS, JsonLimits, exact_integers, load_document

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# Accepted range of timestamps: 1970-01-01 .. 9999-12-31, in ms.
_MAX_TS = 253402300799999


# With no timestamp_unit set, a number below this (2001-09-09T01:46:40Z in ms) is refused: it
# is far more likely epoch seconds (1796648449 s read as ms is January 1970, and loses every
# later comparison). A collection that states its unit takes every number in that unit.
EARLIEST_MS = 10**12
_LIKELY_BEFORE_MS = 10**13  # 2286-11-20: "looks like <unit>" only names a unit giving 2001 .. 2286
_PER_MS = {"s": Fraction(1000), "ms": Fraction(1), "us": Fraction(1, 1000)}
_WORDS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds"}


def parse_timestamp(value: object, field: str, unit: str | None = None) -> int:
    """Normalise an epoch number or an ISO-8601 string with offset/``Z`` to epoch ms UTC.

    ``unit`` is the collection's ``timestamp_unit`` (``s``, ``ms``, ``us``) for numbers (an
    ISO-8601 string carries its own). None: milliseconds, and a number before 2001-09-09
    as such is refused as looking like seconds. Seconds and microseconds keep the time to
    the millisecond (a finer part is dropped, toward the past). A number past the year
    9999 in its unit is refused, naming the unit it looks like.
    """
    if isinstance(value, bool):
        raise DocumentError(f"{field} is a boolean; expected an epoch number or ISO-8601")
    if isinstance(value, int) and unit in (None, "ms"):
        ms = value
    elif isinstance(value, int | float):
        ms = _number_to_ms(value, field, unit or "ms")
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise DocumentError(
                f"{field} = {value[:64]!r} is not ISO-8601 (e.g. 2024-05-02T10:45:12.798Z)"
            ) from None
        if parsed.tzinfo is None:
            raise DocumentError(f"{field} = {value[:64]!r} has no UTC offset; add 'Z' or '+00:00'")
        ms = (parsed - _EPOCH) // _ONE_MS
        if ms < 0:  # an ISO-8601 time is never a unit mistake: any time from 1970 is taken
            raise DocumentError(f"{field} = {value[:64]!r} is before 1970")
        return ms
    elif value is None:
        raise DocumentError(f"{field} is missing")
    else:
        raise DocumentError(
            f"{field} has type {type(value).__name__}; expected an epoch number or ISO-8601"
        )
    if not (EARLIEST_MS if unit is None else 0) <= ms <= _MAX_TS:
        raise DocumentError(_unit_mistake(value, field, unit, ms))
    return ms


def _number_to_ms(value: int | float, field: str, unit: str) -> int:
    """A number in ``unit`` as whole epoch ms (floored); DocumentError if it is none."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DocumentError(f"{field} = {value!r} is not a finite number")
        if unit == "ms":
            if value != int(value):
                raise DocumentError(f"{field} = {value!r} is not a whole number of milliseconds")
            return int(value)
        exact = Fraction(Decimal(repr(value)))  # the digits as written, not the binary float
    else:
        exact = Fraction(value)
    return math.floor(exact * _PER_MS[unit])


def _unit_mistake(value: int | float, field: str, unit: str | None, ms: int) -> str:
    """Why ``value`` (``ms`` once read in ``unit``) is refused, naming the unit it fits."""
    shown = str(value)[:40]
    if ms < 0:
        return f"{field} = {shown} is before 1970; epoch times start at 0"
    words = _WORDS[unit or "ms"]
    exact = Fraction(value)
    for other in TIMESTAMP_UNITS:  # coarsest first: a time that early is most often seconds
        if other != (unit or "ms") and EARLIEST_MS <= exact * _PER_MS[other] < _LIKELY_BEFORE_MS:
            if ms < EARLIEST_MS:
                when = f"as {words} it is {format_timestamp(ms)}, before 2001-09-09"
            else:
                when = f"as {words} it is after the year 9999"
            return (
                f"{field} = {shown} looks like epoch {_WORDS[other]}: {when}; if the source "
                f'sends {_WORDS[other]}, set timestamp_unit = "{other}" for the collection'
            )
    if ms < EARLIEST_MS:
        return (
            f"{field} = {shown} is {format_timestamp(ms)} as milliseconds, before 2001-09-09, "
            'and looks like a unit mistake: set timestamp_unit = "ms" for the collection to '
            "take such early times as they are, or send them as ISO-8601"
        )
    return f"{field} = {shown} is out of range (1970 .. the year 9999)"


def canonical(document: object) -> tuple[str, str]:
    """The canonical JSON text of a document and its digest (sha256, first 32 hex digits).

    Keys sorted, no spaces, integers with every digit (orjson writes up to 64 bits;
    longer ones are written from their digits). DocumentError if the document holds
    what JSON text cannot (a lone UTF-16 surrogate, a key that is not a string).
    """
    try:
        raw = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # orjson.JSONEncodeError
        raw = _canonical_slowly(document, str(exc))
    return raw.decode(), hashlib.sha256(raw).hexdigest()[:32]


def _canonical_slowly(document: object, problem: str) -> bytes:
    if "Integer exceeds 64-bit range" in problem:
        try:
            return orjson.dumps(exact_integers(document), option=orjson.OPT_SORT_KEYS)
        except TypeError as exc:
            problem = str(exc)
    if "surrogates not allowed" in problem:
        raise DocumentError(
            "a string holds a lone UTF-16 surrogate (an escape such as \\ud800 without its "
            "pair), which is not Unicode text"
        )
    raise DocumentError(f"cannot encode document as JSON: {problem}")


class FutureLimit(NamedTuple):
    """The latest timestamp a change may carry: the clock plus ``daemon.max_clock_skew_s``.

    A later one is refused, never clamped: a future-dated version would silently
    win every later change of its key.
    """

    latest: int  # epoch ms
    max_skew_ms: int

    @classmethod
    def at(cls, now_ms: int, max_skew_ms: int) -> FutureLimit:
        """The limit for changes arriving at ``now_ms``."""
        return cls(now_ms + max_skew_ms, max_skew_ms)

    def check(self, ts: int, field: str) -> int:
        """``ts`` if it is not too far ahead; DocumentError naming ``field`` otherwise."""
        if ts > self.latest:
            raise DocumentError(
                f"{field} {format_timestamp(ts)} is more than {self.max_skew_ms // 1000} s "
                "ahead of this machine's clock (daemon.max_clock_skew_s); a future-dated "
                "version would win every later change: fix the source's clock or the value"
            )
        return ts


def _getter(path: str) -> Callable[[Mapping[str, Any]], object]:
    parts = path.split(".")
    if len(parts) == 1:
        name = parts[0]
        return lambda doc: doc.get(name)

    def get(doc: Mapping[str, Any]) -> object:
        value: object = doc
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get


NUL = "\x00"


def check_name(text: str, what: str) -> str:
    """``text`` if it holds no U+0000; DocumentError naming ``what`` otherwise.

    A key or collection name is refused with a NUL rather than risk it being cut there:
    SQLite's JSON functions (which carry keys through the store's bulk statements), C
    strings and many providers end text at U+0000 (docs/schema.md, "Keys").
    """
    if NUL in text:
        at = text.index(NUL)
        raise DocumentError(
            f"{what} {text[:at][:64]!r} holds U+0000 (NUL) at character {at}: a key or "
            "collection name with a NUL is not taken (it would be cut there); remove it"
        )
    return text


def _key_text(value: object, field: str) -> str:
    if isinstance(value, str) and value:
        return check_name(value, f"key field {field} =") if NUL in value else value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise DocumentError(f"key field {field} is missing")
    raise DocumentError(
        f"key field {field} = {str(value)[:64]!r} is not a non-empty string or integer"
    )


_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "true or false"}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return _JSON_KINDS.get(type(value), "a number")


class DocumentReader:
    """Turns one collection's documents into ``Change`` values (one reader per file or batch)."""

    def __init__(
        self, collection: CollectionConfig, *, origin: str, max_skew_ms: int, now_ms: int
    ) -> None:
        self.collection = collection.name
        self.origin = origin
        self.key_path = collection.key
        self.ts_path = collection.timestamp
        self._key = _getter(collection.key) if collection.key else None
        self._ts = _getter(collection.timestamp) if collection.timestamp else None
        self.unit = collection.timestamp_unit
        # The fast path below takes integers from here to _MAX_TS: epoch ms only.
        fast_from = {None: EARLIEST_MS, "ms": 0}
        self._fast_from = fast_from.get(self.unit, _MAX_TS + 1)
        self.future = FutureLimit.at(now_ms, max_skew_ms)

    def change(
        self, document: object, *, file_id: int | None = None, doc_index: int | None = None
    ) -> Change:
        """Recognise ``document``'s shape and build its change; DocumentError says why not."""
        if not isinstance(document, dict):
            raise DocumentError(f"expected a JSON object, found {_kind(document)}")
        deleted = document.get("_deleted") is True
        if "actionDate" in document and "item" in document and "action" in document:
            key, ts, deleted = self._action(document)
        elif "data" in document and "updatedAt" in document:
            raw_key = (self._key or _DATA_ID)(document)
            raw_ts = (self._ts or _UPDATED_AT)(document)
            # The common case (integer id, epoch-ms integer) without the general checks.
            if (
                type(raw_key) is int
                and type(raw_ts) is int
                and self._fast_from <= raw_ts <= _MAX_TS
            ):
                key, ts = str(raw_key), raw_ts
            else:
                key = _key_text(raw_key, self.key_path or "data.id")
                ts = parse_timestamp(raw_ts, self.ts_path or "updatedAt", self.unit)
        elif self._key is not None and self._ts is not None:
            key = _key_text(self._key(document), str(self.key_path))
            raw_ts = self._ts(document)
            if type(raw_ts) is int and self._fast_from <= raw_ts <= _MAX_TS:
                ts = raw_ts  # epoch ms, in range: what parse_timestamp would give
            else:
                ts = parse_timestamp(raw_ts, str(self.ts_path), self.unit)
        else:
            raise DocumentError(
                "unrecognised document: not an envelope {data, createdAt, updatedAt}, "
                "not an action {user, item, action, actionDate}, and collection "
                f"{self.collection!r} configures no key and timestamp for plain objects"
            )
        self.future.check(ts, "timestamp")
        body, digest = canonical(document)
        return Change(
            self.collection, key, body, ts, deleted, self.origin, digest, file_id, doc_index
        )

    def _action(self, document: Mapping[str, Any]) -> tuple[str, int, bool]:
        action = document.get("action")
        if action not in ("ADD", "DELETE"):
            raise DocumentError(f"action = {str(action)[:32]!r}; expected ADD or DELETE")
        user = _key_text(document.get("user"), "user")
        item = _key_text(document.get("item"), "item")
        key = _key_text(self._key(document), str(self.key_path)) if self._key else f"{user}:{item}"
        ts = parse_timestamp(
            self._ts(document) if self._ts else document.get("actionDate"),
            self.ts_path or "actionDate",
            self.unit,
        )
        return key, ts, action == "DELETE"


_DATA_ID = _getter("data.id")
_UPDATED_AT = _getter("updatedAt")


BOM, BOM_BYTES = "\ufeff", b"\xef\xbb\xbf"
# An integer or decimal literal, as SQLite's NUMERIC affinity reads one (spaces around it).
NUMBER_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)
NOT_INTEGER = re.compile(r"[.eE]")


def _too_long(column: str, size: int, limits: JsonLimits) -> str:
    return (
        f"{column} is {size:,} bytes, longer than the limit of {limits.max_bytes:,} "
        "(drop.max_document_mb)"
    )


def _column_text(value: object, column: str) -> object:
    """An inbox column read as UTF-8 bytes, as text; other values as they are."""
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{column} is not valid UTF-8 text (byte 0x{value[exc.start]:02X} at offset "
            f"{exc.start}): write it as UTF-8"
        ) from None


def inbox_change(
    row: tuple[object, ...],
    *,
    future: FutureLimit,
    limits: JsonLimits = DEFAULT_LIMITS,
    unit: str | None = None,
) -> Change:
    """Validate a SQL inbox row ``(id, collection, key, op, body, updated_at)`` into a change.

    The row is as ``store.merge.pending_inbox`` reads it: text columns as UTF-8
    bytes (decoded here, so text that is not UTF-8 is a reason, not a crash), and a
    body longer than ``limits.max_bytes`` as its length. ``unit``: the collection's
    ``timestamp_unit``, for a number in ``updated_at``.
    """
    row_id, raw_collection, raw_key, raw_op, body, raw_updated_at = row
    for column, value in (("collection", raw_collection), ("key", raw_key), ("op", raw_op)):
        if type(value) is int:  # longer than a document may be: not read (pending_inbox)
            raise DocumentError(_too_long(column, value, limits))
    if isinstance(raw_updated_at, bytes) and len(raw_updated_at) > MAX_TIME_BYTES:
        raise DocumentError(
            f"updated_at is longer than {MAX_TIME_BYTES:,} bytes; expected an epoch number or "
            "ISO-8601 text"
        )
    collection = _column_text(raw_collection, "collection")
    if not isinstance(collection, str) or not collection:
        raise DocumentError("collection is empty; expected the collection name")
    check_name(collection, "collection")
    key = _column_text(raw_key, "key")
    if not isinstance(key, str) or not key:
        raise DocumentError("key is empty; expected the record's identity as text")
    check_name(key, "key")
    op = _column_text(raw_op, "op")
    if op is None:
        raise DocumentError(
            "op is NULL; expected 'upsert' or 'delete' (leave the column out: 'upsert')"
        )
    if op not in ("upsert", "delete"):
        raise DocumentError(f"op = {str(op)[:32]!r}; expected 'upsert' or 'delete'")
    updated_at = _column_text(raw_updated_at, "updated_at")
    if isinstance(updated_at, str) and NUMBER_TEXT.fullmatch(updated_at):
        # A number that reached the column as bytes (text SQLite would have made a number).
        updated_at = float(updated_at) if NOT_INTEGER.search(updated_at) else int(updated_at)
    ts = future.check(parse_timestamp(updated_at, "updated_at", unit), "updated_at")
    if type(body) is int:
        raise DocumentError(_too_long("body", body, limits))
    if body is None:
        document: object = None
    elif isinstance(body, str | bytes):
        # A byte order mark before the text is skipped, as at the start of a drop file.
        if body[:3] == BOM_BYTES:
            body = body[3:]
        elif body[:1] == BOM:
            body = body[1:]
        try:
            document = load_document(body, limits)
        except DocumentError as exc:
            raise DocumentError(f"body: {exc}") from None
    else:
        raise DocumentError("body must be JSON text")
    if op == "upsert" and not isinstance(document, dict):
        what = "is NULL" if body is None else f"is {_kind(document)}"
        raise DocumentError(f"body {what}; an upsert's body must be a JSON object")
    if op == "delete" and document is not None and not isinstance(document, dict):
        raise DocumentError(
            f"body is {_kind(document)}; a delete's body, when given, must be a JSON object"
        )
    text, digest = canonical(document)
    assert isinstance(row_id, int)
    return Change(
        collection,
        key,
        None if document is None else text,
        ts,
        op == "delete",
        "sql",
        digest,
        inbox_id=row_id,
    )
