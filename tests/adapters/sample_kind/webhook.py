"""The shop's webhook: ``POST /webhooks/shop/TOKEN`` ``{job, ok}``."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from dropsync.adapters.inbound import Call, Inbound, InboundProvider, JobDone, Refused, Route

PATH = "/webhooks/shop/"


async def hook(call: Call) -> Mapping[str, Any]:
    """A job done: its batches confirmed (``ok``) or failed."""
    given = call.path_params.get("token", "").encode()
    names = [
        p.name
        for p in call.providers
        if "hook_token" in p.secrets
        and hmac.compare_digest(p.secrets["hook_token"].encode(), given)
    ]
    if not names:
        raise Refused(404, "not found")
    body = await call.json()
    if not isinstance(body, dict) or not isinstance(body.get("job"), str):
        raise Refused(400, "expected {job, ok}")
    done = JobDone(body["job"], "confirmed" if body.get("ok") is True else "failed", "it said no")
    settled = await call.settle(names[0], done)
    return {"ok": True, "deliveries": settled.deliveries}


def adapter_options(public_url: str, provider: InboundProvider) -> Mapping[str, Any]:
    """The webhook's URL, for a provider with a hook token."""
    token = provider.secrets.get("hook_token")
    return {} if token is None else {"hook_url": f"{public_url}{PATH}{token}"}


INBOUND = Inbound(
    routes=(Route(PATH + "{token}", "shop-hook", hook),), adapter_options=adapter_options
)
