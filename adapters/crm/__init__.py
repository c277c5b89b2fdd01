"""The hotel CRM bulk sync (seed 001): its home.

* ``adapter``: the provider (contacts and purchases, its options, what a webhook says);
* ``webhook``: its webhook, which confirms its jobs when it has a webhook token of its own;
* ``tables``: its own table, ``crm_contacts``;
* ``emulator``: the CRM on loopback, with its webhook;
* ``demo``: its part of ``dropsync emulate`` and ``dropsync demo``.
"""

from __future__ import annotations

from ..registry import EmulatorHook, Kind, KindSecret, lazy

KIND = Kind(
    name="crm",
    adapter=lazy(__name__, ".adapter"),
    secrets=(
        KindSecret(
            "webhook_token",
            ("webhook_token_env", "webhook_token_file", "webhook_token_credential"),
            in_url=True,
        ),
    ),
    inbound=lazy(__name__, ".webhook", "INBOUND"),
    confirmed_by_callback=lambda secrets: "webhook_token" in secrets,
    emulator=EmulatorHook("CRM", 8081, lazy(__name__, ".demo", "DEMO")),
)
