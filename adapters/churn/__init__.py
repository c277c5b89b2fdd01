"""The churn tool's database sync (seed 003): its home.

``adapter`` (the provider: file uploads, the signature rule), ``emulator`` (the tool on
loopback, with its signed callbacks). Its deliveries are confirmed by signed sync-status
callbacks, verified with a callback secret of its own.
"""

from __future__ import annotations

from dropsync.adapters.registry import AdapterModule, Kind, KindSecret


def _adapter() -> AdapterModule:
    from dropsync.adapters.churn import adapter

    return adapter


KIND = Kind(
    name="churn",
    adapter=_adapter,
    secrets=(
        KindSecret(
            "callback_secret",
            ("callback_secret_env", "callback_secret_file", "callback_credential"),
            listener_needs="the listener needs the churn tool's callback secret to verify its "
            "callbacks: set callback_secret_env, callback_secret_file or callback_credential",
        ),
    ),
    confirmed_by_callback=lambda secrets: True,
)
