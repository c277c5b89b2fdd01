"""The event-app favourites emulator (seed 000).

``GET /getUserFavorites`` and ``POST /postUserFavorites`` with ``Authorization:
Bearer <token>``; the token names the user. Items are ``{item, action, actionDate}``;
a posted item replaces the stored one only when its actionDate is newer (as the
document says). 401 for an unknown token, 400 naming the item index and problem.
"""

from __future__ import annotations

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

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        super().__init__()
        self.tokens = tokens if tokens is not None else {"tok-alice": "alice", "tok-bob": "bob"}
        self.items: dict[str, dict[str, dict[str, Any]]] = {}

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
        ]

    def _user(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        return self.tokens.get(token) if token else None

    async def get_favourites(self, request: Request) -> Response:
        """The user's items, as the document's JSON array."""
        user = self._user(request)
        if user is None:
            return JSONResponse({"error": "Unauthorized", **self.echoed(request)}, 401)

        async def read(raw: bytes) -> tuple[int, Any]:
            with self.lock:
                return 200, list(self.items.get(user, {}).values())

        return await self.handle(request, read)

    async def post_favourites(self, request: Request) -> Response:
        """Apply items whose actionDate is newer than the stored one."""
        user = self._user(request)
        if user is None:
            return JSONResponse({"error": "Unauthorized"}, status_code=401)

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

        return await self.handle(request, apply)
