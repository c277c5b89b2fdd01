"""A fifth kind, ``shop``, written by following docs/adding-a-kind.md (for tests only).

A shop takes orders (``POST /shops/{shop_id}/orders``, answered 202 with a job id) and calls
a webhook when a job is done: ``POST /webhooks/shop/TOKEN`` ``{job, ok}``. Its home:

* ``adapter``: its options, the adapter, its secret's shape;
* ``webhook``: its inbound route (a job done confirms or fails its batches);
* ``emulator``: the shop on loopback;
* ``demo``: its part of ``dropsync emulate`` and ``dropsync demo``.

It has no table of its own (that needs a migration of the store). ``tests/adapters/
test_kinds.py`` registers it beside the real kinds and runs it through the daemon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dropsync.adapters.registry import AdapterModule, EmulatorHook, Kind, KindSecret

if TYPE_CHECKING:
    from dropsync.adapters.emulators.demo import DemoPart
    from dropsync.adapters.inbound import Inbound


def _adapter() -> AdapterModule:
    from tests.adapters.sample_kind import adapter

    return adapter


def _inbound() -> Inbound:
    from tests.adapters.sample_kind.webhook import INBOUND

    return INBOUND


def _demo() -> DemoPart:
    from tests.adapters.sample_kind.demo import DEMO

    return DEMO


KIND = Kind(
    name="shop",
    adapter=_adapter,
    secrets=(
        KindSecret(
            "hook_token",
            ("hook_token_env", "hook_token_file", "hook_token_credential"),
            in_url=True,
            listener_needs="the listener needs the shop's hook token: set hook_token_env",
        ),
    ),
    confirmed_by_callback=lambda secrets: "hook_token" in secrets,
    inbound=_inbound,
    emulator=EmulatorHook("shop", 8099, _demo),
)
