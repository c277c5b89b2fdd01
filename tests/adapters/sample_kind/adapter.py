"""The shop's adapter: orders pushed, confirmed later by its webhook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from dropsync.adapters.base import (
    IDEMPOTENCY_HEADER,
    OutgoingChange,
    ProviderLimits,
    PullPage,
    PushResult,
)
from dropsync.adapters.errors import PermanentError
from dropsync.adapters.http import Answer, HttpAdapter, json_body
from dropsync.adapters.options import OptionReader

SECRET_IN_HEADERS = True


@dataclass(frozen=True, slots=True)
class ShopOptions:
    """The shop kind's own keys."""

    shop_id: str
    hook_url: str | None = None  # told by the listener (its webhook), else configured


def parse_options(options: Mapping[str, Any]) -> ShopOptions:
    """``shop_id`` (required), ``hook_url``."""
    read = OptionReader(options)
    parsed = ShopOptions(
        shop_id=read.string("shop_id", required=True) or "",
        hook_url=read.string("hook_url"),
    )
    read.reject_unknown()
    return parsed


def secret_values(secret: str | None) -> list[str]:
    """The bearer token."""
    return [] if secret is None else [secret]


def job_of(answer: Answer) -> str:
    """The documented success: 202 ``{"job": "..."}``."""
    reply = json_body(answer)
    if answer.status != 202 or not isinstance(reply, dict) or not isinstance(reply.get("job"), str):
        raise ValueError("not the documented 202 {job}")
    return str(reply["job"])


class ShopProvider(HttpAdapter):
    """Pushes orders to a shop."""

    def __init__(self, name: str, base_url: str, options: ShopOptions, secret: str | None) -> None:
        self.name = name
        self.options = options
        self.limits = ProviderLimits(max_items=100)
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        super().__init__(base_url, 5.0, secrets=secret_values(secret), headers=headers)

    def _check(self, change: OutgoingChange) -> str | None:
        return None

    async def _push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        body = {
            "orders": [dict(change.body or {}) for change in batch if not change.deleted],
            "hook": self.options.hook_url,
        }
        job = await self.send(
            "POST",
            f"/shops/{self.options.shop_id}/orders",
            expect=job_of,
            content=orjson.dumps(body),
            headers={IDEMPOTENCY_HEADER: idempotency_key},
        )
        return PushResult(state="accepted", status=202, remote_ref=job)

    async def _pull(self, cursor: str | None) -> PullPage:
        raise PermanentError("the shop kind is push-only")


def build(
    name: str,
    base_url: str,
    options: Mapping[str, Any],
    secret: str | None,
    timeout_s: float,
    batch_max_items: int | None,
) -> ShopProvider:
    """The adapter for a ``kind = "shop"`` provider."""
    return ShopProvider(name, base_url, parse_options(options), secret)
