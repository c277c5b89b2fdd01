"""The hotel CRM bulk-sync emulator (seed 001).

``POST /account/{account_id}/sync_data`` with ``Authorization: Token token=<secret>``:
at most 1000 contacts, ``origin`` required, each contact needs a valid email, the
purchase (when present) needs ``transaction_code``, ``price``, ``currency`` and the
product UUID (``UUID`` or ``product_uuid``). 201 ``{status: "queued", _id, ...}``
as in the document; 401, 404 (unknown account), 400 and 422 (naming the contact
index and the problem) otherwise. Contacts are kept by email. When the request
names a webhook URL, the emulator POSTs ``{_id, status: "processed", contacts}``
there after ``webhook_delay_s`` (best effort); ``webhook_status`` (and ``webhook_error``,
sent as ``error``) make it report another status, such as ``failed``.
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

MAX_CONTACTS = 1000
PURCHASE_FIELDS = ("transaction_code", "price", "currency")


def purchase_problem(purchase: Any) -> str | None:
    """What is wrong with a purchase object, or None."""
    if not isinstance(purchase, dict):
        return "purchase must be an object"
    missing = [f for f in PURCHASE_FIELDS if purchase.get(f) in (None, "")]
    if not (purchase.get("UUID") or purchase.get("product_uuid")):
        missing.append("UUID")
    return f"purchase is missing {', '.join(missing)}" if missing else None


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
    ) -> None:
        super().__init__()
        self.accounts = accounts if accounts is not None else {"acc_1": "crm-secret"}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.purchases: list[dict[str, Any]] = []
        self.jobs: list[str] = []
        self.first_seen: dict[str, float] = {}  # email -> wall time it first arrived
        self.webhook_delay_s = webhook_delay_s
        self.webhook_status = webhook_status
        self.webhook_error = webhook_error

    def reset(self) -> None:
        """Forget faults, requests and every contact received."""
        super().reset()
        with self.lock:
            self.contacts.clear()
            self.purchases.clear()
            self.jobs.clear()
            self.first_seen.clear()

    def routes(self) -> list[Route]:
        """POST /account/{account_id}/sync_data; GET /_emulator/contacts (email -> arrival)."""
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
            if not isinstance(contact, dict) or not contact.get("email"):
                return 422, {
                    "error": "Unprocessable Entity",
                    "message": f"contacts[{index}]: email is required",
                    "index": index,
                }
            if "@" not in str(contact["email"]):
                return 422, {
                    "error": "Unprocessable Entity",
                    "message": f"contacts[{index}]: email {contact['email']!r} is "
                    "not a valid address",
                    "index": index,
                }
        purchase = body.get("purchase")
        if purchase is not None and (problem := purchase_problem(purchase)):
            return 422, {"error": "Unprocessable Entity", "message": problem}
        job = secrets.token_hex(12)
        arrived = time.time()
        with self.lock:
            for contact in contacts:
                self.first_seen.setdefault(contact["email"], arrived)
                self.contacts[contact["email"]] = contact
                self.applied[f"{contact['email']}@{orjson.dumps(contact).decode()}"] += 1
            if purchase is not None:
                self.purchases.append(purchase)
            self.jobs.append(job)
        options = body.get("options") or {}
        webhook = options.get("webhook") or {}
        email_validation = options.get("email_validation") or {}
        if webhook.get("url"):
            asyncio.get_running_loop().create_task(
                self._call_webhook(webhook["url"], job, contacts)
            )
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

    async def _call_webhook(self, url: str, job: str, contacts: list[dict[str, Any]]) -> None:
        await asyncio.sleep(self.webhook_delay_s)
        payload: dict[str, Any] = {
            "_id": job,
            "status": self.webhook_status,
            "contacts": [{"email": c.get("email"), "user_id": c.get("user_id")} for c in contacts],
        }
        if self.webhook_error is not None:
            payload["error"] = self.webhook_error
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                await client.post(url, json=payload)
        except httpx.HTTPError:
            pass  # best effort, as a real webhook sender would retry or give up
