"""The hotel CRM bulk sync (seed 001): its home.

* ``adapter``: the provider (contacts and purchases, its options, what a webhook says);
* ``webhook``: its webhook, which confirms its jobs when it has a webhook token of its own;
* ``tables``: its own table, ``crm_contacts``;
* ``emulator``: the CRM on loopback, with its webhook;
* ``demo``: its part of ``dropsync emulate`` and ``dropsync demo``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import AdapterModule, EmulatorHook, Kind, KindSecret

if TYPE_CHECKING:
    from ..emulators.demo import DemoPart
    from ..inbound import Inbound


def _adapter() -> AdapterModule:
    from . import adapter

    return adapter


def _inbound() -> Inbound:
    from .webhook import INBOUND

    return INBOUND


def _demo() -> DemoPart:
    from .demo import DEMO

    return DEMO


KIND = Kind(
    name="crm",
    adapter=_adapter,
    secrets=(
        KindSecret(
            "webhook_token",
            ("webhook_token_env", "webhook_token_file", "webhook_token_credential"),
            in_url=True,
        ),
    ),
    inbound=_inbound,
    confirmed_by_callback=lambda secrets: "webhook_token" in secrets,
    emulator=EmulatorHook("CRM", 8081, _demo),
)
