"""The hotel CRM bulk-sync emulator (seed 001).

``POST /account/{account_id}/sync_data`` with ``Authorization: Token token=<secret>``:
at most 1000 contacts, ``origin`` required, each contact needs an identity (``email``,
which must be an address, or ``user_id``), the purchase (when present) needs
``transaction_code``, ``price``, ``currency`` (three letters) and the product UUID
(``UUID`` or ``product_uuid``), and a ``status`` (when given) from the document's list.
201 ``{status: "queued", _id, ...}`` as in the document; 401, 404 (unknown account), 400
and 422 (naming the contact index and the problem) otherwise. Contacts are kept by email,
else by user_id; each request taken is listed in ``syncs``. When the request names a
webhook URL, the emulator POSTs there after ``webhook_delay_s`` (best effort)::

    {"_id": <job>, "status": "processed",
     "contacts": [{"_id", "user_id", "email", "phone_countrycode", "phone_number",
                   <each of contacts_extra_fields>}, ...],
     "purchase": {"transaction_code", "_id", <each of purchase_extra_fields>}}

the default fields the document lists plus the extra fields the request asked for (null
when the contact has no such field); ``purchase`` only when the request had one.
``webhook_status`` (and ``webhook_error``, sent as ``error``) make it report another
status, such as ``failed``; ``webhook_before_answer`` sends it (and waits for its answer)
before answering the request itself.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..emulators.common import Emulator
from .adapter import PURCHASE_STATUSES

MAX_CONTACTS = 1000
PURCHASE_FIELDS = ("transaction_code", "price", "currency")
# What the webhook sends by default (the document's options[webhook[...extra_fields]]).
WEBHOOK_CONTACT_FIELDS = ("user_id", "email", "phone_countrycode", "phone_number")
WEBHOOK_PURCHASE_FIELDS = ("transaction_code",)


def purchase_problem(purchase: Any) -> str | None:
    """What is wrong with a purchase object, or None."""
    if not isinstance(purchase, dict):
        return "purchase must be an object"
    missing = [f for f in PURCHASE_FIELDS if purchase.get(f) in (None, "")]
    if not (purchase.get("UUID") or purchase.get("product_uuid")):
        missing.append("UUID")
    if missing:
        return f"purchase is missing {', '.join(missing)}"
    currency = purchase["currency"]
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii()):
        return "purchase currency must be an ISO 4217 code"
    if not currency.isalpha():
        return "purchase currency must be an ISO 4217 code"
    if "status" in purchase and purchase["status"] not in PURCHASE_STATUSES:
        return f"purchase status must be one of {', '.join(PURCHASE_STATUSES)}"
    return None


def contact_problem(contact: Any) -> str | None:
    """What is wrong with a contact, or None."""
    if not isinstance(contact, dict):
        return "a contact must be an object"
    email, user = contact.get("email"), contact.get("user_id")
    if email in (None, "") and user in (None, ""):
        return "email or user_id is required"
    if email not in (None, "") and "@" not in str(email):
        return f"email {email!r} is not a valid address"
    return None


def identity(contact: dict[str, Any]) -> str:
    """What the emulator keeps a contact by: its email, else its user_id."""
    email = contact.get("email")
    return str(email if email not in (None, "") else contact["user_id"])


class CrmEmulator(Emulator):
    """In-memory CRM accounts."""

    name = "crm"

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        webhook_delay_s: float = 0.2,
        *,
        webhook_status: str = "processed",
        webhook_error: str | None = None,
        webhook_before_answer: bool = False,
    ) -> None:
        super().__init__()
        self.accounts = accounts if accounts is not None else {"acc_1": "crm-secret"}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.purchases: list[dict[str, Any]] = []
        self.jobs: list[str] = []
        # Each request taken: {"_id": job, "contacts": [...], "purchase": {...} or None}.
        self.syncs: list[dict[str, Any]] = []
        self.first_seen: dict[str, float] = {}  # identity -> wall time it first arrived
        self.crm_ids: dict[str, str] = {}  # identity -> the CRM's own id of the contact
        self.webhook_delay_s = webhook_delay_s
        self.webhook_status = webhook_status
        self.webhook_error = webhook_error
        # The webhook sent (and answered) before the 201 itself: a job that finished before
        # its answer reached the daemon, which has not recorded the job when the webhook comes.
        self.webhook_before_answer = webhook_before_answer

    def reset(self) -> None:
        """Forget faults, requests and every contact received."""
        super().reset()
        with self.lock:
            self.contacts.clear()
            self.purchases.clear()
            self.jobs.clear()
            self.syncs.clear()
            self.first_seen.clear()
            self.crm_ids.clear()

    def routes(self) -> list[Route]:
        """POST /account/{account_id}/sync_data; GET /_emulator/contacts (identity -> arrival)."""
        return [
            Route("/account/{account_id}/sync_data", self.sync_data, methods=["POST"]),
            Route("/_emulator/contacts", self.contacts_seen, methods=["GET"]),
        ]

    async def contacts_seen(self, request: Request) -> Response:
        """When each contact first arrived (wall clock), for latency measurements."""
        with self.lock:
            return JSONResponse({"first_seen": dict(self.first_seen), "count": len(self.contacts)})

    async def sync_data(self, request: Request) -> Response:
        """The documented endpoint."""
        account = request.path_params["account_id"]
        if account not in self.accounts:
            return JSONResponse({"error": "Not Found", "message": "unknown account"}, 404)
        if request.headers.get("authorization") != f"Token token={self.accounts[account]}":
            return JSONResponse({"error": "Unauthorized", **self.echoed(request)}, 401)
        return await self.handle(request, self._apply)

    async def _apply(self, raw: bytes) -> tuple[int, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return 400, {"error": "Bad Request", "message": f"invalid JSON: {exc}"}
        if not isinstance(body, dict) or not body.get("origin"):
            return 400, {"error": "Bad Request", "message": "origin is required"}
        contacts = body.get("contacts") or []
        if not isinstance(contacts, list) or len(contacts) > MAX_CONTACTS:
            return 400, {
                "error": "Bad Request",
                "message": f"contacts must be an array of at most {MAX_CONTACTS}",
            }
        for index, contact in enumerate(contacts):
            if problem := contact_problem(contact):
                return 422, {
                    "error": "Unprocessable Entity",
                    "message": f"contacts[{index}]: {problem}",
                    "index": index,
                }
        purchase = body.get("purchase")
        if purchase is not None and (problem := purchase_problem(purchase)):
            return 422, {"error": "Unprocessable Entity", "message": problem}
        job = secrets.token_hex(12)
        arrived = time.time()
        with self.lock:
            for contact in contacts:
                known = identity(contact)
                self.first_seen.setdefault(known, arrived)
                self.crm_ids.setdefault(known, secrets.token_hex(12))
                self.contacts[known] = contact
                self.applied[f"{known}@{orjson.dumps(contact).decode()}"] += 1
            if purchase is not None:
                self.purchases.append(purchase)
            self.jobs.append(job)
            self.syncs.append({"_id": job, "contacts": contacts, "purchase": purchase})
            returned = self._returned(job, contacts, purchase, body)
        options = body.get("options") or {}
        webhook = options.get("webhook") or {}
        email_validation = options.get("email_validation") or {}
        if webhook.get("url") and self.webhook_before_answer:
            await self._call_webhook(webhook["url"], returned)
        elif webhook.get("url"):
            asyncio.get_running_loop().create_task(self._call_webhook(webhook["url"], returned))
        return 201, {
            "_id": job,
            "number_of_contacts": len(contacts),
            "number_of_purchase": 0 if purchase is None else 1,
            "validate_emails": bool(email_validation.get("validate", False)),
            "contacts_extra_fields": webhook.get("contacts_extra_fields", []),
            "purchase_extra_fields": webhook.get("purchase_extra_fields", []),
            "webhook_url": webhook.get("url"),
            "status": "queued",
        }

    def _returned(
        self, job: str, contacts: list[dict[str, Any]], purchase: Any, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The webhook's body for a job: the default fields plus the extra fields asked for."""
        webhook = (body.get("options") or {}).get("webhook") or {}
        contact_fields = [*WEBHOOK_CONTACT_FIELDS, *_names(webhook.get("contacts_extra_fields"))]
        payload: dict[str, Any] = {
            "_id": job,
            "status": self.webhook_status,
            "contacts": [
                {"_id": self.crm_ids[identity(c)], **{f: c.get(f) for f in contact_fields}}
                for c in contacts
            ],
        }
        if self.webhook_error is not None:
            payload["error"] = self.webhook_error
        if purchase is not None:
            purchase_fields = [
                *WEBHOOK_PURCHASE_FIELDS,
                *_names(webhook.get("purchase_extra_fields")),
            ]
            payload["purchase"] = {
                "_id": f"p-{job}",
                **{f: purchase.get(f) for f in purchase_fields},
            }
        return payload

    async def _call_webhook(self, url: str, payload: dict[str, Any]) -> None:
        await asyncio.sleep(self.webhook_delay_s)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                await client.post(url, json=payload)
        except httpx.HTTPError:
            pass  # best effort, as a real webhook sender would retry or give up


def _names(value: Any) -> list[str]:
    """The field names of an ``*_extra_fields`` option (anything else: none)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
