"""Turning documents into changes: shapes, identity, timestamps, canonical bodies.

Shapes recognised per document (docs/drop-folder.md):

* churn envelope ``{data, createdAt, updatedAt}``: key ``data.id``, timestamp ``updatedAt``
* favourites action ``{user, item, action, actionDate}``: key ``user:item``, timestamp
  ``actionDate``, ``action: DELETE`` is a delete
* a plain object, with the collection's configured ``key`` and ``timestamp`` paths

A collection's configured paths override the envelope defaults. Any document may
carry ``"_deleted": true`` to delete its key (favourites use their action instead).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from dropsync.daemon.clock import format_timestamp
from dropsync.daemon.config import CollectionConfig
from dropsync.daemon.errors import DocumentError
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
        raise DocumentError(f"{field} = {value!r} is out of range (epoch ms 0 .. year 9999)")
    return ms


def canonical(document: object) -> tuple[str, str]:
    """The canonical JSON text of a document and its digest (sha256, 32 hex)."""
    try:
        raw = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise DocumentError(f"cannot encode document as JSON: {exc}") from None
    return raw.decode(), hashlib.sha256(raw).hexdigest()[:32]


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


def _key_text(value: object, field: str) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise DocumentError(f"key field {field} is missing")
    raise DocumentError(
        f"key field {field} = {str(value)[:64]!r} is not a non-empty string or integer"
    )


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
        self.latest_allowed = now_ms + max_skew_ms
        self.max_skew_ms = max_skew_ms

    def change(
        self, document: object, *, file_id: int | None = None, doc_index: int | None = None
    ) -> Change:
        """Recognise ``document``'s shape and build its change; DocumentError says why not."""
        if not isinstance(document, dict):
            raise DocumentError(f"expected a JSON object, found {type(document).__name__}")
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
        if ts > self.latest_allowed:
            raise DocumentError(
                f"timestamp {format_timestamp(ts)} is more than {self.max_skew_ms // 1000} s "
                "ahead of this machine's clock (daemon.max_clock_skew_s); a future-dated "
                "version would win every later change: fix the source's clock or the value"
            )
        try:
            raw = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        except TypeError as exc:
            raise DocumentError(f"cannot encode document as JSON: {exc}") from None
        body, digest = raw.decode(), hashlib.sha256(raw).hexdigest()[:32]
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


def inbox_change(row: tuple[object, ...], *, max_skew_ms: int, now_ms: int) -> Change:
    """Validate a SQL inbox row ``(id, collection, key, op, body, updated_at)`` into a change."""
    row_id, collection, key, op, body, updated_at = row
    if not isinstance(collection, str) or not collection:
        raise DocumentError("collection is empty; expected the collection name")
    if not isinstance(key, str) or not key:
        raise DocumentError("key is empty; expected the record's identity as text")
    if op not in ("upsert", "delete"):
        raise DocumentError(f"op = {str(op)[:32]!r}; expected 'upsert' or 'delete'")
    ts = parse_timestamp(updated_at, "updated_at")
    if ts > now_ms + max_skew_ms:
        raise DocumentError(
            f"updated_at {format_timestamp(ts)} is more than {max_skew_ms // 1000} s ahead of "
            "this machine's clock (daemon.max_clock_skew_s)"
        )
    if body is None:
        if op == "upsert":
            raise DocumentError("body is NULL; an upsert needs a JSON object body")
        document: object = None
    else:
        if not isinstance(body, str | bytes):
            raise DocumentError("body must be JSON text")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DocumentError(f"body is not valid JSON: {exc}") from None
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
