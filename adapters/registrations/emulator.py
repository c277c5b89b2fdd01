"""The event-registration emulator (seed 002), on the default wire contract of docs/providers.md.

* ``POST /api/v1/login`` ``{username, password}`` -> 200 ``{token, expiresIn}``; 401 otherwise.
* ``GET /api/v1/events/{eventId}/{resource}?page=N&pageSize=M[&utcModifiedDate=ISO]`` with
  ``Authorization: Bearer <token>`` for ``participants``, ``sessions``, ``registrations``,
  ``locations`` and ``sessionTags`` -> ``{items, page, pageSize, total}``, items in a stable
  order (insertion), ``utcModifiedDate`` inclusive, ``pageSize`` capped at ``max_page_size``.
* ``POST /api/v1/events/{eventId}/registrations`` ``{participantId, sessionId}`` -> 201
  ``{id, status}``; 409 ``{reason}`` when already registered or the session is full; 422
  ``{reason}`` for an unknown participant or session, or a participant who is not registered
  for the event. ``DELETE .../registrations/{id}`` -> 204 (the registration stays listed with
  status ``Cancelled`` and a new ``utcModifiedDate``); 404 ``{reason}`` for an unknown id.

Control routes (beside the common ``/_emulator/faults|state|reset``):
``POST /_emulator/items/{resource}`` (a JSON list of items to add or change; a missing
``utcModifiedDate`` is set to now), ``DELETE /_emulator/items/{resource}/{id}``,
``POST /_emulator/tokens`` ``{"expire": true}`` (every token expires now) or
``{"ttl_requests": N}`` (a token expires after N data requests), ``POST /_emulator/seed``
``{"participants": N, "sessions": M}`` (generated items). Fault ``stall_ms`` (see
``RegistrationsEmulator.stall_ms``) holds a registration's answer after applying it.
``RegistrationsEmulator.queue_raw`` makes the next contract requests answer exactly as given
(any status, headers and bytes; ``{authorization}`` and ``{body}`` in the bytes are replaced
by what the request carried, as a provider that echoes requests in its errors would).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..emulators.common import Emulator
from .data import format_modified

RESOURCES = ("participants", "sessions", "registrations", "locations", "sessionTags")
PREFIX = "/api/v1"


@lru_cache(maxsize=65536)
def parse_iso(value: str) -> int | None:
    """ISO-8601 (``Z`` or an offset; none means UTC) to epoch ms, or None."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


class RegistrationsEmulator(Emulator):
    """One event's data in memory, with logins, pages and capacity-limited sessions."""

    name = "registrations"

    def __init__(
        self,
        *,
        username: str = "fp-bot",
        password: str = "lenos-password",
        event_id: str = "ev-2026",
        max_page_size: int = 500,
        token_ttl_s: int = 3600,
    ) -> None:
        super().__init__()
        self.username = username
        self.password = password
        self.event_id = event_id
        self.max_page_size = max_page_size
        self.token_ttl_s = token_ttl_s
        self.ttl_requests: int | None = None  # a token's data requests before it expires
        self.stall_ms = 0  # hold a registration's answer this long after applying it
        self.tokens: dict[str, tuple[float, int]] = {}  # token -> (expires monotonic, uses left)
        self.items: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in RESOURCES}
        self.clock_ms = 0  # the last utcModifiedDate handed out: strictly increasing
        self.logins = 0
        self.issued: list[str] = []  # every token handed out
        self.raw: list[tuple[str | None, int, bytes, dict[str, str]]] = []
        self.listings: list[tuple[str, dict[str, str]]] = []  # (resource, query) of each GET

    # ----- data -------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The provider's clock (strictly increasing, so every change has its own moment)."""
        with self.lock:
            self.clock_ms = max(self.clock_ms + 1, int(time.time() * 1000))
            return self.clock_ms

    def put(self, resource: str, items: Iterable[dict[str, Any]]) -> None:
        """Add or change items (a missing ``utcModifiedDate`` is set to now)."""
        table = self.items[resource]
        for item in items:
            stamped = dict(item)
            if "utcModifiedDate" not in stamped:
                stamped["utcModifiedDate"] = format_modified(self.now_ms())
            with self.lock:
                table[str(stamped["id"])] = stamped

    def remove(self, resource: str, item_id: str) -> None:
        """Delete an item outright (as "deleted on the client's side")."""
        with self.lock:
            self.items[resource].pop(item_id, None)

    def seed(self, participants: int = 0, sessions: int = 0, *, at_ms: int | None = None) -> None:
        """Generate participants ``p1..pN`` (all Registered) and sessions ``s1..sN``.

        Item n is dated ``at_ms`` + n ms (default: now), so every item has its own moment.
        """
        base = at_ms if at_ms is not None else self.now_ms()
        with self.lock:
            table = self.items["participants"]
            for n in range(1, participants + 1):
                table[f"p{n}"] = {
                    "id": f"p{n}",
                    "firstName": f"First{n}",
                    "lastName": f"Last{n}",
                    "email": f"p{n}@example.com",
                    "company": "Example Ltd",
                    "RegistrationStatus": "Registered",
                    "utcModifiedDate": format_modified(base + n),
                }
            sessions_table = self.items["sessions"]
            for n in range(1, sessions + 1):
                sessions_table[f"s{n}"] = {
                    "id": f"s{n}",
                    "title": f"Session {n}",
                    "startTime": f"2026-06-01T{9 + n % 8:02d}:00:00Z",
                    "in_slot": False,
                    "capacity": 100,
                    "utcModifiedDate": format_modified(base + n),
                }
            self.clock_ms = max(self.clock_ms, base + max(participants, sessions))

    def reset(self) -> None:
        """Forget faults, requests, tokens and every item."""
        super().reset()
        with self.lock:
            self.tokens.clear()
            for table in self.items.values():
                table.clear()
            self.ttl_requests = None
            self.stall_ms = 0
            self.raw.clear()
            self.listings.clear()

    def queue_raw(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        *,
        route: str | None = None,
    ) -> None:
        """Answer the next contract request (of ``route``: ``"POST /api/v1/login"``, say, the
        path's end enough) with exactly this (see the module docstring)."""
        with self.lock:
            self.raw.append((route, status, body, headers or {}))

    async def _raw_answer(self, request: Request) -> Response | None:
        here = f"{request.method} {request.url.path}"
        with self.lock:
            chosen = next(
                (
                    entry
                    for entry in self.raw
                    if entry[0] is None
                    or (
                        here.startswith(entry[0].split(" ")[0])
                        and here.endswith(entry[0].split(" ")[-1])
                    )
                ),
                None,
            )
            if chosen is None:
                return None
            self.raw.remove(chosen)
        _, status, body, headers = chosen
        sent = await request.body()
        body = body.replace(
            b"{authorization}", request.headers.get("authorization", "").encode()
        ).replace(b"{body}", sent)
        return Response(body, status_code=status, headers=headers)

    def registered(self, participant: str, session: str) -> list[dict[str, Any]]:
        """Active registrations of ``participant`` to ``session``."""
        with self.lock:
            return [
                r
                for r in self.items["registrations"].values()
                if r["participantId"] == participant
                and r["sessionId"] == session
                and r["status"] == "Registered"
            ]

    # ----- routes -----------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The contract's routes and the emulator's control routes."""
        events = f"{PREFIX}/events/{{event_id}}"
        return [
            Route(f"{PREFIX}/login", self.login, methods=["POST"]),
            Route(f"{events}/registrations", self.register, methods=["POST"]),
            Route(f"{events}/registrations/{{reg_id}}", self.cancel, methods=["DELETE"]),
            Route(f"{events}/{{resource}}", self.listing, methods=["GET"]),
            Route("/_emulator/items/{resource}", self.control_put, methods=["POST"]),
            Route("/_emulator/items/{resource}/{item_id}", self.control_remove, methods=["DELETE"]),
            Route("/_emulator/tokens", self.control_tokens, methods=["POST"]),
            Route("/_emulator/seed", self.control_seed, methods=["POST"]),
        ]

    async def login(self, request: Request) -> Response:
        """Credentials in, a bearer token out."""
        if (raw := await self._raw_answer(request)) is not None:
            return raw

        async def apply(raw: bytes) -> tuple[int, Any]:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return 400, {"reason": "invalid JSON"}
            if (
                not isinstance(body, dict)
                or body.get("username") != self.username
                or body.get("password") != self.password
            ):
                return 401, {"reason": "invalid username or password", **self.echoed(request, raw)}
            token = secrets.token_urlsafe(24)
            with self.lock:
                self.logins += 1
                self.issued.append(token)
                uses = self.ttl_requests if self.ttl_requests is not None else -1
                self.tokens[token] = (time.monotonic() + self.token_ttl_s, uses)
            return 200, {"token": token, "expiresIn": self.token_ttl_s}

        return await self.handle(request, apply)

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return False
        token = header.removeprefix("Bearer ")
        with self.lock:
            entry = self.tokens.get(token)
            if entry is None:
                return False
            expires, uses = entry
            if time.monotonic() >= expires or uses == 0:
                del self.tokens[token]
                return False
            if uses > 0:
                self.tokens[token] = (expires, uses - 1)
        return True

    def _event(self, request: Request) -> Response | None:
        if request.path_params["event_id"] != self.event_id:
            return JSONResponse({"reason": "unknown event"}, status_code=404)
        if not self._authorised(request):
            return JSONResponse({"reason": "Unauthorized"}, status_code=401)
        return None

    async def listing(self, request: Request) -> Response:
        """One page of a resource, optionally only items modified since a moment."""
        if (raw := await self._raw_answer(request)) is not None:
            return raw
        refused = self._event(request)
        if refused is not None:
            return refused
        resource = request.path_params["resource"]
        if resource not in self.items:
            return JSONResponse({"reason": f"unknown resource {resource}"}, status_code=404)
        params = request.query_params
        with self.lock:
            self.listings.append((resource, dict(params)))
        try:
            page = int(params.get("page", "1"))
            size = min(int(params.get("pageSize", "100")), self.max_page_size)
        except ValueError:
            return JSONResponse({"reason": "page and pageSize are numbers"}, status_code=400)
        if page < 1 or size < 1:
            return JSONResponse({"reason": "page and pageSize start at 1"}, status_code=400)
        since_text = params.get("utcModifiedDate")
        since = parse_iso(since_text) if since_text else None
        if since_text and since is None:
            return JSONResponse({"reason": "utcModifiedDate is not ISO-8601"}, status_code=400)

        async def apply(raw: bytes) -> tuple[int, Any]:
            with self.lock:
                items = list(self.items[resource].values())
            if since is not None:
                items = [i for i in items if (parse_iso(i["utcModifiedDate"]) or 0) >= since]
            chunk = items[(page - 1) * size : page * size]
            return 200, {"items": chunk, "page": page, "pageSize": size, "total": len(items)}

        return await self.handle(request, apply)

    async def register(self, request: Request) -> Response:
        """Register a participant to a session (idempotent by Idempotency-Key)."""
        if (raw := await self._raw_answer(request)) is not None:
            return raw
        refused = self._event(request)
        if refused is not None:
            return refused

        async def apply(raw: bytes) -> tuple[int, Any]:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return 400, {"reason": "invalid JSON"}
            if not isinstance(body, dict):
                return 400, {"reason": "expected a JSON object"}
            participant = str(body.get("participantId"))
            session = str(body.get("sessionId"))
            with self.lock:
                person = self.items["participants"].get(participant)
                slot = self.items["sessions"].get(session)
                if person is None:
                    return 422, {"reason": f"unknown participant {participant}"}
                if slot is None:
                    return 422, {"reason": f"unknown session {session}"}
                if person.get("RegistrationStatus") != "Registered":
                    return 422, {"reason": f"participant {participant} is not registered"}
                active = [
                    r
                    for r in self.items["registrations"].values()
                    if r["sessionId"] == session and r["status"] == "Registered"
                ]
                if any(r["participantId"] == participant for r in active):
                    return 409, {"reason": "already registered to this session"}
                capacity = slot.get("capacity")
                if isinstance(capacity, int) and len(active) >= capacity:
                    return 409, {"reason": "session is full"}
                reg_id = f"r{len(self.items['registrations']) + 1}"
            stamp = format_modified(self.now_ms())
            with self.lock:
                self.items["registrations"][reg_id] = {
                    "id": reg_id,
                    "participantId": participant,
                    "sessionId": session,
                    "status": "Registered",
                    "utcModifiedDate": stamp,
                }
                self.applied[f"{participant}:{session}@register"] += 1
            await self._stall()
            return 201, {"id": reg_id, "status": "Registered"}

        return await self.handle(request, apply)

    async def _stall(self) -> None:
        """Hold the answer while ``stall_ms`` is set (a test kills the client meanwhile)."""
        deadline = time.monotonic() + self.stall_ms / 1000
        while self.stall_ms and time.monotonic() < deadline:  # noqa: ASYNC110 -- set from tests
            await asyncio.sleep(0.02)

    async def cancel(self, request: Request) -> Response:
        """Cancel a registration: it stays listed as ``Cancelled``."""
        if (raw := await self._raw_answer(request)) is not None:
            return raw
        refused = self._event(request)
        if refused is not None:
            return refused
        reg_id = request.path_params["reg_id"]

        async def apply(raw: bytes) -> tuple[int, Any]:
            with self.lock:
                current = self.items["registrations"].get(reg_id)
            if current is None:
                return 404, {"reason": f"no registration {reg_id}"}
            stamp = format_modified(self.now_ms())
            with self.lock:
                self.items["registrations"][reg_id] = {
                    **current,
                    "status": "Cancelled",
                    "utcModifiedDate": stamp,
                }
                self.applied[f"{reg_id}@cancel"] += 1
            return 204, None

        response = await self.handle(request, apply)
        if response.status_code == 204:
            return Response(status_code=204)
        return response

    # ----- control ----------------------------------------------------------------------

    async def control_put(self, request: Request) -> Response:
        """Add or change items of a resource."""
        resource = request.path_params["resource"]
        if resource not in self.items:
            return JSONResponse({"error": f"unknown resource {resource}"}, status_code=404)
        items = orjson.loads(await request.body())
        if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items):
            return JSONResponse({"error": "expected a list of items with ids"}, status_code=400)
        self.put(resource, items)
        return JSONResponse({"ok": True, "count": len(items)})

    async def control_remove(self, request: Request) -> Response:
        """Delete an item outright."""
        self.remove(request.path_params["resource"], request.path_params["item_id"])
        return JSONResponse({"ok": True})

    async def control_seed(self, request: Request) -> Response:
        """Generate items: ``{"participants": N, "sessions": M, "at_ms": T}`` (see ``seed``)."""
        body = orjson.loads(await request.body() or b"{}")
        self.seed(
            int(body.get("participants", 0)), int(body.get("sessions", 0)), at_ms=body.get("at_ms")
        )
        return JSONResponse({"ok": True})

    async def control_tokens(self, request: Request) -> Response:
        """Expire every token now, and/or limit a token's data requests."""
        body = orjson.loads(await request.body() or b"{}")
        with self.lock:
            if body.get("expire"):
                self.tokens.clear()
            if "ttl_requests" in body:
                self.ttl_requests = body["ttl_requests"]
        return JSONResponse({"ok": True})
