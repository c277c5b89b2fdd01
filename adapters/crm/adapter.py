"""The hotel CRM bulk-sync adapter (seed 001): push only.

``POST {base_url}/account/{account_id}/sync_data`` with ``Authorization: Token
token=<secret>``, at most 1000 contacts a request. A record is one of two shapes:

* a **contact**: its body is the contact, identified by ``email`` or ``user_id`` (one
  is enough; neither is refused locally). A ``purchase`` object inside it is taken out
  and sent as the request's purchase, so such a record travels in a request of its own
  (the API takes one purchase per request);
* a **booking**: a ``purchase`` object and a ``contacts`` array (1 to 1000 contacts,
  each with an identity), sent as one request of its own with exactly those contacts
  and that purchase.

The collection's LWW timestamp field (given by the daemon, ``attach_collections``) is
left out of what is sent unless ``send_timestamp = true``: the CRM would make a custom
field of it. A purchase is checked before it is sent: ``transaction_code``, ``price``,
``currency`` and the product UUID (``UUID`` or ``product_uuid``) present, ``currency``
three letters, ``status`` (when given) one of the document's list; a failure is a local
dead letter with the reason. The API has no delete: a tombstone is not sent and counts
as delivered. Only the documented answer, 201 with a JSON object whose ``status`` is
``queued`` and whose ``_id`` is the job id, means accepted; the job id is kept, and the
webhook (when configured) later confirms it, or fails it (``webhook_outcome``);
``webhook`` reads what it sends back. Any other answer is an
``UnexpectedAnswer``: the contacts stay queued.
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
    batch_idempotency_key,
)
from ..errors import PermanentError
from ..http import Answer, HttpAdapter, json_body
from ..options import OptionReader

MAX_CONTACTS = 1000
# The probe's body: no origin (required) and no contact, so there is nothing to create.
PROBE_BODY = b'{"contacts":[]}'
PURCHASE_FIELDS = ("transaction_code", "price", "currency")
# The document: "please use only the following status".
PURCHASE_STATUSES = (
    "add_cart",
    "purchase",
    "remove_cart",
    "product_view",
    "product_refund",
    "purchase_failed",
    "canceled",
    "no_show",
    "no_paid",
    "check_in",
    "check_out",
    "reserved",
    "confirmed",
)


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
    send_timestamp: bool = False


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
        send_timestamp=read.boolean("send_timestamp"),
    )
    read.reject_unknown()
    return parsed


def _given(value: Any) -> bool:
    return value is not None and value != ""


def _shown(value: Any) -> str:
    """A short JSON rendering of a value, for a reason."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def is_identity(value: Any) -> bool:
    """Whether ``value`` can identify a contact: a non-blank string or a whole number."""
    if isinstance(value, str):
        return bool(value.strip())
    # A whole number beyond 64 bits arrives as an orjson.Fragment of its digits.
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(
        value, orjson.Fragment
    )


def contact_problem(contact: Any, name: str = "contact") -> str | None:
    """Why ``contact`` cannot be sent (no identity), or None."""
    if not isinstance(contact, dict):
        return f"{name} must be a JSON object"
    if is_identity(contact.get("email")) or is_identity(contact.get("user_id")):
        return None
    return f"{name} has neither email nor user_id (the CRM identifies a contact by one of them)"


def purchase_problem(purchase: Any) -> str | None:
    """Why a purchase can never be accepted, or None."""
    if not isinstance(purchase, dict):
        return "purchase must be a JSON object"
    missing = [f for f in PURCHASE_FIELDS if not _given(purchase.get(f))]
    if not (_given(purchase.get("UUID")) or _given(purchase.get("product_uuid"))):
        missing.append("product UUID (UUID or product_uuid)")
    if missing:
        return f"purchase is missing required field(s): {', '.join(missing)}"
    currency = purchase["currency"]
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii()):
        currency = None
    if currency is None or not currency.isalpha():
        return (
            f"purchase currency {_shown(purchase['currency'])} is not three letters "
            "(ISO 4217, e.g. USD)"
        )
    if "status" in purchase and purchase["status"] not in PURCHASE_STATUSES:
        return (
            f"purchase status {_shown(purchase['status'])} is not one of the document's: "
            f"{', '.join(PURCHASE_STATUSES)}"
        )
    return None


def is_booking(body: Mapping[str, Any]) -> bool:
    """A booking: a ``contacts`` array and a ``purchase`` (anything else is a contact)."""
    return isinstance(body.get("contacts"), list) and body.get("purchase") is not None


def booking_problem(body: Mapping[str, Any]) -> str | None:
    """Why a booking can never be accepted, or None."""
    contacts = body["contacts"]
    if not contacts:
        return "a booking needs at least one contact in contacts"
    if len(contacts) > MAX_CONTACTS:
        return (
            f"a booking holds at most {MAX_CONTACTS} contacts (the API's limit for one "
            f"request); this one has {len(contacts)}"
        )
    for index, contact in enumerate(contacts):
        if problem := contact_problem(contact, f"contacts[{index}]"):
            return problem
    return purchase_problem(body["purchase"])


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


def without(body: Mapping[str, Any], path: Sequence[str]) -> Mapping[str, Any]:
    """``body`` without the member at the dotted ``path``; only the objects on the way to
    it are copied, and ``body`` itself is returned when it has no such member."""
    name = path[0]
    if name not in body:
        return body
    if len(path) == 1:
        copy = dict(body)  # copied in C, the members in their order: 6x a comprehension's speed
        del copy[name]
        return copy
    inner = body[name]
    if not isinstance(inner, Mapping):
        return body
    trimmed = without(inner, path[1:])
    return body if trimmed is inner else {**body, name: trimmed}


_PURCHASE = ("purchase",)


class _Request:
    """One request of a push: its contacts, its purchase, the changes it carries."""

    __slots__ = ("changes", "contacts", "purchase")

    def __init__(self, purchase: Any = None) -> None:
        self.contacts: list[Any] = []
        self.purchase = purchase
        self.changes: list[OutgoingChange] = []


class CrmProvider(HttpAdapter):
    """Pushes contacts (and purchases, and bookings) to the CRM."""

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
        self.timestamps: dict[str, tuple[str, ...]] = {}

    def attach_collections(self, timestamps: Mapping[str, str]) -> None:
        """Keep each collection's timestamp field: it is left out of what is sent."""
        self.timestamps = {name: tuple(path.split(".")) for name, path in timestamps.items()}

    def _check(self, change: OutgoingChange) -> str | None:
        """Contacts need an identity; purchases and bookings their required fields."""
        if change.deleted:
            return None
        body = change.body or {}
        email = body.get("email")
        if type(email) is str and email.strip() and body.get("purchase") is None:
            return None  # the common case, in few steps: a contact with an email
        if is_booking(body):
            return booking_problem(body)
        if problem := contact_problem(body):
            if "contacts" in body and "purchase" in body:
                problem += "; a booking is a purchase object and a contacts array"
            return problem
        if body.get("purchase") is not None:
            return purchase_problem(body["purchase"])
        return None

    def _dropped(self) -> Mapping[str, tuple[str, ...]]:
        """Each collection's timestamp path, left out of what is sent (none if it is sent)."""
        return {} if self.options.send_timestamp else self.timestamps

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

    def _requests(self, batch: Sequence[OutgoingChange]) -> list[_Request]:
        """One request for the plain contacts, one for each purchase or booking; each
        record's body as it goes out: without its collection's timestamp field."""
        plain = _Request()
        requests = [plain]
        contacts, changes = plain.contacts, plain.changes
        dropped = self._dropped()
        for change in batch:
            body = change.body
            if change.deleted or body is None:
                continue
            if dropped and (path := dropped.get(change.collection)):
                body = without(body, path)
            purchase = body.get("purchase")
            if purchase is None:  # the common case, in few steps: a contact
                # A "purchase": null is no purchase, and is left out.
                contacts.append(without(body, _PURCHASE) if "purchase" in body else body)
                changes.append(change)
                continue
            request = _Request(purchase)
            if is_booking(body):
                request.contacts.extend(body["contacts"])
            else:
                request.contacts.append(without(body, _PURCHASE))
            requests.append(request)
            request.changes.append(change)
        return requests if plain.changes else requests[1:]

    async def _push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        """Send each request of the batch (see ``_requests``); the batch's job ids, joined."""
        requests = self._requests(batch)
        jobs: list[str] = []
        for request in requests:
            body: dict[str, Any] = {
                "origin": self.options.origin,
                "options": self._options(),
                "contacts": request.contacts,
            }
            if request.purchase is not None:
                body["purchase"] = request.purchase
            # Each request's key is made from its own records, so a batch cut in halves
            # after a refusal sends each purchase again under the key it had.
            key = idempotency_key if len(requests) == 1 else batch_idempotency_key(request.changes)
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
