"""The event-app favourites emulator (seed 000).

``GET /getUserFavorites`` and ``POST /postUserFavorites`` with ``Authorization:
Bearer <token>`` (another header and scheme can be set: ``header``, ``scheme``; an empty
scheme takes the bare token); the token names the user. Items are ``{item, action,
actionDate}``; a posted item replaces the stored one only when its actionDate is newer
(as the document says). 401 for an unknown token, 400 naming the item index and problem.

Tokens come and go as users sign in and their tokens expire: ``set_token(user, token)``
gives a user a new token (the old one is refused from then on), ``revoke(user)`` refuses
the user's token (``status`` 401 or 403). Over HTTP: ``POST /_emulator/tokens`` with
``{"set": {"user": "token"}, "revoke": ["user"], "status": 403}``. ``calls`` records each
request as (method, user or None, status).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..emulators.common import Emulator


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class FavouritesEmulator(Emulator):
    """Per-user favourites, keyed by item."""

    name = "favourites"

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        *,
        header: str = "Authorization",
        scheme: str = "Bearer",
    ) -> None:
        super().__init__()
        self.tokens = tokens if tokens is not None else {"tok-alice": "alice", "tok-bob": "bob"}
        self.header = header
        self.scheme = scheme
        self.refusal = 401  # the status of a refused token
        self.items: dict[str, dict[str, dict[str, Any]]] = {}
        self.calls: list[tuple[str, str | None, int]] = []

    def set_token(self, user: str, token: str) -> None:
        """``user`` signs in again: ``token`` is theirs, any older one is refused."""
        with self.lock:
            self.tokens = {t: u for t, u in self.tokens.items() if u != user}
            self.tokens[token] = user

    def revoke(self, user: str, status: int = 401) -> None:
        """``user``'s token expires: refused with ``status`` (401 or 403) from now on."""
        with self.lock:
            self.tokens = {t: u for t, u in self.tokens.items() if u != user}
            self.refusal = status

    def calls_of(self, user: str | None, method: str | None = None, status: int = 200) -> int:
        """How many requests (of ``method``) ``user`` made that were answered ``status``."""
        with self.lock:
            return sum(
                1
                for m, u, s in self.calls
                if u == user and s == status and (method is None or m == method)
            )

    def reset(self) -> None:
        """Forget faults, everything received and the calls made."""
        super().reset()
        with self.lock:
            self.calls.clear()

    def seed(self, user: str, items: list[dict[str, Any]]) -> None:
        """Put items in a user's list (for pull tests)."""
        with self.lock:
            store = self.items.setdefault(user, {})
            for item in items:
                store[item["item"]] = dict(item)

    def routes(self) -> list[Route]:
        """The two documented endpoints."""
        return [
            Route("/getUserFavorites", self.get_favourites, methods=["GET"]),
            Route("/postUserFavorites", self.post_favourites, methods=["POST"]),
            Route("/_emulator/tokens", self.change_tokens, methods=["POST"]),
        ]

    def _user(self, request: Request) -> str | None:
        header = request.headers.get(self.header, "")
        prefix = f"{self.scheme} " if self.scheme else ""
        token = header.removeprefix(prefix) if header.startswith(prefix) else None
        with self.lock:
            return self.tokens.get(token) if token else None

    def _refused(self, request: Request) -> Response:
        with self.lock:
            self.calls.append((request.method, None, self.refusal))
            status = self.refusal
        return JSONResponse({"error": "Unauthorized", **self.echoed(request)}, status_code=status)

    def _called(self, method: str, user: str, response: Response) -> Response:
        with self.lock:
            self.calls.append((method, user, response.status_code))
        return response

    async def change_tokens(self, request: Request) -> Response:
        """``{"set": {user: token}, "revoke": [user], "status": 401}`` (all optional)."""
        try:
            asked = orjson.loads(await request.body())
            status = int(asked.get("status", 401))
            for user, token in dict(asked.get("set", {})).items():
                self.set_token(str(user), str(token))
            for user in list(asked.get("revoke", [])):
                self.revoke(str(user), status)
        except (ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    async def get_favourites(self, request: Request) -> Response:
        """The user's items, as the document's JSON array."""
        user = self._user(request)
        if user is None:
            return self._refused(request)

        async def read(raw: bytes) -> tuple[int, Any]:
            with self.lock:
                return 200, list(self.items.get(user, {}).values())

        return self._called("GET", user, await self.handle(request, read))

    async def post_favourites(self, request: Request) -> Response:
        """Apply items whose actionDate is newer than the stored one."""
        user = self._user(request)
        if user is None:
            return self._refused(request)
        return self._called("POST", user, await self.handle(request, self._apply(user)))

    def _apply(self, user: str) -> Callable[[bytes], Awaitable[tuple[int, Any]]]:
        async def apply(raw: bytes) -> tuple[int, Any]:
            try:
                items = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return 400, {"error": f"invalid JSON: {exc}"}
            if not isinstance(items, list):
                return 400, {"error": "expected a JSON array of items"}
            for index, item in enumerate(items):
                if not isinstance(item, dict) or not item.get("item"):
                    return 400, {"error": f"item {index}: item is required", "index": index}
                if item.get("action") not in ("ADD", "DELETE"):
                    return 400, {
                        "error": f"item {index}: action must be ADD or DELETE",
                        "index": index,
                    }
                if _when(item.get("actionDate")) is None:
                    return 400, {
                        "error": f"item {index}: actionDate is not ISO-8601 GMT",
                        "index": index,
                    }
            updated = 0
            with self.lock:
                store = self.items.setdefault(user, {})
                for item in items:
                    current = store.get(item["item"])
                    new_when = _when(item["actionDate"])
                    old_when = _when(current["actionDate"]) if current else None
                    if old_when is None or (new_when is not None and new_when > old_when):
                        store[item["item"]] = {k: item[k] for k in ("item", "action", "actionDate")}
                        self.applied[f"{user}:{item['item']}@{item['actionDate']}"] += 1
                        updated += 1
            return 200, {"status": "ok", "updated": updated}

        return apply
