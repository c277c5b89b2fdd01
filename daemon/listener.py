"""The callback listener: an HTTP server inside the daemon's task group.

Runs only when the config has a ``[listener]`` table (uvicorn on the daemon's own
event loop). Routes:

* ``POST /callbacks/churn/sync-status[/NAME]``, ``POST /callbacks/churn/brand[/NAME]``:
  the churn tool's signed callbacks (``adapters.churn.signature_valid``). A wrong or
  flipped signature, a ``data.timestamp`` further than ``max_callback_age_s`` from
  now, or a signature accepted before (a replay, remembered in the store) is
  refused with 401 and changes nothing.
* ``POST /webhooks/crm/TOKEN``: the CRM's webhook; the CRM signs nothing, so the
  unguessable TOKEN (``webhook_token_*``) is the guard; another path is 404. Only a
  success status confirms the job's batch; a failure fails it and queues its records
  again once (as a failed churn sync does); any other status leaves it waiting.
* ``GET /healthz`` (200 with each provider's state while the store answers, else
  503), ``GET /metrics`` (Prometheus text format).

Bodies over ``MAX_BODY`` are refused (413); a body not received within
``request_timeout_s`` is answered 408 (heads and slow connections: see
``daemon.listener_server``). An address that cannot be had pauses the listener (shown
by ``status``) and is tried again; the rest of the daemon goes on. No secret (callback
key, webhook token, provider token) is ever logged or answered.

What a caller sends is answered 4xx when it cannot be taken (``callback_refused`` in the
log); only an unexpected error is a 500, logged with its type and traceback
(``listener_error``). Warnings requests cause are summarised (``daemon.log_repeats``):
whoever reaches the port must not be able to fill the journal.
"""

from __future__ import annotations

import hmac
import json
import re
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import structlog
import uvicorn
from dropsync.adapters import churn, crm
from dropsync.adapters.churn import ChurnProvider, signature_valid
from dropsync.adapters.crm_webhook import returned_contacts, returned_purchases
from dropsync.daemon.clock import now_ms
from dropsync.daemon.config import Config, ProviderConfig
from dropsync.daemon.errors import SecretError
from dropsync.daemon.listener_server import (
    KEEP_ALIVE_S,
    MAX_HEAD,
    EmbeddedServer,
    bind,
    bind_problem,
    guarded_protocol,
    route_uvicorn_logs,
)
from dropsync.daemon.log_repeats import Repeats
from dropsync.daemon.metrics import render_metrics
from dropsync.daemon.secrets import read_secret
from dropsync.daemon.sync_status import SyncStatusBook
from dropsync.store import callbacks
from dropsync.store.backoff import backoff_s
from dropsync.store.handle import PauseListener, Store
from dropsync.store.readonly import open_readonly
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = structlog.get_logger(__name__)

MAX_BODY = 1 << 20
SQLITE_INTEGERS = range(-(2**63), 2**63)
# A JSON escape of a UTF-16 surrogate: json.loads turns an unpaired one into a str that
# cannot be encoded (nor signed, nor stored).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class _Refused(Exception):
    """The request is answered with ``status`` and ``message`` (the message is secret-free)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Listener:
    """The callback listener; ``run()`` serves until cancelled."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        wake: Callable[[list[str]], None],
        adapter: Callable[[str], object | None],
        pauses: PauseListener | None = None,
    ) -> None:
        self.store = store
        self.pauses = pauses
        self.wake = wake
        self.adapter = adapter
        self.secrets: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.config = config
        self.reload(config)
        self.sync_statuses = SyncStatusBook(store, wake)
        self.repeats = Repeats(log)
        self._task_group: anyio.abc.TaskGroup | None = None

    def reload(self, config: Config) -> None:
        """Take a new config: read the callback secrets and webhook tokens again."""
        self.config = config
        secrets: dict[str, str] = {}
        tokens: dict[str, str] = {}
        for provider in config.providers.values():
            try:
                if provider.kind == "churn" and provider.callback_secret is not None:
                    secrets[provider.name] = read_secret(provider.callback_secret, provider.name)
                if provider.kind == "crm" and provider.webhook_token is not None:
                    tokens[provider.name] = read_secret(provider.webhook_token, provider.name)
            except SecretError as exc:
                log.error("callback_secret_unreadable", provider=provider.name, error=str(exc))
        self.secrets, self.tokens = secrets, tokens

    def webhook_url(self, provider: str) -> str | None:
        """The CRM webhook URL of ``provider`` (contains its token: never log it)."""
        token = self.tokens.get(provider)
        if token is None or self.config.listener is None:
            return None
        return f"{self.config.listener.public_url}/webhooks/crm/{token}"

    def app(self) -> Starlette:
        """The ASGI application."""
        return Starlette(
            routes=[
                Route("/callbacks/churn/sync-status", self.sync_status, methods=["POST"]),
                Route(
                    "/callbacks/churn/sync-status/{provider}", self.sync_status, methods=["POST"]
                ),
                Route("/callbacks/churn/brand", self.brand, methods=["POST"]),
                Route("/callbacks/churn/brand/{provider}", self.brand, methods=["POST"]),
                Route("/webhooks/crm/{token}", self.crm_webhook, methods=["POST"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ]
        )

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
            self._task_group = tg
            tg.start_soon(self.sync_statuses.run)
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

    async def _body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise _Refused(413, f"request body over {MAX_BODY} bytes")
        settings = self.config.listener
        timeout = settings.request_timeout_s if settings else 10.0
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_BODY:
                        raise _Refused(413, f"request body over {MAX_BODY} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise _Refused(408, "request body not received in time") from None
        except ClientDisconnect:
            raise _Refused(400, "client went away") from None
        return b"".join(chunks)

    async def _json(self, request: Request) -> Any:
        raw = await self._body(request)
        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise _Refused(400, "body is not UTF-8 JSON") from None
        if _SURROGATE_ESCAPE.search(raw):
            try:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except (UnicodeEncodeError, RecursionError):
                raise _Refused(400, "body holds a lone surrogate (\\ud800-\\udfff)") from None
        return value

    def _churn_provider(self, request: Request) -> ProviderConfig:
        name = request.path_params.get("provider")
        churns = [p for p in self.config.providers.values() if p.kind == "churn"]
        if name is not None:
            chosen = [p for p in churns if p.name == name]
        else:
            chosen = churns if len(churns) == 1 else []
        if not chosen:
            raise _Refused(404, "no such churn provider (name it as the last path segment)")
        return chosen[0]

    async def _signed(self, request: Request, provider: ProviderConfig) -> tuple[Any, str]:
        """The verified ``data`` and its signature (raises _Refused with 401 if not valid)."""
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise _Refused(400, "expected {data: {...}, signature}")
        secret = self.secrets.get(provider.name)
        if secret is None:
            raise _Refused(401, "no callback secret is configured for this provider")
        if not signature_valid(secret, body["data"], body.get("signature")):
            raise _Refused(401, "signature does not match")
        return body["data"], str(body["signature"]).lower()

    # -- churn callbacks -------------------------------------------------------------------

    async def sync_status(self, request: Request) -> Response:
        """The database sync status callback."""
        return await self._answer(request, "sync-status", self._sync_status)

    async def _sync_status(self, request: Request) -> dict[str, Any]:
        provider = self._churn_provider(request)
        data, signature = await self._signed(request, provider)
        timestamp, status = data.get("timestamp"), data.get("status")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            raise _Refused(401, "data.timestamp is missing")
        max_age = churn.parse_options(provider.options).max_callback_age_s
        now = now_ms()
        if abs(now - timestamp) > max_age * 1000:
            raise _Refused(401, "data.timestamp is further from now than max_callback_age_s")
        if status not in (200, 400):
            raise _Refused(400, "data.status must be 200 or 400")

        applied = await self.sync_statuses.receive(
            provider.name,
            signature,
            # An upload started after the callback arrived cannot be in its sync, whatever
            # the tool's clock says (the callback is held: it sees uploads recorded later).
            before=min(timestamp, now),
            failed=status == 400,
            hold_s=max_age,
            now=now,
        )
        if applied is None:
            raise _Refused(401, "signature already accepted (replay)")
        deliveries, queued = applied.deliveries, applied.queued
        log.info(
            "sync_status_received",
            provider=provider.name,
            status=status,
            deliveries=deliveries,
            queued_again=queued,
            held_s=max_age,
        )
        if status == 400:
            if queued:
                self.wake([provider.name])
            if self._task_group is not None:
                self._task_group.start_soon(self._fetch_integration_errors, provider.name)
        return {"ok": True, "deliveries": deliveries}

    async def _fetch_integration_errors(self, name: str) -> None:
        try:
            await self._fetch_and_store(name)
        except Exception as exc:  # a background task never takes the listener down
            log.error(
                "integration_errors_failed", provider=name, error=f"{type(exc).__name__}: {exc}"
            )

    async def _fetch_and_store(self, name: str) -> None:
        adapter = self.adapter(name)
        if not isinstance(adapter, ChurnProvider):
            log.warning(
                "integration_errors_not_fetched",
                provider=name,
                reason="the provider is not running",
            )
            return
        url, body, error = await adapter.fetch_integration_errors()
        await self.store.transact(
            partial(
                callbacks.save_integration_error,
                provider=name,
                url=url,
                body=body,
                error=error,
                now=now_ms(),
            )
        )
        log.warning(
            "integration_errors_fetched", provider=name, url=url, error=error, bytes=len(body or "")
        )

    async def brand(self, request: Request) -> Response:
        """The brand creation callback."""
        return await self._answer(request, "brand", self._brand)

    async def _brand(self, request: Request) -> dict[str, Any]:
        provider = self._churn_provider(request)
        data, signature = await self._signed(request, provider)
        stop_churn_id = data.get("stopChurnBrandId")
        client = churn.brand_text(data.get("brandIdFromClient"))
        if not isinstance(stop_churn_id, int) or isinstance(stop_churn_id, bool) or not client:
            raise _Refused(400, "expected data.stopChurnBrandId (integer), brandIdFromClient")
        if stop_churn_id not in SQLITE_INTEGERS:
            raise _Refused(400, "data.stopChurnBrandId is outside the 64-bit integers")
        now = now_ms()

        def apply(db: Any) -> bool | None:
            if not callbacks.remember_signature(db, provider.name, "brand", signature, now=now):
                return None
            return callbacks.save_brand(db, provider.name, client, stop_churn_id, now=now)

        changed = await self.store.transact(apply)
        if changed is None:
            raise _Refused(401, "signature already accepted (replay)")
        log.info(
            "brand_mapped",
            provider=provider.name,
            client_brand_id=client,
            stop_churn_brand_id=stop_churn_id,
            changed=changed,
        )
        self.wake([provider.name])
        return {"ok": True}

    # -- CRM webhook -----------------------------------------------------------------------

    async def crm_webhook(self, request: Request) -> Response:
        """The CRM's job webhook, at its token path."""
        return await self._answer(request, "crm-webhook", self._crm_webhook)

    async def _crm_webhook(self, request: Request) -> dict[str, Any]:
        given = str(request.path_params.get("token", "")).encode()
        name = None
        for provider, token in self.tokens.items():
            if hmac.compare_digest(token.encode(), given):
                name = provider
        if name is None:
            raise _Refused(404, "not found")
        body = await self._json(request)
        job = body.get("_id") if isinstance(body, dict) else None
        if not isinstance(job, str | int) or isinstance(job, bool) or not str(job):
            raise _Refused(400, "expected {_id, status, contacts}")
        contacts, purchases = returned_contacts(body), returned_purchases(body)
        outcome, reason = crm.webhook_outcome(body)
        job_text, now = str(job), now_ms()

        def apply(db: Any) -> tuple[int, list[int], int]:
            if outcome == "confirmed":
                # What the CRM says of its contacts holds even for a job not recorded yet: a
                # batch is recorded once its last request is answered, and the webhook of
                # its first request can come before that.
                callbacks.save_crm_contacts(db, name, job_text, contacts, now=now)
                callbacks.save_crm_purchases(db, name, job_text, purchases, now=now)
            if outcome not in ("confirmed", "failed"):
                return len(callbacks.job_deliveries(db, name, job_text)), [], 0
            failed = outcome == "failed"
            return callbacks.settle_job(db, name, job_text, failed=failed, error=reason, now=now)

        carried, settled, queued = await self.store.transact(apply)
        fields = {"provider": name, "job": job_text[:100]}
        if not carried:
            self.repeats.warning("webhook_unknown_job", name, **fields)
        elif outcome == "confirmed":
            log.info(
                "webhook_confirmed",
                **fields,
                deliveries=len(settled),
                contacts=len(contacts),
                purchases=len(purchases),
            )
        elif outcome == "failed":
            self.repeats.warning(
                "webhook_job_failed",
                name,
                **fields,
                reason=reason,
                deliveries=len(settled),
                queued_again=queued,
            )
            if queued:
                self.wake([name])
        elif outcome == "not final":
            log.info("webhook_not_final", **fields, status=reason)
        else:
            self.repeats.warning(
                "webhook_status_unknown",
                (name, reason),
                **fields,
                status=reason,
                consequence="not confirmed: it waits for a success, else shows as "
                "unconfirmed after confirm_timeout_s",
            )
        return {"ok": True, "outcome": outcome, "deliveries": len(settled)}

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

    async def metrics(self, request: Request) -> Response:
        """The Prometheus text format."""
        try:
            with anyio.fail_after(10):
                snapshot = await anyio.to_thread.run_sync(self._read, callbacks.metrics_snapshot)
        except Exception as exc:
            self.repeats.warning(
                "metrics_store_unavailable",
                type(exc).__name__,
                error=f"{type(exc).__name__}: {exc}",
            )
            return Response("store unavailable\n", status_code=503)
        body, content_type = render_metrics(snapshot)
        return Response(body, media_type=content_type)

    def _read(self, question: Callable[[Any], Any]) -> Any:
        db = open_readonly(self.store.path)
        try:
            return question(db)
        finally:
            db.close()

    async def _answer(self, request: Request, route: str, handler: Any) -> Response:
        try:
            return JSONResponse(await handler(request))
        except _Refused as refusal:
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
            self.repeats.error(
                "listener_error",
                (route, type(exc).__name__),
                route=route,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            return JSONResponse({"error": "internal error"}, status_code=500)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
