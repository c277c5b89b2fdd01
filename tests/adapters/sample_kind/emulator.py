"""The shop on loopback: ``POST /shops/{shop_id}/orders`` with the bearer token, 202 {job}."""

from __future__ import annotations

from typing import Any

import orjson
from dropsync.adapters.emulators.common import Emulator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class ShopEmulator(Emulator):
    """Orders kept per job; the hook URL each request named."""

    name = "shop"

    def __init__(self, token: str = "shop-token") -> None:
        super().__init__()
        self.token = token
        self.jobs: dict[str, dict[str, Any]] = {}

    def routes(self) -> list[Route]:
        """The documented route."""
        return [Route("/shops/{shop_id}/orders", self.orders, methods=["POST"])]

    async def orders(self, request: Request) -> Response:
        """Take the orders: 202 with a job id; 401 without the token."""

        async def apply(body: bytes) -> tuple[int, Any]:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return 401, {"error": "unauthorized"}
            sent = orjson.loads(body)
            with self.lock:
                job = f"job-{len(self.jobs) + 1}"
                self.jobs[job] = sent
            return 202, {"job": job}

        return await self.handle(request, apply)
