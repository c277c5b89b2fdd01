"""The hotel CRM bulk sync (seed 001): its home.

``adapter`` (the provider: contacts and purchases), ``emulator`` (the CRM on loopback, with its
webhook). With a webhook token of its own, its jobs are confirmed by its webhook.
"""

from __future__ import annotations

from dropsync.adapters.registry import AdapterModule, Kind, KindSecret


def _adapter() -> AdapterModule:
    from dropsync.adapters.crm import adapter

    return adapter


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
    confirmed_by_callback=lambda secrets: "webhook_token" in secrets,
)
