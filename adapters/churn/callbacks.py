"""The churn tool's signed callbacks, served by the daemon's listener (``adapters.inbound``).

* ``POST /callbacks/churn/sync-status[/NAME]``: the database sync status. It confirms
  (``status`` 200) or fails (400: the records are queued again once, and the integration
  error log is fetched and kept) every upload sent before its ``data.timestamp``.
* ``POST /callbacks/churn/brand[/NAME]``: a brand was created; it maps the client's brand id
  to the tool's (``tables.brands``), so that records waiting for it go.

NAME is the provider, needed when the config has several churn providers. Each callback is
``{data, signature}`` (``adapter.signature_valid``). A wrong or flipped signature, a sync
status whose ``data.timestamp`` is older than ``max_callback_age_s`` (a day by default: the
callback of a sync that ended while the daemon was down comes late) or further ahead than
the daemon's ``max_clock_skew_s``, or a signature accepted before (a replay, remembered by
the daemon) is refused with 401 and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from ..inbound import Call, Inbound, InboundProvider, Refused, Route, SentBefore
from . import tables
from .adapter import (
    ChurnProvider,
    brand_text,
    callback_age_problem,
    parse_options,
    signature_valid,
)

log = structlog.get_logger(__name__)

SQLITE_INTEGERS = range(-(1 << 63), 1 << 63)
FAILED_SYNC = "the churn tool reported a failed sync (status 400)"


def _provider(call: Call) -> InboundProvider:
    """The provider the callback is for: the one named by the path, else the only one."""
    name = call.path_params.get("provider")
    if name is not None:
        chosen = [p for p in call.providers if p.name == name]
    else:
        chosen = list(call.providers) if len(call.providers) == 1 else []
    if not chosen:
        raise Refused(404, "no such churn provider (name it as the last path segment)")
    return chosen[0]


async def _signed(call: Call, provider: InboundProvider) -> tuple[Any, str]:
    """The verified ``data`` and its signature (``Refused`` 401 if not valid)."""
    body = await call.json()
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise Refused(400, "expected {data: {...}, signature}")
    secret = provider.secrets.get("callback_secret")
    if secret is None:
        raise Refused(401, "no callback secret is configured for this provider")
    if not signature_valid(secret, body["data"], body.get("signature")):
        raise Refused(401, "signature does not match")
    return body["data"], str(body["signature"]).lower()


async def sync_status(call: Call) -> Mapping[str, Any]:
    """The database sync status callback."""
    provider = _provider(call)
    data, signature = await _signed(call, provider)
    timestamp, status = data.get("timestamp"), data.get("status")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise Refused(401, "data.timestamp is missing")
    max_age = parse_options(provider.options).max_callback_age_s
    now = call.now()
    problem = callback_age_problem(timestamp, now, max_age, call.clock_skew_ms)
    if problem is not None:
        raise Refused(401, problem)
    if status not in (200, 400):
        raise Refused(400, "data.status must be 200 or 400")
    settled = await call.settle(
        provider.name,
        SentBefore(
            # An upload started after the callback arrived cannot be in its sync, whatever
            # the tool's clock says (the callback is held: it sees uploads recorded later).
            before=min(timestamp, now),
            failed=status == 400,
            error=FAILED_SYNC,
            hold_s=max_age,
        ),
        replay=signature,
    )
    log.info(
        "sync_status_received",
        provider=provider.name,
        status=status,
        deliveries=settled.deliveries,
        queued_again=settled.queued,
        held_s=max_age,
    )
    if status == 400:
        call.start(lambda: _fetch_integration_errors(call, provider.name))
    return {"ok": True, "deliveries": settled.deliveries}


async def _fetch_integration_errors(call: Call, name: str) -> None:
    try:
        await _fetch_and_store(call, name)
    except Exception as exc:  # a background task never takes the listener down
        log.error("integration_errors_failed", provider=name, error=f"{type(exc).__name__}: {exc}")


async def _fetch_and_store(call: Call, name: str) -> None:
    adapter = call.adapter(name)
    if not isinstance(adapter, ChurnProvider):
        log.warning(
            "integration_errors_not_fetched", provider=name, reason="the provider is not running"
        )
        return
    url, body, error = await adapter.fetch_integration_errors()
    await call.save_error_log(name, url=url, body=body, error=error)
    log.warning(
        "integration_errors_fetched", provider=name, url=url, error=error, bytes=len(body or "")
    )


async def brand(call: Call) -> Mapping[str, Any]:
    """The brand creation callback."""
    provider = _provider(call)
    data, signature = await _signed(call, provider)
    stop_churn_id = data.get("stopChurnBrandId")
    client = brand_text(data.get("brandIdFromClient"))
    if not isinstance(stop_churn_id, int) or isinstance(stop_churn_id, bool) or not client:
        raise Refused(400, "expected data.stopChurnBrandId (integer), brandIdFromClient")
    if stop_churn_id not in SQLITE_INTEGERS:
        raise Refused(400, "data.stopChurnBrandId is outside the 64-bit integers")
    now = call.now()
    changed = await call.write(
        provider.name,
        lambda db: tables.save_brand(db, provider.name, client, stop_churn_id, now=now),
        replay=signature,
    )
    log.info(
        "brand_mapped",
        provider=provider.name,
        client_brand_id=client,
        stop_churn_brand_id=stop_churn_id,
        changed=changed,
    )
    call.wake(provider.name)
    return {"ok": True}


INBOUND = Inbound(
    routes=(
        Route("/callbacks/churn/sync-status", "sync-status", sync_status),
        Route("/callbacks/churn/sync-status/{provider}", "sync-status", sync_status),
        Route("/callbacks/churn/brand", "brand", brand),
        Route("/callbacks/churn/brand/{provider}", "brand", brand),
    )
)
