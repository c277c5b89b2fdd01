"""The hotel CRM bulk-sync adapter (seed 001): push only.

``POST {base_url}/account/{account_id}/sync_data`` with ``Authorization: Token
token=<secret>``, at most 1000 contacts a request. A record's body is a contact;
a ``purchase`` object inside it is taken out and sent as the request's purchase,
so a record with a purchase travels in a request of its own (the API takes one
purchase per request). A record whose purchase lacks ``transaction_code``,
``price``, ``currency`` or the product UUID (``UUID`` or ``product_uuid``) is
refused locally and never sent. The API has no delete: a tombstone is not sent
and counts as delivered. Only the documented answer, 201 with a JSON object whose
``status`` is ``queued`` and whose ``_id`` is the job id, means accepted; the job
id is kept, and the webhook (when configured) later confirms it, or fails it
(``webhook_outcome``). Any other answer is an ``UnexpectedAnswer``: the contacts stay
queued.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..base import (
    IDEMPOTENCY_HEADER,
    OutgoingChange,
    ProviderLimits,
    PullPage,
    PushResult,
)
from ..errors import PermanentError
from ..http import Answer, HttpAdapter, json_body
from ..options import OptionReader

MAX_CONTACTS = 1000
# The probe's body: no origin (required) and no contact, so there is nothing to create.
PROBE_BODY = b'{"contacts":[]}'
PURCHASE_FIELDS = ("transaction_code", "price", "currency")


@dataclass(frozen=True, slots=True)
class CrmOptions:
    """The CRM kind's own config keys."""

    account_id: str
    origin: str = "dropsync"
    webhook_url: str | None = None
    validate_emails: bool = False
    create_if_invalid: bool = False
    create_if_no_credit: bool = False
    contacts_extra_fields: tuple[str, ...] = ()
    purchase_extra_fields: tuple[str, ...] = ()


def parse_options(options: Mapping[str, Any]) -> CrmOptions:
    """Validate ``[providers.NAME]`` keys of kind crm."""
    read = OptionReader(options)
    parsed = CrmOptions(
        account_id=read.string("account_id", required=True) or "",
        origin=read.string("origin") or "dropsync",
        webhook_url=read.string("webhook_url"),
        validate_emails=read.boolean("validate_emails"),
        create_if_invalid=read.boolean("create_if_invalid"),
        create_if_no_credit=read.boolean("create_if_no_credit"),
        contacts_extra_fields=read.strings("contacts_extra_fields"),
        purchase_extra_fields=read.strings("purchase_extra_fields"),
    )
    read.reject_unknown()
    return parsed


def purchase_problem(purchase: Any) -> str | None:
    """Why a purchase can never be accepted, or None."""
    if not isinstance(purchase, dict):
        return "purchase must be a JSON object"
    missing = [f for f in PURCHASE_FIELDS if purchase.get(f) in (None, "")]
    if not (purchase.get("UUID") or purchase.get("product_uuid")):
        missing.append("product UUID (UUID or product_uuid)")
    if missing:
        return f"purchase is missing required field(s): {', '.join(missing)}"
    return None


def job_id(answer: Answer) -> str:
    """The job id of the documented success answer: 201 ``{"status": "queued", "_id": ...}``."""
    if answer.status != 201:
        raise ValueError(f"the CRM answers 201 on success, not {answer.status}")
    reply = json_body(answer)
    if not isinstance(reply, dict):
        raise ValueError("the body is not a JSON object")
    job = reply.get("_id")
    if isinstance(job, bool) or not isinstance(job, str | int) or not str(job).strip():
        raise ValueError("the answer has no job id (_id)")
    if reply.get("status") != "queued":
        raise ValueError("the answer's status is not 'queued'")
    return str(job)


# The CRM webhook's status (the document shows no webhook body: these are assumed, see
# docs/providers.md). Only a success confirms a job; anything not listed leaves it waiting.
WEBHOOK_SUCCESS = frozenset({"processed", "completed", "success", "succeeded"})
WEBHOOK_FAILURE = frozenset({"failed", "failure", "error", "rejected", "cancelled", "canceled"})
WEBHOOK_NOT_FINAL = frozenset({"queued", "pending", "processing", "in_progress", "running"})
WEBHOOK_REASON_CHARS = 500


def webhook_outcome(body: Mapping[str, Any]) -> tuple[str, str]:
    """What a webhook says of its job: (``confirmed`` | ``failed`` | ``not final`` |
    ``unknown``, the reason). The reason is the status and the webhook's ``error`` (or
    ``message``, ``errors``), at most ``WEBHOOK_REASON_CHARS`` characters."""
    status = body.get("status")
    text = status.strip().lower() if isinstance(status, str) else None
    if text in WEBHOOK_SUCCESS:
        return "confirmed", text
    shown = repr(status)[:50] if text is None else text[:50]
    if text in WEBHOOK_NOT_FINAL:
        return "not final", shown
    if text not in WEBHOOK_FAILURE:
        return "unknown", "no status" if status is None else f"status {shown}"
    detail = next((body[k] for k in ("error", "message", "errors") if body.get(k)), None)
    if detail is None:
        return "failed", f"the CRM webhook reported {shown}"
    if not isinstance(detail, str):
        try:
            detail = json.dumps(detail, ensure_ascii=False, separators=(",", ":"))
        except (ValueError, RecursionError):
            detail = type(detail).__name__
    reason = f"the CRM webhook reported {shown}: {detail}"
    return "failed", reason[:WEBHOOK_REASON_CHARS]


# The secret's values travel in headers (and so must be printable ASCII).
SECRET_IN_HEADERS = True


def secret_values(secret: str | None) -> list[str]:
    """The values of the secret that travel in requests: the account token."""
    return [] if secret is None else [secret]


def _without_purchase(contact: Mapping[str, Any]) -> Mapping[str, Any]:
    """The contact without its ``purchase`` key (the contact itself when it has none)."""
    if "purchase" not in contact:
        return contact
    return {name: value for name, value in contact.items() if name != "purchase"}


class CrmProvider(HttpAdapter):
    """Pushes contacts (and purchases) to the CRM."""

    def __init__(
        self,
        name: str,
        base_url: str,
        options: CrmOptions,
        secret: str | None,
        timeout_s: float,
        batch_max_items: int | None,
    ) -> None:
        self.name = name
        self.options = options
        self.limits = ProviderLimits(
            max_items=min(batch_max_items or MAX_CONTACTS, MAX_CONTACTS), can_push=True
        )
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if secret is not None:
            headers["Authorization"] = f"Token token={secret}"
        super().__init__(base_url, timeout_s, secrets=secret_values(secret), headers=headers)
        self.path = f"/account/{options.account_id}/sync_data"

    def _check(self, change: OutgoingChange) -> str | None:
        """Purchases must carry their required fields; contacts need an email."""
        if change.deleted:
            return None
        body = change.body or {}
        if not body.get("email"):
            return "contact has no email (the CRM requires one)"
        if "purchase" in body:
            return purchase_problem(body["purchase"])
        return None

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "email_validation": {
                "validate": self.options.validate_emails,
                "create_if_invalid": self.options.create_if_invalid,
                "create_if_no_credit": self.options.create_if_no_credit,
            }
        }
        if self.options.webhook_url:
            options["webhook"] = {
                "url": self.options.webhook_url,
                "contacts_extra_fields": list(self.options.contacts_extra_fields),
                "purchase_extra_fields": list(self.options.purchase_extra_fields),
            }
        return options

    async def _push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        """One request for the plain contacts, one for each contact with a purchase."""
        plain: list[Mapping[str, Any]] = []
        requests: list[tuple[list[Mapping[str, Any]], Any]] = []
        for change in batch:
            if change.deleted or change.body is None:
                continue
            purchase = change.body.get("purchase")
            if purchase is None:
                # The common case is sent as is (no copy); a "purchase": null is left out.
                plain.append(_without_purchase(change.body))
                continue
            requests.append(([_without_purchase(change.body)], purchase))
        if plain:
            requests.insert(0, (plain, None))
        jobs: list[str] = []
        for number, (contacts, purchase) in enumerate(requests):
            body: dict[str, Any] = {
                "origin": self.options.origin,
                "options": self._options(),
                "contacts": contacts,
            }
            if purchase is not None:
                body["purchase"] = purchase
            key = idempotency_key if len(requests) == 1 else f"{idempotency_key}:{number}"
            jobs.append(
                await self.send(
                    "POST",
                    self.path,
                    expect=job_id,
                    content=orjson.dumps(body),
                    headers={IDEMPOTENCY_HEADER: key},
                )
            )
        if not requests:
            return PushResult(state="confirmed", status=204)  # only tombstones: nothing to send
        return PushResult(state="accepted", status=201, remote_ref=",".join(jobs))

    async def probe(self) -> str:
        """``POST .../sync_data`` with nothing in it (``PROBE_BODY``): the CRM refuses it with
        401 without a valid token; with one, it refuses the body (400 or 422) or queues an
        empty job (201). No contact is created either way."""
        with self._boundary():
            try:
                await self.send("POST", self.path, expect=job_id, content=PROBE_BODY)
            except PermanentError as exc:
                if exc.status not in (400, 422):  # the token passed; the body was refused
                    raise
        return f"POST {self.path} (no origin, no contacts)"

    async def _pull(self, cursor: str | None) -> PullPage:
        """The CRM API has nothing to pull."""
        raise PermanentError("the CRM kind is push-only")


def build(
    name: str,
    base_url: str,
    options: Mapping[str, Any],
    secret: str | None,
    timeout_s: float,
    batch_max_items: int | None,
) -> CrmProvider:
    """The adapter for a ``kind = "crm"`` provider."""
    return CrmProvider(name, base_url, parse_options(options), secret, timeout_s, batch_max_items)
