"""The callback listener: an HTTP server inside the daemon's task group.

Runs only when the config has a ``[listener]`` table (uvicorn on the daemon's own
event loop). Routes:

* each kind's inbound routes (``Kind.inbound``, ``adapters.inbound``): its signed
  callbacks or its webhook, each a ``POST``. The kind owns the path, verifies the call
  and reads it into a typed confirmation; the daemon applies it
  (``daemon.inbound.listener_calls``: the store transaction, the replay memory, the held sync
  statuses of ``daemon.inbound.held_confirmations``). The kinds' pages in docs/providers.md
  list them.
* ``GET /healthz`` (liveness: 200 with each provider's state while the store answers,
  else 503), ``GET /readyz`` (readiness: 200 only when the daemon can work now, else 503
  with the reasons: starting or stopping, a pause, the store's write lock held by another
  program), ``GET /metrics`` (Prometheus text format), ``GET /`` (a read-only status page
  for a person: ``daemon.inbound.status_page``).

Bodies over ``MAX_BODY`` are refused (413); a body not received within
``request_timeout_s`` is answered 408 (heads and slow connections: see
``daemon.inbound.listener_server``). An address that cannot be had pauses the listener (shown
by ``status``) and is tried again; the rest of the daemon goes on. No secret (callback
key, webhook token, provider token) is ever logged or answered.

What a caller sends is answered 4xx when it cannot be taken (``callback_refused`` in the
log); only an unexpected error is a 500, logged with its type and traceback
(``listener_error``). Warnings requests cause are summarised (``daemon.inbound.log_repeats``):
whoever reaches the port must not be able to fill the journal.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import anyio
import structlog
import uvicorn
from dropsync.adapters import inbound
from dropsync.adapters.base import Provider
from dropsync.adapters.inbound import InboundProvider, Refused
from dropsync.adapters.registry import every_kind, get_kind
from dropsync.store import callbacks
from dropsync.store.backoff import backoff_s
from dropsync.store.errors import StoreError, StoreRetryable
from dropsync.store.handle import PauseListener, Store
from dropsync.store.readonly import open_readonly
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import metrics
from ..config import Config
from ..errors import SecretError
from ..process.health import PauseBoard
from ..process.secrets import read_secret
from .held_confirmations import HeldConfirmations
from .listener_calls import REPLAYED, ListenerCall
from .listener_server import (
    KEEP_ALIVE_S,
    MAX_HEAD,
    EmbeddedServer,
    bind,
    bind_problem,
    guarded_protocol,
    route_uvicorn_logs,
)
from .log_repeats import Repeats
from .metrics_scrape import render_metrics
from .status_page import StatusPage

log = structlog.get_logger(__name__)

MAX_BODY = 1 << 20
# /readyz: how long the store's write lock may be held by another program before the
# daemon is not ready (the daemon's own transactions are not waited for: see
# Store.check_writable).
READY_LOCK_WAIT_S = 0.5
READY_REUSE_S = 1.0
_NOT_WRITABLE = {
    "store busy": "another program holds the store's write lock",
    "disk full": "the store's disk is full",
}
# A JSON escape of a UTF-16 surrogate: json.loads turns an unpaired one into a str that
# cannot be encoded (nor signed, nor stored).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class Listener:
    """The callback listener; ``run()`` serves until cancelled."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        wake: Callable[[list[str]], None],
        adapter: Callable[[str], Provider | None],
        pauses: PauseListener | None = None,
        readiness: Callable[[], list[str]] | None = None,
    ) -> None:
        self.store = store
        self.pauses = pauses
        # Why the daemon cannot work now (``PauseBoard.not_ready``), for ``/readyz``.
        self.readiness = readiness
        self._ready_lock = anyio.Lock()
        self._ready_checked: tuple[float, list[str]] | None = None  # (when, reasons)
        self.wake = wake
        self.adapter = adapter
        # Each provider as its kind's routes see it: its options, its kind's secrets read.
        self.providers: dict[str, InboundProvider] = {}
        self.config = config
        self.reload(config)
        self.confirmations = HeldConfirmations(store, wake)
        self.repeats = Repeats(log)
        self.task_group: anyio.abc.TaskGroup | None = None
        self.status_page = StatusPage(self)

    def reload(self, config: Config) -> None:
        """Take a new config: read the kinds' own secrets (callback keys, webhook tokens)
        again."""
        self.config = config
        metrics.declare(config)
        providers = {}
        for provider in config.providers.values():
            secrets = {}
            for name, ref in provider.kind_secrets.items():
                try:
                    secrets[name] = read_secret(ref, provider.name)
                except SecretError as exc:
                    log.error("callback_secret_unreadable", provider=provider.name, error=str(exc))
            providers[provider.name] = InboundProvider(provider.name, provider.options, secrets)
        self.providers = providers

    def providers_of(self, kind: str) -> list[InboundProvider]:
        """The configured providers of ``kind``, as its routes see them."""
        return [
            self.providers[p.name]
            for p in self.config.providers.values()
            if p.kind == kind and p.name in self.providers
        ]

    def adapter_options(self, name: str) -> Mapping[str, Any]:
        """What provider ``name``'s adapter is told while the listener runs (its kind's
        ``Inbound.adapter_options``: the URL of its webhook, which holds a token: never log
        it)."""
        config, provider = self.config.providers.get(name), self.providers.get(name)
        if config is None or provider is None or self.config.listener is None:
            return {}
        hook = get_kind(config.kind).inbound
        options = None if hook is None else hook().adapter_options
        return {} if options is None else options(self.config.listener.public_url, provider)

    def app(self) -> Starlette:
        """The ASGI application: every kind's inbound routes, /healthz, /readyz, /metrics and /."""
        inbound_routes = [
            (kind.name, route)
            for kind in every_kind()
            if kind.inbound is not None
            for route in kind.inbound().routes
        ]
        metrics.declare_routes(route.name for _, route in inbound_routes)
        routes = [
            Route(route.path, partial(self._serve, kind, route), methods=["POST"])
            for kind, route in inbound_routes
        ]
        return Starlette(
            routes=[
                *routes,
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
                Route("/", self.status_page.serve, methods=["GET"]),
            ]
        )

    async def _serve(self, kind: str, route: inbound.Route, request: Request) -> Response:
        """One call to a kind's route."""
        call = ListenerCall(self, request, kind, route.name, route.max_body or MAX_BODY)
        return await self._answer(request, route.name, lambda: route.handler(call))

    async def run(self) -> None:
        """Serve on ``[listener] host:port`` until cancelled.

        An address that cannot be had (in use by another program, not of this machine)
        pauses the listener, not the daemon: it is logged (``listener_cannot_listen``),
        shown by ``status``, and tried again with backoff until it can be had.
        """
        settings = self.config.listener
        assert settings is not None
        sockets = await self._bind(settings.host, settings.port)
        protocol = guarded_protocol(settings.request_timeout_s, settings.max_connections)
        server = EmbeddedServer(
            uvicorn.Config(
                self.app(),
                lifespan="off",
                log_config=None,
                log_level="warning",
                access_log=False,
                http=protocol,
                timeout_keep_alive=KEEP_ALIVE_S,
                h11_max_incomplete_event_size=MAX_HEAD,
                server_header=False,
            )
        )
        uvicorn_logs = route_uvicorn_logs()
        log.info(
            "listener_started",
            address=_address(settings.host, sockets[0].getsockname()[1]),
            public_url=settings.public_url,
        )
        async with anyio.create_task_group() as tg:
            self.task_group = tg
            tg.start_soon(self.confirmations.run)
            try:
                await server.serve(sockets=sockets)
            finally:
                server.close_all(sockets)
                tg.cancel_scope.cancel()
                for repeats in (self.repeats, protocol.guard.repeats, uvicorn_logs.repeats):
                    repeats.flush()

    async def _bind(self, host: str, port: int) -> list[socket.socket]:
        """The listening sockets, once the address can be had (until then: paused, retried)."""
        address = _address(host, port)
        failures = 0
        condition = reason = ""
        while True:
            try:
                sockets = await bind(host, port)
            except OSError as exc:
                failures += 1
                delay = backoff_s(failures)
                if (condition, reason) != bind_problem(exc):
                    condition, reason = bind_problem(exc)
                    log.error(
                        "listener_cannot_listen",
                        address=address,
                        reason=reason,
                        retry_in_s=delay,
                        consequence="no callbacks, /healthz or /metrics until it can; "
                        "ingest and deliveries go on",
                    )
                if self.pauses is not None:
                    detail = f"cannot listen on {address}: {reason}"
                    self.pauses.paused("listener", condition, detail, delay)
                await anyio.sleep(delay)
                continue
            if failures and self.pauses is not None:
                self.pauses.resumed("listener", condition)
            return sockets

    # -- reading requests ------------------------------------------------------------------

    async def body(self, request: Request, limit: int = MAX_BODY) -> bytes:
        """The request's body (``Refused``: 413 over ``limit``, 408 late, 400 gone)."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise Refused(413, f"request body over {limit} bytes")
        settings = self.config.listener
        timeout = settings.request_timeout_s if settings else 10.0
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise Refused(413, f"request body over {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise Refused(408, "request body not received in time") from None
        except ClientDisconnect:
            raise Refused(400, "client went away") from None
        return b"".join(chunks)

    async def json(self, request: Request, limit: int = MAX_BODY) -> Any:
        """The body as JSON (``Refused`` 400 when it is not, or holds a lone surrogate)."""
        raw = await self.body(request, limit)
        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Refused(400, "body is not UTF-8 JSON") from None
        if _SURROGATE_ESCAPE.search(raw):
            try:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except (UnicodeEncodeError, RecursionError):
                raise Refused(400, "body holds a lone surrogate (\\ud800-\\udfff)") from None
        return value

    # -- health and metrics ----------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        """200 with each provider's state while the store answers; 503 otherwise."""
        try:
            with anyio.fail_after(5):
                states = await anyio.to_thread.run_sync(self._read, callbacks.provider_states)
        except Exception as exc:
            self.repeats.warning(
                "healthz_store_unavailable",
                type(exc).__name__,
                error=f"{type(exc).__name__}: {exc}",
            )
            return JSONResponse({"status": "store unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "providers": states})

    async def readyz(self, request: Request) -> Response:
        """200 when the daemon can work now; 503 with the reasons (no path, no detail)."""
        reasons = list(self.readiness()) if self.readiness is not None else []
        for reason in await self._store_writable():
            if not any(r.startswith(reason.partition(":")[0] + ":") for r in reasons):
                reasons.append(reason)
        if reasons:
            return JSONResponse({"status": "not ready", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def _store_writable(self) -> list[str]:
        """Why the store cannot be written now (empty: it can), for ``/readyz``.

        One check at a time, its answer shared for READY_REUSE_S: requests that come
        together wait for the check under way (were they to skip it, as the check skips
        the daemon's own writer, they would be told "ready"), and a flood of requests
        costs one check a second.
        """
        async with self._ready_lock:
            now = anyio.current_time()
            if self._ready_checked is not None and now - self._ready_checked[0] < READY_REUSE_S:
                return self._ready_checked[1]
            reasons = []
            try:
                await self.store.check_writable(READY_LOCK_WAIT_S)
            except StoreRetryable as exc:
                why = _NOT_WRITABLE.get(exc.condition, "the store cannot be written")
                reasons.append(f"{exc.condition}: {why}")
            except (StoreError, OSError) as exc:
                reasons.append(
                    f"store unavailable: it cannot be opened for writing ({type(exc).__name__})"
                )
            self._ready_checked = (anyio.current_time(), reasons)
            return reasons

    async def metrics(self, request: Request) -> Response:
        """The Prometheus text format (``daemon.inbound.metrics_scrape``): the store's figures, or
        ``dropsync_store_readable 0`` when it cannot be read, with the daemon's own."""
        snapshot = None
        try:
            with anyio.fail_after(10):
                snapshot = await anyio.to_thread.run_sync(self._read, callbacks.metrics_snapshot)
        except Exception as exc:
            self.repeats.warning(
                "metrics_store_unavailable",
                type(exc).__name__,
                error=f"{type(exc).__name__}: {exc}",
            )
        board = self.pauses if isinstance(self.pauses, PauseBoard) else None
        body, content_type = render_metrics(
            snapshot,
            {} if board is None else board.pauses,
            reload_refused=board is not None and board.reload_refused is not None,
        )
        return Response(body, media_type=content_type)

    def _read(self, question: Callable[[Any], Any]) -> Any:
        db = open_readonly(self.store.path)
        try:
            return question(db)
        finally:
            db.close()

    async def _answer(
        self, request: Request, route: str, handler: Callable[[], Awaitable[Mapping[str, Any]]]
    ) -> Response:
        try:
            answer = JSONResponse(dict(await handler()))
        except Refused as refusal:
            metrics.callback(route, refusal.status, replay=refusal.message == REPLAYED)
            provider = request.path_params.get("provider")
            self.repeats.warning(
                "callback_refused",
                (route, refusal.status, refusal.message, provider),
                route=route,
                status=refusal.status,
                reason=refusal.message,
                provider=provider,
            )
            return JSONResponse({"error": refusal.message}, status_code=refusal.status)
        except Exception as exc:  # a defect, or the store changed under the daemon
            metrics.callback(route, 500)
            self.repeats.error(
                "listener_error",
                (route, type(exc).__name__),
                route=route,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            return JSONResponse({"error": "internal error"}, status_code=500)
        metrics.callback(route, answer.status_code)
        return answer


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
