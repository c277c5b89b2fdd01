"""What the CRM's webhook sends back about a job (seed 001), read for the store.

The document names what the webhook sends: for each contact ``_id, user_id, email,
phone_countrycode, phone_number`` and the ``contacts_extra_fields`` the request asked for;
for the purchase ``transaction_code, _id`` and the ``purchase_extra_fields``. It does not
show the body; the shape read here is the 201's job id with those objects::

    {"_id": "<job>", "status": "...",
     "contacts": [{"_id": "...", "user_id": "...", "email": "...", ...}, ...],
     "purchase": {"_id": "...", "transaction_code": "...", ...}}

(``purchase`` may also be a list of such objects). A contact is kept by its identity,
``user_id`` when it has one, else ``email``; a contact with neither, or a purchase without
a transaction code, is skipped. Each object is kept whole, as JSON text, in ``fields``.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple


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
