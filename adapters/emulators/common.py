"""What every provider emulator shares: a real HTTP server on loopback, fault injection,
idempotency, and a record of what arrived.

An emulator is a Starlette app served by uvicorn in a background thread
(``EmulatorServer``). Faults are set from Python (``server.faults``) or over HTTP:

* ``POST /_emulator/faults`` with JSON ``{"status": 503, "count": 2, "retry_after": "2",
  "failure_rate": 0.1, "latency_ms": 50, "drop": 1, "seed": 7}`` (all optional);
* an answer of any shape: ``{"status": 200, "body": "<html>...", "headers": {"Location":
  "..."}, "content_type": "text/html"}`` answers with exactly that (any status, 2xx
  included) instead of applying the request; ``{authorization}`` in the body or a header
  value is replaced by the request's own ``Authorization`` header, ``{body}`` by the
  request's body (a provider that echoes what it was sent);
* ``echo_refusals`` (an attribute): a refusal of credentials (401) quotes what the request
  carried (its ``Authorization`` header, and a login's body), as some providers do;
* ``GET /_emulator/state``: requests received, applications per record version;
* ``POST /_emulator/reset``: forget faults and everything received.

``stop()`` really closes the port (clients get "connection refused": the provider is
offline) and ``start()`` opens it again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..base import IDEMPOTENCY_HEADER


@dataclass
class Faults:
    """Faults to inject; ``count`` limits ``status`` to the next N requests (None: all)."""

    status: int | None = None
    count: int | None = None
    retry_after: str | None = None
    body: str | None = None  # the faulted answer's body, exactly (default: a JSON error)
    headers: dict[str, str] | None = None
    content_type: str | None = None
    failure_rate: float = 0.0
    latency_ms: int = 0
    drop: int = 0
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def update(self, **settings: Any) -> None:
        """Set some faults (unknown names raise)."""
        for name, value in settings.items():
            if name not in (
                "status",
                "count",
                "retry_after",
                "body",
                "headers",
                "content_type",
                "failure_rate",
                "latency_ms",
                "drop",
                "seed",
            ):
                raise ValueError(f"unknown fault {name!r}")
            setattr(self, name, value)
        if "seed" in settings:
            self.rng.seed(self.seed)

    def clear(self) -> None:
        """No faults."""
        self.status = self.count = self.retry_after = None
        self.body = self.headers = self.content_type = None
        self.failure_rate, self.latency_ms, self.drop = 0.0, 0, 0


@dataclass(frozen=True)
class Arrival:
    """One request as it arrived."""

    monotonic: float
    wall: float
    method: str
    path: str
    idempotency_key: str | None
    status: int = 0


class DroppedConnection(Exception):
    """Raised after a response has started, so the server cuts the connection."""


class Emulator:
    """Base of the emulators: fault gate, idempotency replay, arrival log."""

    name = "emulator"

    def __init__(self) -> None:
        self.faults = Faults()
        self.arrivals: list[Arrival] = []
        self.applied: Counter[str] = Counter()  # "identity@version" -> times applied
        self.replies: dict[str, tuple[int, Any]] = {}
        self.lock = threading.Lock()
        self.echo_refusals = False

    def echoed(self, request: Request, sent: bytes = b"") -> dict[str, Any]:
        """What a refusal of credentials adds to its body: with ``echo_refusals``, the
        request's ``Authorization`` header and ``sent`` (the body), else nothing."""
        if not self.echo_refusals:
            return {}
        return {
            "received": {
                "authorization": request.headers.get("authorization", ""),
                "body": sent.decode("utf-8", "replace"),
            }
        }

    def routes(self) -> list[Route]:
        """The provider's own routes."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget faults and everything received."""
        with self.lock:
            self.faults.clear()
            self.arrivals.clear()
            self.applied.clear()
            self.replies.clear()

    def state(self) -> dict[str, Any]:
        """What arrived, for tests and ``GET /_emulator/state``."""
        with self.lock:
            return {
                "requests": [a.__dict__ for a in self.arrivals],
                "applied": dict(self.applied),
            }

    def app(self) -> Starlette:
        """The ASGI app: provider routes plus the control routes."""

        async def faults(request: Request) -> Response:
            try:
                self.faults.update(**(await request.json()))
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"ok": True})

        async def state(request: Request) -> Response:
            return JSONResponse(self.state())

        async def reset(request: Request) -> Response:
            self.reset()
            return JSONResponse({"ok": True})

        return Starlette(
            routes=[
                *self.routes(),
                Route("/_emulator/faults", faults, methods=["POST"]),
                Route("/_emulator/state", state, methods=["GET"]),
                Route("/_emulator/reset", reset, methods=["POST"]),
            ]
        )

    async def handle(
        self, request: Request, apply: Callable[[bytes], Awaitable[tuple[int, Any]]]
    ) -> Response:
        """Log the arrival, inject faults, replay repeats, else ``apply`` the body."""
        body = await request.body()
        return await self.handle_request(request, lambda: apply(body))

    async def handle_request(
        self, request: Request, run: Callable[[], Awaitable[tuple[int, Any]]]
    ) -> Response:
        """``handle`` for a route that reads the body itself (``run``: a streamed upload).

        A fault answers after draining the body, so the client sees the status.
        """
        key = request.headers.get(IDEMPOTENCY_HEADER)
        arrival = Arrival(time.monotonic(), time.time(), request.method, request.url.path, key)
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        status: int | None = None
        with self.lock:
            if faults.status is not None and (faults.count is None or faults.count > 0):
                status = faults.status
                if faults.count is not None:
                    faults.count -= 1
            elif faults.failure_rate and faults.rng.random() < faults.failure_rate:
                status = 500
            drop = faults.drop > 0
            if drop:
                faults.drop -= 1
        if status is not None:
            sent = bytearray()  # the first 64 KiB, for a {body} echo
            with contextlib.suppress(ClientDisconnect):
                async for chunk in request.stream():
                    sent += chunk[: max(0, 65536 - len(sent))]
            self._log(arrival, status)
            return _faulted(
                faults,
                status,
                request.headers.get("authorization", ""),
                sent.decode("utf-8", "replace"),
            )
        with self.lock:
            replay = self.replies.get(key) if key else None
        if replay is None:
            replay = await run()
            if key and 200 <= replay[0] < 300:
                with self.lock:
                    self.replies[key] = replay
        self._log(arrival, replay[0])
        if drop:
            return _CutResponse()
        return JSONResponse(replay[1], status_code=replay[0])

    def _log(self, arrival: Arrival, status: int) -> None:
        with self.lock:
            self.arrivals.append(
                Arrival(
                    arrival.monotonic,
                    arrival.wall,
                    arrival.method,
                    arrival.path,
                    arrival.idempotency_key,
                    status,
                )
            )

    def requests(self, path_prefix: str = "/") -> list[Arrival]:
        """Arrivals whose path starts with ``path_prefix`` (control routes excluded)."""
        with self.lock:
            return [a for a in self.arrivals if a.path.startswith(path_prefix)]


def _faulted(faults: Faults, status: int, authorization: str, sent: str) -> Response:
    """The injected answer: the configured body and headers, with ``{authorization}`` and
    ``{body}`` echoed."""

    def echo(text: str) -> str:
        return text.replace("{authorization}", authorization).replace("{body}", sent)

    headers = {name: echo(value) for name, value in (faults.headers or {}).items()}
    if faults.retry_after is not None:
        headers["Retry-After"] = faults.retry_after
    if faults.body is None and faults.content_type is None:
        return JSONResponse(
            {"error": f"injected fault {status}"}, status_code=status, headers=headers
        )
    return Response(
        echo(faults.body or ""),
        status_code=status,
        headers=headers,
        media_type=faults.content_type,
    )


class _CutResponse(Response):
    """Starts a response, sends a fragment, then fails: the server cuts the connection."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"1000")],
            }
        )
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        raise DroppedConnection("dropping the connection after applying the request")


class EmulatorServer:
    """Serves an emulator on 127.0.0.1 in a background thread; a context manager."""

    def __init__(self, emulator: Emulator, port: int = 0, host: str = "127.0.0.1") -> None:
        self.emulator = emulator
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def faults(self) -> Faults:
        """The emulator's fault settings."""
        return self.emulator.faults

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        """Listen (again) on the port; returns once it accepts connections."""
        config = uvicorn.Config(
            self.emulator.app(),
            host=self.host,
            port=self.port,
            log_level="critical",
            access_log=False,
            lifespan="off",
            loop="asyncio",
        )
        server = uvicorn.Server(config)
        sock = self._bind()
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"{self.emulator.name}-emulator",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.emulator.name} emulator did not start on {self.host}:{self.port}"
                )
            time.sleep(0.01)
        if self.port == 0:
            self.port = server.servers[0].sockets[0].getsockname()[1]
        self._server, self._thread = server, thread
        return self

    def _bind(self) -> socket.socket:
        """The listening socket; OSError(EADDRINUSE, "port N in use") when it is taken."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(errno.EADDRINUSE, f"port {self.port} in use on {self.host}") from None
            raise
        return sock

    def stop(self) -> None:
        """Close the port: clients get connection refused until ``start()``."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
