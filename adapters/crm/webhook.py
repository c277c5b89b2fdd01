"""The CRM's webhook, served by the daemon's listener (``adapters.inbound``).

``POST /webhooks/crm/TOKEN``: the CRM signs nothing, so the unguessable TOKEN (the kind's
``webhook_token`` secret) is the guard; another path is 404. The body names the job
(``_id``), its ``status`` and its ``contacts``. Only a success status confirms the job's
batches (and keeps the CRM's id of each contact, ``tables.crm_contacts``); a failure fails
them and queues their records again once; any other status leaves them waiting
(``adapter.webhook_outcome``).

While the listener runs, each CRM provider with a webhook token is told the webhook's URL
with every batch (``adapter_options``: its ``webhook_url`` option).
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Mapping
from typing import Any, Literal

import structlog

from ..inbound import (
    Call,
    Inbound,
    InboundProvider,
    JobDone,
    Refused,
    Route,
    Settled,
)
from . import tables
from .adapter import webhook_outcome

log = structlog.get_logger(__name__)

PATH = "/webhooks/crm/"


def _contacts(body: Mapping[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(email, user_id, the CRM's id) of each listed contact that has an email."""
    contacts = []
    listed = body.get("contacts")
    for contact in listed if isinstance(listed, list) else []:
        if isinstance(contact, dict) and isinstance(contact.get("email"), str):
            user, crm_id = contact.get("user_id"), contact.get("_id")
            contacts.append(
                (
                    contact["email"],
                    None if user is None else str(user),
                    None if crm_id is None else str(crm_id),
                )
            )
    return contacts


def _provider_of(call: Call) -> str:
    """The provider whose token is the path's (compared in constant time), else 404."""
    given = str(call.path_params.get("token", "")).encode()
    name = None
    for provider in call.providers:
        token = provider.secrets.get("webhook_token")
        if token is not None and hmac.compare_digest(token.encode(), given):
            name = provider.name
    if name is None:
        raise Refused(404, "not found")
    return name


async def webhook(call: Call) -> Mapping[str, Any]:
    """The CRM's job webhook, at its token path."""
    name = _provider_of(call)
    body = await call.json()
    job = body.get("_id") if isinstance(body, dict) else None
    if not isinstance(job, str | int) or isinstance(job, bool) or not str(job):
        raise Refused(400, "expected {_id, status, contacts}")
    contacts = _contacts(body)
    outcome, reason = webhook_outcome(body)
    job_text, now = str(job), call.now()
    state: Literal["confirmed", "failed"] | None = (
        "confirmed" if outcome == "confirmed" else "failed" if outcome == "failed" else None
    )

    def keep_contacts(db: sqlite3.Connection, settled: Settled) -> None:
        if settled.carried and state == "confirmed":
            tables.save_contacts(db, name, job_text, contacts, now=now)

    settled = await call.settle(name, JobDone(job_text, state, reason), then=keep_contacts)
    fields = {"provider": name, "job": job_text[:100]}
    if not settled.carried:
        call.warning("webhook_unknown_job", name, **fields)
    elif outcome == "confirmed":
        log.info(
            "webhook_confirmed", **fields, deliveries=settled.deliveries, contacts=len(contacts)
        )
    elif outcome == "failed":
        call.warning(
            "webhook_job_failed",
            name,
            **fields,
            reason=reason,
            deliveries=settled.deliveries,
            queued_again=settled.queued,
        )
    elif outcome == "not final":
        log.info("webhook_not_final", **fields, status=reason)
    else:
        call.warning(
            "webhook_status_unknown",
            (name, reason),
            **fields,
            status=reason,
            consequence="not confirmed: it waits for a success, else shows as "
            "unconfirmed after confirm_timeout_s",
        )
    return {"ok": True, "outcome": outcome, "deliveries": settled.deliveries}


def adapter_options(public_url: str, provider: InboundProvider) -> Mapping[str, Any]:
    """The webhook's URL (it holds the token: never logged), for a provider with a token."""
    token = provider.secrets.get("webhook_token")
    return {} if token is None else {"webhook_url": f"{public_url}{PATH}{token}"}


INBOUND = Inbound(
    routes=(Route(PATH + "{token}", "crm-webhook", webhook),),
    adapter_options=adapter_options,
)
