"""The CRM's webhook, served by the daemon's listener (``adapters.inbound``).

``POST /webhooks/crm/TOKEN``: the CRM signs nothing, so the unguessable TOKEN (the kind's
``webhook_token`` secret) is the guard; another path is 404. The body names the job
(``_id``), its ``status``, its ``contacts`` and its ``purchase``. Only a success status
confirms the job's batches; a failure fails them and queues their records again once; any
other status leaves them waiting (``adapter.webhook_outcome``).

What a success sends back is kept (``tables``), also for a job not recorded yet (a batch is
recorded once its last request is answered, and the webhook of its first request can come
before that). The document names what the webhook sends: for each contact ``_id, user_id,
email, phone_countrycode, phone_number`` and the ``contacts_extra_fields`` the request asked
for; for the purchase ``transaction_code, _id`` and the ``purchase_extra_fields``. It does
not show the body; the shape read here is the 201's job id with those objects::

    {"_id": "<job>", "status": "...",
     "contacts": [{"_id": "...", "user_id": "...", "email": "...", ...}, ...],
     "purchase": {"_id": "...", "transaction_code": "...", ...}}

(``purchase`` may also be a list of such objects). A contact is kept by its identity,
``user_id`` when it has one, else ``email``; a contact with neither, or a purchase without
a transaction code, is skipped. Each object is kept whole, as JSON text, in ``fields``.

While the listener runs, each CRM provider with a webhook token is told the webhook's URL
with every batch (``adapter_options``: its ``webhook_url`` option).
"""

from __future__ import annotations

import hmac
import json
import sqlite3
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

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


class ReturnedContact(NamedTuple):
    """One contact of the webhook: ``contact`` is its ``user_id`` or its ``email``
    (``identity`` says which)."""

    identity: str
    contact: str
    email: str | None
    user_id: str | None
    crm_id: str | None
    fields: str | None


class ReturnedPurchase(NamedTuple):
    """One purchase of the webhook, by its transaction code."""

    transaction_code: str
    crm_id: str | None
    fields: str | None


def _text(value: Any, *, numbers: bool = True) -> str | None:
    """A string (or, with ``numbers``, a whole number) as the store keeps it; None for
    anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and numbers:
        return str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        value.encode("utf-8")  # a lone surrogate ("\ud800") is not text SQLite can keep
    except UnicodeEncodeError:
        return None
    return value


def _json_text(value: dict[str, Any]) -> str | None:
    """The object as JSON text, with \\u escapes only where UTF-8 cannot hold a character
    (a lone surrogate); None when it holds what JSON cannot write (a number like 1e400)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        if not text.isascii():
            text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (ValueError, RecursionError):
        return None
    return text


def returned_contacts(body: Any) -> list[ReturnedContact]:
    """The contacts of a webhook body that carry an identity."""
    listed = body.get("contacts") if isinstance(body, dict) else None
    found = []
    for item in listed if isinstance(listed, list) else []:
        if not isinstance(item, dict):
            continue
        email = _text(item.get("email"), numbers=False)
        user = _text(item.get("user_id"))
        if user is not None:
            identity, contact = "user_id", user
        elif email is not None:
            identity, contact = "email", email
        else:
            continue
        found.append(
            ReturnedContact(
                identity, contact, email, user, _text(item.get("_id")), _json_text(item)
            )
        )
    return found


def returned_purchases(body: Any) -> list[ReturnedPurchase]:
    """The purchases of a webhook body that carry a transaction code."""
    given = body.get("purchase") if isinstance(body, dict) else None
    found = []
    for item in given if isinstance(given, list) else [given]:
        if not isinstance(item, dict):
            continue
        code = _text(item.get("transaction_code"))
        if code is not None:
            found.append(ReturnedPurchase(code, _text(item.get("_id")), _json_text(item)))
    return found


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
    contacts, purchases = returned_contacts(body), returned_purchases(body)
    outcome, reason = webhook_outcome(body)
    job_text, now = str(job), call.now()
    state: Literal["confirmed", "failed"] | None = (
        "confirmed" if outcome == "confirmed" else "failed" if outcome == "failed" else None
    )

    def keep_returned(db: sqlite3.Connection, settled: Settled) -> None:
        if state == "confirmed":
            tables.save_contacts(db, name, job_text, contacts, now=now)
            tables.save_purchases(db, name, job_text, purchases, now=now)

    settled = await call.settle(name, JobDone(job_text, state, reason), then=keep_returned)
    fields = {"provider": name, "job": job_text[:100]}
    if settled.held:
        # Its batch's answer is not recorded yet: the outcome is applied when it is.
        log.info("webhook_job_held", **fields, outcome=outcome)
    elif not settled.carried:
        call.warning("webhook_unknown_job", name, **fields)
    elif outcome == "confirmed":
        log.info(
            "webhook_confirmed",
            **fields,
            deliveries=settled.deliveries,
            contacts=len(contacts),
            purchases=len(purchases),
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


# A webhook names every contact of its request (up to 1000) with the fields asked back
# (contacts_extra_fields): more than the listener's 1 MiB. The token in the path is checked
# before the body is read.
MAX_WEBHOOK_BODY = 8 << 20

INBOUND = Inbound(
    routes=(Route(PATH + "{token}", "crm-webhook", webhook, max_body=MAX_WEBHOOK_BODY),),
    adapter_options=adapter_options,
)
