"""Turning documents into changes: shapes, identity, timestamps, canonical bodies.

Shapes recognised per document (docs/drop-folder.md):

* churn envelope ``{data, createdAt, updatedAt}``: key ``data.id``, timestamp ``updatedAt``
* favourites action ``{user, item, action, actionDate}``: key ``user:item``, timestamp
  ``actionDate``, ``action: DELETE`` is a delete
* a plain object, with the collection's configured ``key`` and ``timestamp`` paths

A collection's configured paths override the envelope defaults. Any document may
carry ``"_deleted": true`` to delete its key (favourites use their action instead).

Two rules live here once for every way a change arrives (drop file, inbox row,
provider pull): the canonical body and its digest (``canonical``), and the
refusal of timestamps too far in the future (``FutureLimit``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from dropsync.daemon.clock import format_timestamp
from dropsync.daemon.config import CollectionConfig
from dropsync.daemon.errors import DocumentError
from dropsync.daemon.jsontext import DEFAULT_LIMITS, JsonLimits, exact_integers, load_document
from dropsync.store.merge import Change

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# Accepted range of timestamps: 1970-01-01 .. 9999-12-31, in ms.
_MAX_TS = 253402300799999


def parse_timestamp(value: object, field: str) -> int:
    """Normalise an epoch-ms number or an ISO-8601 string with offset/``Z`` to epoch ms UTC."""
    if isinstance(value, bool):
        raise DocumentError(f"{field} is a boolean; expected epoch milliseconds or ISO-8601")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise DocumentError(f"{field} = {value!r} is not a whole number of milliseconds")
        ms = int(value)
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
    elif value is None:
        raise DocumentError(f"{field} is missing")
    else:
        raise DocumentError(
            f"{field} has type {type(value).__name__}; expected epoch ms or ISO-8601"
        )
    if not 0 <= ms <= _MAX_TS:
        raise DocumentError(
            f"{field} = {str(value)[:40]} is out of range (epoch ms 0 .. year 9999)"
        )
    return ms


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
        self.future = FutureLimit.at(now_ms, max_skew_ms)

    def change(
        self, document: object, *, file_id: int | None = None, doc_index: int | None = None
    ) -> Change:
        """Recognise ``document``'s shape and build its change; DocumentError says why not."""
        if not isinstance(document, dict):
            raise DocumentError(f"expected a JSON object, found {_kind(document)}")
        deleted = document.get("_deleted") is True
        if "actionDate" in document and "item" in document and "action" in document:
            key, ts, deleted = self._favourite(document)
        elif "data" in document and "updatedAt" in document:
            raw_key = (self._key or _DATA_ID)(document)
            raw_ts = (self._ts or _UPDATED_AT)(document)
            # The common case (integer id, epoch-ms integer) without the general checks.
            if type(raw_key) is int and type(raw_ts) is int and 0 <= raw_ts <= _MAX_TS:
                key, ts = str(raw_key), raw_ts
            else:
                key = _key_text(raw_key, self.key_path or "data.id")
                ts = parse_timestamp(raw_ts, self.ts_path or "updatedAt")
        elif self._key is not None and self._ts is not None:
            key = _key_text(self._key(document), str(self.key_path))
            ts = parse_timestamp(self._ts(document), str(self.ts_path))
        else:
            raise DocumentError(
                "unrecognised document: not a churn envelope {data, createdAt, updatedAt}, "
                "not a favourites action {user, item, action, actionDate}, and collection "
                f"{self.collection!r} configures no key and timestamp for plain objects"
            )
        self.future.check(ts, "timestamp")
        body, digest = canonical(document)
        return Change(
            self.collection, key, body, ts, deleted, self.origin, digest, file_id, doc_index
        )

    def _favourite(self, document: Mapping[str, Any]) -> tuple[str, int, bool]:
        action = document.get("action")
        if action not in ("ADD", "DELETE"):
            raise DocumentError(f"action = {str(action)[:32]!r}; expected ADD or DELETE")
        user = _key_text(document.get("user"), "user")
        item = _key_text(document.get("item"), "item")
        key = _key_text(self._key(document), str(self.key_path)) if self._key else f"{user}:{item}"
        ts = parse_timestamp(
            self._ts(document) if self._ts else document.get("actionDate"),
            self.ts_path or "actionDate",
        )
        return key, ts, action == "DELETE"


_DATA_ID = _getter("data.id")
_UPDATED_AT = _getter("updatedAt")


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
    row: tuple[object, ...], *, future: FutureLimit, limits: JsonLimits = DEFAULT_LIMITS
) -> Change:
    """Validate a SQL inbox row ``(id, collection, key, op, body, updated_at)`` into a change.

    The row is as ``store.merge.pending_inbox`` reads it: text columns as UTF-8
    bytes (decoded here, so text that is not UTF-8 is a reason, not a crash), and a
    body longer than ``limits.max_bytes`` as its length.
    """
    row_id, raw_collection, raw_key, raw_op, body, raw_updated_at = row
    collection = _column_text(raw_collection, "collection")
    if not isinstance(collection, str) or not collection:
        raise DocumentError("collection is empty; expected the collection name")
    check_name(collection, "collection")
    key = _column_text(raw_key, "key")
    if not isinstance(key, str) or not key:
        raise DocumentError("key is empty; expected the record's identity as text")
    check_name(key, "key")
    op = _column_text(raw_op, "op")
    if op not in ("upsert", "delete"):
        raise DocumentError(f"op = {str(op)[:32]!r}; expected 'upsert' or 'delete'")
    updated_at = _column_text(raw_updated_at, "updated_at")
    ts = future.check(parse_timestamp(updated_at, "updated_at"), "updated_at")
    if type(body) is int:
        raise DocumentError(
            f"body is {body:,} bytes, longer than the limit of {limits.max_bytes:,} "
            "(drop.max_document_mb)"
        )
    if body is None:
        document: object = None
    elif isinstance(body, str | bytes):
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
