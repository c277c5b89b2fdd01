"""The churn tool's database sync (seed 003): push as files, confirmed by signed callbacks.

``POST {base_url}/client-files`` with ``Authorization: Bearer <token>``, a
``multipart/form-data`` body: one ``files`` part per JSON file (an array of
``{data, createdAt, updatedAt}`` documents, epoch ms) and one ``data`` field, the
JSON array of ``{brandId, tableName}`` for the files, in the same order. The
engine (``daemon.delivery.filebatch``) writes the files; this adapter says which file a
record goes into (``group_of``: its brand and table), what one document is, and
uploads. Answers: 200 ``{statusCode: 200, message}`` accepted; 206 ``{statusCode:
206, message: "... skipped files: <names>"}`` accepted except the files named (the
engine narrows those down to the refused documents: ``daemon.delivery.narrowing``); 401
auth failure; anything else as the other kinds. The tool has no delete: a
tombstone is not sent and counts as delivered.

Callbacks (sync status, brand creation) carry ``{data, signature}``; the
signature rule is ``callback_signature`` (one function).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urljoin, urlsplit

import ijson
import orjson

from ..base import (
    FilePart,
    OutgoingChange,
    ProviderLimits,
    PullPage,
    PushResult,
    Waiting,
)
from ..errors import (
    AuthError,
    PermanentError,
    ProviderError,
    ProviderUnavailable,
)
from ..http import MAX_REASON, Answer, HttpAdapter, fetch, json_body, make_client
from ..multipart import FieldPart, FileUpload, MultipartBody
from ..options import OptionError, OptionReader
from ..redact import excerpt
from . import tables

MAX_FILE_MB = 2048  # the document's "up to 2GB per file"
MAX_BRAND_ID = (1 << 63) - 1  # as brands.stop_churn_brand_id, an SQLite INTEGER
MIN_UPLOAD_KB_S = 64  # an upload is allowed its size at this rate, beyond timeout_s
PROBE_ABOVE_MB = 1  # an upload larger than this is preceded by a check of the token
# A sync-status callback can arrive long after the sync (the daemon was down or offline).
MAX_CALLBACK_AGE_S = 86400.0
MAX_CALLBACK_AGE_LIMIT_S = 30 * 86400.0  # the replay memory is kept for good: any age is safe
UPLOAD_PATH = "/client-files"
ERRORS_PATH = "/client-data/integration-errors"


def signed_payload(data: Any) -> bytes:
    """The bytes a callback's signature covers: the compact JSON text of its ``data``.

    Separators ``,`` and ``:``, keys in the order received, non-ASCII as UTF-8. The
    document does not say; this is the assumption (docs/providers.md), kept in this one
    function so that another rule is a one-line change.
    """
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def callback_signature(secret: str, data: Any) -> str:
    """The lowercase hex HMAC-SHA512 of ``signed_payload(data)`` keyed with ``secret``."""
    return hmac.new(secret.encode(), signed_payload(data), hashlib.sha512).hexdigest()


def signature_valid(secret: str, data: Any, signature: object) -> bool:
    """Whether ``signature`` is the right one for ``data`` (compared in constant time)."""
    if not isinstance(signature, str) or len(signature) != 128 or not signature.isascii():
        return False  # (compare_digest takes only ASCII text)
    try:
        expected = callback_signature(secret, data)
    except UnicodeEncodeError:  # a lone surrogate in data: no UTF-8 text to sign
        return False
    return hmac.compare_digest(expected, signature.lower())


def callback_age_problem(timestamp: int, now: int, max_age_s: float, ahead_ms: int) -> str | None:
    """Why a sync-status callback dated ``timestamp`` (epoch ms) is refused at ``now``, or
    None: older than ``max_age_s`` (the replay memory keeps every signature longer), or
    dated further ahead than the clocks may differ (``ahead_ms``: max_clock_skew_s)."""
    if now - timestamp > max_age_s * 1000:
        return "data.timestamp is older than max_callback_age_s"
    if timestamp - now > ahead_ms:
        return "data.timestamp is in the future, beyond max_clock_skew_s"
    return None


# The secret's values travel in headers (and so must be printable ASCII).
SECRET_IN_HEADERS = True


def secret_values(secret: str | None) -> list[str]:
    """The values of the secret that travel in requests: the bearer token."""
    return [] if secret is None else [secret]


def upload_answer(answer: Answer) -> tuple[int, str]:
    """(status, message) of the documented upload answer: 200 or 206 with a JSON object
    ``{statusCode: <the status>, message: <text>}``."""
    if answer.status not in (200, 206):
        raise ValueError(f"an upload answers 200 or 206, not {answer.status}")
    reply = json_body(answer)
    message = reply.get("message") if isinstance(reply, dict) else None
    if not isinstance(reply, dict) or reply.get("statusCode") != answer.status:
        raise ValueError("not the documented {statusCode, message}")
    if not isinstance(message, str):
        raise ValueError("not the documented {statusCode, message}")
    return answer.status, message


def skipped_parts(message: str, names: Sequence[str]) -> list[int]:
    """The indexes of ``names`` a 206 message lists as skipped ("... skipped files: a.json,
    b.json"): the names after the last ``skipped files:``, separated by commas or spaces;
    when none of ours is there exactly, any of ours the message contains."""
    _, found, listed = message.lower().rpartition("skipped files:")
    tail = message[len(message) - len(listed) :] if found else message
    tokens = {token.strip("\"'[]()") for token in re.split(r"[,\s]+", tail)}
    exact = [i for i, name in enumerate(names) if name in tokens]
    return exact or [i for i, name in enumerate(names) if name in message]


@dataclass(frozen=True, slots=True)
class ChurnOptions:
    """The churn kind's own config keys."""

    tables: Mapping[str, str] = field(default_factory=dict)
    brand_id: int | None = None
    brand_field: str | None = None
    max_file_bytes: int = MAX_FILE_MB << 20
    max_upload_bytes: int = 8 << 30
    auth_scheme: str = "Bearer"
    max_callback_age_s: float = MAX_CALLBACK_AGE_S
    integration_log_max_bytes: int = 5 << 20
    min_upload_rate: int = MIN_UPLOAD_KB_S << 10
    probe_above_bytes: int = PROBE_ABOVE_MB << 20


def parse_options(options: Mapping[str, Any]) -> ChurnOptions:
    """Validate ``[providers.NAME]`` keys of kind churn."""
    read = OptionReader(options)
    read.used.update(("callback_secret_env", "callback_secret_file", "callback_credential"))
    read.used.add("tables")
    tables = options.get("tables", {})
    if not isinstance(tables, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in tables.items()
    ):
        raise OptionError("tables", 'expected a table of collection = "tableName"')
    brand_id = None
    if options.get("brand_id") is not None:  # the churn tool's id: a positive SQLite integer
        brand_id = read.integer("brand_id", None, minimum=1, maximum=MAX_BRAND_ID)
    read.used.add("brand_id")
    brand_field = read.string("brand_field")
    if (brand_id is None) == (brand_field is None):
        raise OptionError("brand_id", "give exactly one of brand_id (a fixed brand) or brand_field")
    max_file_mb = read.number("max_file_mb", MAX_FILE_MB, minimum=0.001, maximum=MAX_FILE_MB)
    parsed = ChurnOptions(
        tables=dict(tables),
        brand_id=brand_id,
        brand_field=brand_field,
        max_file_bytes=int(max_file_mb * (1 << 20)),
        max_upload_bytes=int(
            read.number("max_upload_mb", 8192, minimum=0.001, maximum=1 << 20) * (1 << 20)
        ),
        auth_scheme=read.string("auth_scheme") or "Bearer",
        max_callback_age_s=read.number(
            "max_callback_age_s", MAX_CALLBACK_AGE_S, minimum=1.0, maximum=MAX_CALLBACK_AGE_LIMIT_S
        ),
        integration_log_max_bytes=int(
            read.number("integration_log_max_mb", 5.0, minimum=0.001, maximum=64.0) * (1 << 20)
        ),
        min_upload_rate=read.integer("min_upload_kb_s", MIN_UPLOAD_KB_S, minimum=1, maximum=1 << 20)
        << 10,
        probe_above_bytes=int(
            read.number("probe_above_mb", PROBE_ABOVE_MB, minimum=0.0, maximum=1 << 20) * (1 << 20)
        ),
    )
    read.reject_unknown()
    return parsed


def dotted(body: Mapping[str, Any] | None, path: str) -> Any:
    """The value at a dotted path in a JSON object, or None."""
    value: Any = body
    for name in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def brand_text(value: Any) -> str | None:
    """A client brand id as the ``brands`` table keeps it (JSON scalars as text)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        return str(value)
    return None


def is_envelope(body: Mapping[str, Any] | None) -> bool:
    """Whether a record body already is the tool's ``{data, createdAt, updatedAt}`` document."""
    return (
        body is not None
        and isinstance(body.get("data"), Mapping)
        and isinstance(body.get("createdAt"), int)
        and isinstance(body.get("updatedAt"), int)
    )


class ChurnProvider(HttpAdapter):
    """Uploads records as JSON files to the churn tool."""

    def __init__(
        self,
        name: str,
        base_url: str,
        options: ChurnOptions,
        secret: str | None,
        timeout_s: float,
        batch_max_items: int | None,
    ) -> None:
        self.name = name
        self.options = options
        self.max_file_bytes = options.max_file_bytes
        self.limits = ProviderLimits(
            max_items=batch_max_items or 5000,
            max_bytes=options.max_upload_bytes,
            file_batches=True,
        )
        headers = {"Accept": "application/json"}
        if secret is not None:
            headers["Authorization"] = f"{options.auth_scheme} {secret}"
        super().__init__(
            base_url,
            timeout_s,
            secrets=secret_values(secret),
            headers=headers,
            min_upload_rate=options.min_upload_rate,
        )

    def table_of(self, collection: str) -> str:
        """The tool's tableName for a collection."""
        return self.options.tables.get(collection, collection)

    def _check(self, change: OutgoingChange) -> str | None:
        """A record needs a brand (when taken from the record) and an object body."""
        if change.deleted:
            return None
        if change.body is None:
            return "record has no body"
        if self.options.brand_field is not None:
            value = dotted(change.body, self.options.brand_field)
            if brand_text(value) is None:
                return f"record has no brand id (a string or integer) at {self.options.brand_field}"
        return None

    def mapping(self, db: sqlite3.Connection) -> Mapping[str, int]:
        """Client brand id -> the tool's brand id, as its brand callbacks said."""
        return tables.brand_map(db, self.name)

    def group_of(self, change: OutgoingChange, mapped: Mapping[str, int]) -> Hashable | Waiting:
        """(brand id, tableName); a record of a brand no callback has mapped yet waits."""
        table = self.table_of(change.collection)
        if self.options.brand_id is not None:
            return (self.options.brand_id, table)
        client = brand_text(dotted(change.body, self.options.brand_field or ""))
        brand = mapped.get(client or "")
        if brand is None:
            return Waiting(f"client brand {client!r} has no brand callback yet")
        return (brand, table)

    def file_meta(self, group: Hashable) -> Mapping[str, Any]:
        """``{brandId, tableName}`` for the ``data`` field."""
        brand, table = cast(tuple[int, str], group)
        return {"brandId": brand, "tableName": table}

    def document(self, change: OutgoingChange) -> bytes:
        """The record as the tool's document: as is when it has that shape, else wrapped."""
        body = change.body or {}
        if is_envelope(body):
            return orjson.dumps(body)
        return orjson.dumps(
            {"data": body, "createdAt": change.updated_at, "updatedAt": change.updated_at}
        )

    def verify_file(self, part: FilePart) -> str | None:
        """The file must still be a JSON array of documents of the tool's shape (streamed)."""
        try:
            with part.path.open("rb") as file:
                # Numbers as written (no use_float): an integer past 64 bits is data too.
                for index, document in enumerate(ijson.items(file, "item")):
                    if not is_envelope(document):
                        return (
                            f"file {part.path.name}: document {index} is not "
                            "{data, createdAt, updatedAt}"
                        )
        except (OSError, ijson.JSONError) as exc:
            return f"file {part.path.name} is not a readable JSON array: {exc}"
        return None

    async def _push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        """Not used: the engine sends this kind's batches as files (``push_files``)."""
        raise PermanentError("the churn kind takes file batches only")

    async def push_files(self, parts: Sequence[FilePart], *, idempotency_key: str) -> PushResult:
        """One multipart upload of every part (through the adapter's boundary, as ``push``)."""
        with self._boundary():
            return await self._upload(parts)

    async def _upload(self, parts: Sequence[FilePart]) -> PushResult:
        data = orjson.dumps([dict(part.meta) for part in parts]).decode()
        body = MultipartBody(
            [
                FieldPart("data", data),
                *(FileUpload("files", part.path.name, part.path) for part in parts),
            ]
        )
        if body.length > self.options.probe_above_bytes:
            # A server may read a whole body before it says the token is wrong: not gigabytes.
            await self._token_check(f"before an upload of {body.length / (1 << 20):.1f} MB")
        try:
            status, message = await self.send(
                "POST",
                UPLOAD_PATH,
                expect=upload_answer,
                content=body.stream(),
                # No Idempotency-Key: the tool documents none, and a batch sent again after
                # a failed sync must be processed again (documents are upserts by id).
                headers=body.headers,
                upload_bytes=body.length,  # its deadline grows with its size (adapters.deadline)
            )
        except ProviderUnavailable:
            # Cut off without an answer we could read (over TLS, an answer sent before the
            # body was read can be lost with the connection): was it the token?
            await self._token_check("after an upload cut off without an answer")
            raise
        if status == 200:
            return PushResult(state="accepted", status=status)
        named = skipped_parts(message, [part.path.name for part in parts])
        reason = f"HTTP 206: {excerpt(message, self.redact, limit=MAX_REASON)}"
        skipped = named or list(range(len(parts)))
        return PushResult(
            state="accepted", status=status, skipped=tuple((i, reason) for i in skipped)
        )

    async def fetch_integration_errors(self) -> tuple[str | None, str | None, str | None]:
        """The latest integration error log: (url, body, error), secret-free; never raises."""
        try:
            with self._boundary():
                url = await self._integration_log_url()
        except ProviderError as exc:
            return None, None, f"fetching {ERRORS_PATH}: {exc}"[:MAX_REASON]
        try:
            body = await download(
                url, self.options.integration_log_max_bytes, timeout_s=self.timeout_s
            )
        except ValueError as exc:
            return self.redact(url), None, self.redact(str(exc))
        return self.redact(url), self.redact(body), None

    async def _integration_log_url(self) -> str:
        try:
            return await self.send("GET", ERRORS_PATH, expect=_url_in)
        except ProviderError as exc:
            if exc.status != 405:  # the document says GET and POST: POST when GET is refused
                raise
        return await self.send("POST", ERRORS_PATH, expect=_url_in)

    async def probe(self) -> str:
        """``GET /client-data/integration-errors`` (POST when GET answers 405, as when the log
        is fetched): it reads the latest error log's address, changes nothing, and the tool
        refuses it without a valid token (401)."""
        with self._boundary():
            return await self._probe()

    async def _probe(self) -> str:
        method = "GET"
        try:
            await self.send(method, ERRORS_PATH, expect=_probe_answer)
        except ProviderError as exc:
            if exc.status != 405:
                raise
            method = "POST"
            await self.send(method, ERRORS_PATH, expect=_probe_answer)
        return f"{method} {ERRORS_PATH}"

    async def _token_check(self, when: str) -> None:
        """The probe's request, ``when`` an upload cannot tell: raises ``AuthError`` if the
        token is refused; any other outcome says nothing about the token (the upload's own
        answer counts)."""
        try:
            await self._probe()
        except AuthError as exc:
            raise AuthError(f"{exc}, asked {ERRORS_PATH} {when}", status=exc.status) from None
        except ProviderError:
            return

    async def _pull(self, cursor: str | None) -> PullPage:
        """The churn tool has nothing to pull."""
        raise PermanentError("the churn kind is push-only")


def _url_in(answer: Answer) -> str:
    """The URL an integration-errors answer holds: a JSON string, ``{url}``, or plain text."""
    try:
        value: Any = answer.json()
    except ValueError:
        value = answer.text().strip()
    if isinstance(value, dict):
        value = value.get("url") or value.get("URL") or value.get("link")
    if isinstance(value, str) and urlsplit(value.strip()).scheme in ("http", "https"):
        return value.strip()
    raise ValueError("the answer holds no URL")


def _probe_answer(answer: Answer) -> None:
    """A probe's success: empty, JSON or a URL; not a page of some other server."""
    if not answer.body.strip():
        return
    try:
        answer.json()
    except ValueError:
        _url_in(answer)


def download_refusal(url: str, host: str | None, secure: bool) -> str | None:
    """Why ``url`` (the error log's, or a redirect's target) is not downloaded, or None: only
    http(s), only ``host``, and never from https back to http (the log's URL is signed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"refusing to download a {parts.scheme or 'relative'} URL"
    if parts.hostname != host:
        return f"refusing a redirect to another host ({parts.hostname})"
    if secure and parts.scheme != "https":
        return "refusing a redirect from https to http (the log's signed URL would travel in clear)"
    return None


async def download(url: str, max_bytes: int, *, timeout_s: float, max_redirects: int = 5) -> str:
    """GET ``url`` without credentials: http(s) only, redirects only to the same host, at most
    ``max_bytes`` (decoded), each request within ``timeout_s`` (raises ValueError saying why
    not)."""
    first = urlsplit(url)
    async with make_client() as client:
        for _ in range(max_redirects + 1):
            refusal = download_refusal(url, first.hostname, first.scheme == "https")
            if refusal is not None:
                raise ValueError(refusal)
            try:
                answer = await fetch(
                    client,
                    "GET",
                    url,
                    timeout_s=timeout_s,
                    max_bytes=max_bytes,
                    cap="integration_log_max_mb",
                )
            except ProviderError as exc:
                raise ValueError(f"downloading the error log: {exc}") from None
            if 300 <= answer.status < 400:
                url = urljoin(url, answer.headers.get("location", ""))
                continue
            if answer.status != 200:
                raise ValueError(f"downloading the error log: HTTP {answer.status}")
            return answer.body.decode("utf-8", errors="replace")
        raise ValueError("too many redirects downloading the error log")


def build(
    name: str,
    base_url: str,
    options: Mapping[str, Any],
    secret: str | None,
    timeout_s: float,
    batch_max_items: int | None,
) -> ChurnProvider:
    """The adapter for a ``kind = "churn"`` provider."""
    return ChurnProvider(name, base_url, parse_options(options), secret, timeout_s, batch_max_items)
