"""The event-registration provider's data rules, as pure functions (no I/O).

Pages and items as the provider sends them, the participant status rule, master
sessions for concurrent sessions, and registration requests. ``adapters.registrations.adapter``
does the talking.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ..base import IncomingChange, JSONObject

# An integer of 19 digits or more may not fit 64 bits: such a page is read by the exact
# parser. Found as 19 zeros in the text with every digit made a zero (a C-speed translation
# and substring search: a regular expression took 5 ms on a 100 kB page).
_DIGITS_AS_ZEROS = bytes.maketrans(b"0123456789", b"0000000000")
_LONG_DIGITS = b"0" * 19
MASTER_PREFIX = "master:"
MASTER_FIELD = "master_session"


class PageError(ValueError):
    """A page is not of the documented shape; the message says how."""


class Unrepresentable:
    """A number JSON allows but no double holds (``1e400``, ``NaN``): the item is skipped."""

    def __init__(self, text: str) -> None:
        self.text = text


def _float(text: str) -> float | Unrepresentable:
    value = float(text)
    return value if math.isfinite(value) else Unrepresentable(text)


def load_json(raw: bytes) -> tuple[Any, bool]:
    """Parse an answer; returns (value, exact) where ``exact`` means the slow, exact parser ran.

    orjson reads integers past 64 bits as floats (changing their digits) and refuses a
    whole text for one ``1e400``; such texts go to the standard parser, which keeps every
    integer's digits and marks unrepresentable numbers (``Unrepresentable``).
    """
    if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw), False
        except orjson.JSONDecodeError:
            pass  # the exact parser below says what is wrong, or reads 1e400 as a marker
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_float=_float, parse_constant=Unrepresentable), True
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PageError(f"not JSON ({type(exc).__name__})") from None


def find_unrepresentable(value: object) -> str | None:
    """The first unrepresentable number inside ``value``, as written, or None."""
    if isinstance(value, Unrepresentable):
        return value.text
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for member in value:
            found = find_unrepresentable(member)
            if found is not None:
                return found
    return None


@dataclass(frozen=True, slots=True)
class Page:
    """A page of a listing: its items and the provider's total of the whole listing."""

    items: list[Any]
    total: int


def parse_page(value: Any) -> Page:
    """``{"items": [...], "total": N, ...}`` or PageError."""
    if not isinstance(value, dict):
        raise PageError(f"expected a JSON object, found {type(value).__name__}")
    items = value.get("items")
    total = value.get("total")
    if not isinstance(items, list):
        raise PageError("no 'items' list")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise PageError("no whole 'total' count")
    return Page(items, total)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def format_modified(ms: int) -> str:
    """Epoch ms as ``utcModifiedDate`` text: ISO-8601 UTC with milliseconds and ``Z``."""
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_modified(value: str) -> int | None:
    """``utcModifiedDate`` to epoch ms (an ISO-8601 text; no offset means UTC), or None."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Whole milliseconds (the usual case) in exact integer arithmetic, faster than a float.
    ms = (
        (moment - _EPOCH) // _MS
        if moment.microsecond % 1000 == 0
        else round(moment.timestamp() * 1000)
    )
    return ms if 0 <= ms <= 253402300799999 else None


def item_identity(item: Any) -> tuple[str, int, str]:
    """(key, updated_at ms, utcModifiedDate text) of an item, or ValueError saying why not."""
    if not isinstance(item, dict):
        raise ValueError(f"an item is a {type(item).__name__}, not an object")
    raw_id = item.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        raise ValueError("item has no 'id' (text or whole number)")
    key = str(raw_id)
    modified = item.get("utcModifiedDate")
    ms = parse_modified(modified) if isinstance(modified, str) else None
    if ms is None or not isinstance(modified, str):
        raise ValueError(f"item {key[:64]} has no readable 'utcModifiedDate'")
    return key, ms, modified


def participant_body(item: dict[str, Any], key: str) -> dict[str, Any]:
    """The participant as stored: the item plus the fixed ``fp_ext_id`` and ``fp_status``.

    The document forbids changing these two: ``fp_ext_id`` is the provider's id,
    ``fp_status`` is ``active`` when ``RegistrationStatus`` is ``Registered``, else
    ``cancelled``. Whatever the item carries under those names is overwritten.
    """
    body = dict(item)
    body["fp_ext_id"] = key
    body["fp_status"] = "active" if item.get("RegistrationStatus") == "Registered" else "cancelled"
    return body


def _in_slot(body: JSONObject) -> bool:
    flag = body.get("in_slot")
    return flag is True or flag == 1 or (isinstance(flag, str) and flag.lower() == "true")


def master_sessions(
    collection: str,
    origin_records: Sequence[tuple[str, int, bool, JSONObject | None]],
    title: str,
) -> list[IncomingChange]:
    """The changes that make master sessions match the current sessions.

    ``origin_records`` are the collection's (key, updated_at, deleted, body). Sessions with
    ``in_slot`` true sharing a ``startTime`` get one master ``master:<startTime>`` (``title``,
    ``startTime``, the sorted child ids); each child names its master in ``master_session``;
    a master whose group fell below two is tombstoned. A derived version is dated after the
    version it replaces (``updated_at`` + 1 ms) so it wins; a provider's later change wins
    over it in turn, and the next derivation applies the rule again.
    """
    current = {key: (ts, deleted, body) for key, ts, deleted, body in origin_records}
    groups: dict[str, list[tuple[str, int]]] = {}
    for key, (ts, deleted, body) in current.items():
        if deleted or body is None or key.startswith(MASTER_PREFIX) or not _in_slot(body):
            continue
        start = body.get("startTime")
        if isinstance(start, str) and start:
            groups.setdefault(start, []).append((key, ts))
    wanted: dict[str, tuple[int, dict[str, Any]]] = {}
    master_of: dict[str, str] = {}
    for start, members in groups.items():
        if len(members) < 2:
            continue
        key = MASTER_PREFIX + start
        children = sorted(child for child, _ in members)
        body = {"id": key, "title": title, "startTime": start, "sessions": children}
        wanted[key] = (max(ts for _, ts in members), body)
        master_of.update((child, key) for child in children)

    changes: list[IncomingChange] = []

    def after(key: str, natural: int) -> int:
        existing = current.get(key)
        return natural if existing is None else max(natural, existing[0] + 1)

    for key, (ts, deleted, body) in sorted(current.items()):
        if key.startswith(MASTER_PREFIX):
            if not deleted and key not in wanted:
                changes.append(IncomingChange(collection, key, ts + 1, True, None))
            continue
        if deleted or body is None:
            continue
        want = master_of.get(key)
        if body.get(MASTER_FIELD) != want:
            changed = {name: value for name, value in body.items() if name != MASTER_FIELD}
            if want is not None:
                changed[MASTER_FIELD] = want
            changes.append(IncomingChange(collection, key, ts + 1, False, changed))
    for key, (natural, body) in sorted(wanted.items()):
        existing = current.get(key)
        if existing is not None and not existing[1] and existing[2] == body:
            continue
        changes.append(IncomingChange(collection, key, after(key, natural), False, body))
    return changes


@dataclass(frozen=True, slots=True)
class RegistrationRequest:
    """What a local program asked for: register or cancel a participant for a session."""

    participant: str
    session: str
    action: str
    registration_id: str | None


def _ident(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def parse_request(body: Mapping[str, Any] | None) -> RegistrationRequest:
    """The request in an inbox body, or ValueError with the reason it is refused."""
    if body is None:
        raise ValueError("the request has no body")
    participant = _ident(body.get("participantId"))
    session = _ident(body.get("sessionId"))
    if participant is None:
        raise ValueError("participantId is missing (text or whole number)")
    if session is None:
        raise ValueError("sessionId is missing (text or whole number)")
    action = body.get("action", "register")
    if action not in ("register", "cancel"):
        raise ValueError(f"action = {str(action)[:32]!r}; expected 'register' or 'cancel'")
    registration = body.get("registrationId")
    return RegistrationRequest(
        participant, session, str(action), None if registration is None else _ident(registration)
    )
