"""A fifth kind, ``shop``, written by following docs/adding-a-kind.md (for tests only).

A shop takes orders (``POST /shops/{shop_id}/orders``, answered 202 with a job id) and calls
a webhook when a job is done: ``POST /webhooks/shop/TOKEN`` ``{job, ok}``. Its home:

* ``adapter``: its options, the adapter, its secret's shape;
* ``webhook``: its inbound route (a job done confirms or fails its batches);
* ``emulator``: the shop on loopback;
* ``demo``: its part of ``dropsync emulate`` and ``dropsync demo``.

It has no table of its own (that needs a migration of the store). ``tests/adapters/
test_registry.py`` registers it beside the real kinds and runs it through the daemon.
"""

from __future__ import annotations

from dropsync.adapters.registry import EmulatorHook, Kind, KindSecret, lazy

KIND = Kind(
    name="shop",
    adapter=lazy(__name__, ".adapter"),
    secrets=(
        KindSecret(
            "hook_token",
            ("hook_token_env", "hook_token_file", "hook_token_credential"),
            in_url=True,
            listener_needs="the listener needs the shop's hook token: set hook_token_env",
        ),
    ),
    confirmed_by_callback=lambda secrets: "hook_token" in secrets,
    inbound=lazy(__name__, ".webhook", "INBOUND"),
    emulator=EmulatorHook("shop", 8099, lazy(__name__, ".demo", "DEMO")),
)
