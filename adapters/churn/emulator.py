"""The churn tool's database sync emulator (seed 003), and the callbacks it sends.

``POST /client-files`` with ``Authorization: Bearer <token>``: a multipart form
(parsed by python-multipart, through Starlette) with ``files`` parts and a ``data``
field, the JSON array of ``{brandId, tableName}`` matching the files in order.
Each file must be a JSON array of ``{data, createdAt, updatedAt}`` documents; a
file that is not, that holds one document with an error (a ``data`` value listed in
``bad_values``: the tool's table definitions refuse it), or whose name matches
``skip_matching`` is skipped whole, and named: 206 ``{statusCode: 206, message:
"Files uploaded partially, skipped files: a.json, b.json"}``; else 200
``{statusCode: 200, message: "Files Uploaded Successfully"}``; 401 as the document
shows (with ``early_401``, at once and before reading the body, closing the
connection: the unread body makes the kernel reset it, as many servers and proxies
do). With ``sink=True`` files are only counted (the bench's multi-GB uploads).

After an upload it calls ``callback_base + /sync-status`` (when set) after
``callback_delay_s`` with ``{data: {status, timestamp}, signature}``, the status
being ``sync_status`` (200 or 400); with ``callback_before_answer`` it calls back
first and answers the upload after. ``POST /_emulator/brand`` sends a brand
creation callback; ``POST /_emulator/send`` sends any callback, optionally with a
flipped bit, a wrong key, an old timestamp or as a replay of the last one, and
answers with the listener's status. A callback the listener did not answer 2xx
(unreachable, or refused with a 5xx) is kept and sent again, as it was (same
timestamp and signature), by ``POST /_emulator/redeliver`` or, when
``redeliver_every_s`` is set, by itself at that interval: the late callbacks of a tool
whose client was down when its sync ended. ``GET|POST /client-data/integration-errors``
answers the URL of ``GET /_emulator/error-log`` (GET answers 405 when
``errors_get_405``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..emulators.common import DroppedConnection, Emulator
from .adapter import callback_signature

UNAUTHORIZED = {
    "statusCode": 401,
    "message": "You are not allowed to perform that action",
    "error": "Unauthorized",
}
ERROR_LOG = "row 3: data.email is not a valid address\nrow 9: data.id is missing\n"


def is_document(value: Any) -> bool:
    """The tool's document shape."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("data"), dict)
        and isinstance(value.get("createdAt"), int)
        and isinstance(value.get("updatedAt"), int)
    )


class ChurnEmulator(Emulator):
    """In-memory churn tool tables, and a callback sender."""

    name = "churn"

    def __init__(
        self,
        token: str = "churn-token",
        callback_secret: str = "churn-callback-secret",
        *,
        callback_base: str | None = None,
        callback_delay_s: float = 0.2,
        sync_status: int = 200,
        sink: bool = False,
    ) -> None:
        super().__init__()
        self.token = token
        self.callback_secret = callback_secret
        self.callback_base = callback_base
        self.callback_delay_s = callback_delay_s
        self.sync_status = sync_status
        self.sink = sink
        self.skip_matching: list[str] = []
        # A document whose data holds one of these values (as a field's value) has an error
        # the tool refuses: its whole file is skipped.
        self.bad_values: list[Any] = []
        # Answer an unauthorized upload at once, before reading its body, and close.
        self.early_401 = False
        # Uploads from this one on (counted from 1) are answered 503 (the tool went away), or
        # held unanswered, their body unread, until this is set back to None.
        self.unavailable_from_upload: int | None = None
        self.stall_from_upload: int | None = None
        self.upload_attempts = 0
        # Callbacks not answered 2xx, (kind, body) as first sent, kept to be sent again.
        self.undelivered: list[tuple[str, dict[str, Any]]] = []
        self.redeliver_every_s: float | None = None
        self._redelivering = False
        self.errors_get_405 = False
        # Answer uploads and integration-errors with 400 quoting the request's Authorization.
        self.echo_authorization = False
        # Send the sync-status callback (and wait for the listener's answer) before answering
        # the upload: the callback then arrives before the daemon can record the upload.
        self.callback_before_answer = False
        self.uploads: list[dict[str, Any]] = []  # per upload: files [{name, meta, docs|bytes}]
        self.documents: list[tuple[Any, Any, dict[str, Any]]] = []  # (brandId, table, doc)
        self.callbacks_sent: list[tuple[str, dict[str, Any], int]] = []  # (path, body, status)
        self.base_url = ""
        self.callback_suffix = ""  # "/NAME" when the daemon has several churn providers

    def reset(self) -> None:
        """Forget faults, uploads and callbacks."""
        super().reset()
        with self.lock:
            self.uploads.clear()
            self.documents.clear()
            self.callbacks_sent.clear()
            self.skip_matching.clear()
            self.bad_values.clear()
            self.undelivered.clear()

    def routes(self) -> list[Route]:
        """The documented routes, and the controls of the callbacks."""
        return [
            Route("/client-files", self.client_files, methods=["POST"]),
            Route(
                "/client-data/integration-errors", self.integration_errors, methods=["GET", "POST"]
            ),
            Route("/_emulator/error-log", self.error_log, methods=["GET"]),
            Route("/_emulator/brand", self.brand_control, methods=["POST"]),
            Route("/_emulator/send", self.send_control, methods=["POST"]),
            Route("/_emulator/redeliver", self.redeliver_control, methods=["POST"]),
            Route("/_emulator/uploads", self.uploads_seen, methods=["GET"]),
        ]

    async def uploads_seen(self, request: Request) -> Response:
        """Every upload: its files (name, meta, documents or bytes), size and duration."""
        with self.lock:
            return JSONResponse(self.uploads)

    def authorized(self, request: Request) -> bool:
        """The standard authorization: ``Bearer <token>``."""
        return request.headers.get("authorization") == f"Bearer {self.token}"

    async def client_files(self, request: Request) -> Response:
        """The upload endpoint."""
        if not self.authorized(request):
            if self.early_401:
                with self.lock:
                    self.uploads.append({"files": [], "skipped": [], "refused": 401})
                return _AnswerAndClose(UNAUTHORIZED, status_code=401)
            async for _ in request.stream():
                pass
            return JSONResponse(UNAUTHORIZED, status_code=401)
        self.base_url = f"{request.url.scheme}://{request.url.netloc}"
        with self.lock:
            self.upload_attempts += 1
            attempt = self.upload_attempts
            unavailable = (
                self.unavailable_from_upload is not None and attempt >= self.unavailable_from_upload
            )
        while self.stall_from_upload is not None and attempt >= self.stall_from_upload:  # noqa: ASYNC110 -- set from tests
            await asyncio.sleep(0.05)
        if unavailable:
            async for _ in request.stream():
                pass
            return JSONResponse({"statusCode": 503, "message": "unavailable"}, status_code=503)
        if self.echo_authorization:
            async for _ in request.stream():
                pass
            echoed = request.headers.get("authorization", "")
            return JSONResponse({"statusCode": 400, "message": f"bad request from {echoed}"}, 400)
        return await self.handle_request(request, lambda: self._upload(request))

    async def _upload(self, request: Request) -> tuple[int, Any]:
        started = time.monotonic()
        try:
            form = await request.form(max_files=100_000, max_fields=10, max_part_size=16 << 20)
        except Exception as exc:  # the parser's own errors: a malformed form
            return 400, {"statusCode": 400, "message": f"malformed form-data: {exc}"}
        try:
            files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
            raw = form.get("data")
            try:
                meta = orjson.loads(raw) if isinstance(raw, str) else None
            except orjson.JSONDecodeError:
                meta = None
            if not isinstance(meta, list) or len(meta) != len(files) or not files:
                return 400, {
                    "statusCode": 400,
                    "message": "data must be a JSON array with one {brandId, tableName} per file",
                }
            received: list[dict[str, Any]] = []
            skipped: list[str] = []
            for upload, about in zip(files, meta, strict=True):
                name = upload.filename or ""
                entry: dict[str, Any] = {"name": name, "meta": about}
                if any(pattern in name for pattern in self.skip_matching):
                    skipped.append(name)
                    continue
                if self.sink:
                    upload.file.seek(0, 2)
                    entry["bytes"] = upload.file.tell()
                    received.append(entry)
                    continue
                documents = _documents(await upload.read())
                if documents is None or not isinstance(about, dict) or self._has_bad(documents):
                    skipped.append(name)
                    continue
                entry["docs"] = len(documents)
                received.append(entry)
                with self.lock:
                    for document in documents:
                        self.documents.append(
                            (about.get("brandId"), about.get("tableName"), document)
                        )
                        data = document["data"]
                        self.applied[
                            f"{about.get('tableName')}:{about.get('brandId')}:"
                            f"{data.get('id')}@{document['updatedAt']}"
                        ] += 1
        finally:
            await form.close()
        with self.lock:
            self.uploads.append(
                {
                    "files": received,
                    "skipped": skipped,
                    "bytes": int(request.headers.get("content-length") or 0),
                    "seconds": time.monotonic() - started,  # receiving and parsing the form
                }
            )
        if self.callback_base and received and self.callback_before_answer:
            await self._sync_status_later(delay_s=0.0)
        elif self.callback_base and received:
            asyncio.get_running_loop().create_task(self._sync_status_later())
        if skipped:
            return 206, {
                "statusCode": 206,
                "message": f"Files uploaded partially, skipped files: {', '.join(skipped)}",
            }
        return 200, {"statusCode": 200, "message": "Files Uploaded Successfully"}

    def _has_bad(self, documents: list[dict[str, Any]]) -> bool:
        """Whether a document of the file holds one of ``bad_values`` in its data."""
        if not self.bad_values:
            return False
        bad = [orjson.dumps(value) for value in self.bad_values]
        return any(
            orjson.dumps(value) in bad for doc in documents for value in doc["data"].values()
        )

    async def _sync_status_later(self, delay_s: float | None = None) -> None:
        await asyncio.sleep(self.callback_delay_s if delay_s is None else delay_s)
        await self.send("sync-status", {"status": self.sync_status, "timestamp": _now_ms()})

    async def send(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        secret: str | None = None,
        flip_bit: bool = False,
        body: dict[str, Any] | None = None,
    ) -> int:
        """POST a signed callback to the listener; returns its status (0: unreachable)."""
        if body is None:
            signature = callback_signature(secret or self.callback_secret, data)
            if flip_bit:
                flipped = int(signature[-1], 16) ^ 1
                signature = signature[:-1] + f"{flipped:x}"
            body = {"data": data, "signature": signature}
        path = f"{self.callback_base}/{kind}{self.callback_suffix}"
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(
                    path, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
                )
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        with self.lock:
            self.callbacks_sent.append((kind, body, status))
            if status == 0 or status >= 500:
                self.undelivered.append((kind, body))
                start = self.redeliver_every_s is not None and not self._redelivering
                self._redelivering = self._redelivering or start
            else:
                start = False
        if start:
            asyncio.get_running_loop().create_task(self._redeliver_every())
        return status

    async def redeliver(self) -> list[int]:
        """Send the kept callbacks again, as they were; returns the listener's statuses."""
        with self.lock:
            kept, self.undelivered = self.undelivered, []
        return [await self.send(kind, {}, body=body) for kind, body in kept]

    async def _redeliver_every(self) -> None:
        try:
            while self.redeliver_every_s is not None:
                await asyncio.sleep(self.redeliver_every_s)
                await self.redeliver()
                with self.lock:
                    if not self.undelivered:
                        return
        finally:
            with self.lock:
                self._redelivering = False

    async def redeliver_control(self, request: Request) -> Response:
        """Send the kept callbacks again: ``{"statuses": [...]}``."""
        return JSONResponse({"statuses": await self.redeliver()})

    async def brand_control(self, request: Request) -> Response:
        """``{stopChurnBrandId, brandIdFromClient}``: send the brand creation callback."""
        data = await request.json()
        status = await self.send("brand", data)
        return JSONResponse({"status": status})

    async def send_control(self, request: Request) -> Response:
        """Send a callback: ``{kind, data?, status?, age_s?, wrong_key?, flip_bit?, replay?}``."""
        spec = await request.json()
        kind = spec.get("kind", "sync-status")
        if spec.get("replay"):
            with self.lock:
                last = next((b for k, b, s in reversed(self.callbacks_sent) if k == kind), None)
            if last is None:
                return JSONResponse({"error": "nothing to replay"}, status_code=400)
            return JSONResponse({"status": await self.send(kind, {}, body=last)})
        data = spec.get("data") or {
            "status": spec.get("status", self.sync_status),
            "timestamp": _now_ms() - int(float(spec.get("age_s", 0)) * 1000),
        }
        status = await self.send(
            kind,
            data,
            secret="not-the-secret" if spec.get("wrong_key") else None,
            flip_bit=bool(spec.get("flip_bit")),
        )
        return JSONResponse({"status": status})

    async def integration_errors(self, request: Request) -> Response:
        """The URL of the latest error log (GET may answer 405, as the document is unclear)."""
        if not self.authorized(request):
            return JSONResponse({**UNAUTHORIZED, **self.echoed(request)}, status_code=401)
        if self.echo_authorization:
            echoed = request.headers.get("authorization", "")
            return JSONResponse({"statusCode": 400, "message": f"bad request from {echoed}"}, 400)
        if request.method == "GET" and self.errors_get_405:
            return JSONResponse({"statusCode": 405, "message": "Method Not Allowed"}, 405)
        return JSONResponse(f"{request.url.scheme}://{request.url.netloc}/_emulator/error-log")

    async def error_log(self, request: Request) -> Response:
        """The error log itself."""
        return PlainTextResponse(ERROR_LOG)


class _AnswerAndClose(JSONResponse):
    """The whole answer, then the connection closed without reading the request's body (the
    server raises after its answer: uvicorn closes the transport)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await super().__call__(scope, receive, send)
        raise DroppedConnection("answered before reading the body; closing")


def _documents(raw: bytes) -> list[dict[str, Any]] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, list) or not all(is_document(d) for d in value):
        return None
    return value


def _now_ms() -> int:
    return int(time.time() * 1000)
