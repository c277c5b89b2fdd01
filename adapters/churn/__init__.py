"""The churn tool's database sync (seed 003): its home.

* ``adapter``: the provider (file uploads, the signature rule, its options);
* ``callbacks``: its signed callbacks (sync status, brand creation), which confirm its
  uploads and map brands, verified with a callback secret of its own;
* ``tables``: its own table, ``brands``;
* ``emulator``: the tool on loopback, with its signed callbacks;
* ``demo``: its part of ``dropsync emulate`` and ``dropsync demo``.
"""

from __future__ import annotations

from ..registry import EmulatorHook, Kind, KindSecret, lazy

KIND = Kind(
    name="churn",
    adapter=lazy(__name__, ".adapter"),
    secrets=(
        KindSecret(
            "callback_secret",
            ("callback_secret_env", "callback_secret_file", "callback_credential"),
            listener_needs="the listener needs the churn tool's callback secret to verify its "
            "callbacks: set callback_secret_env, callback_secret_file or callback_credential",
        ),
    ),
    inbound=lazy(__name__, ".callbacks", "INBOUND"),
    confirmed_by_callback=lambda secrets: True,
    emulator=EmulatorHook("churn tool", 8084, lazy(__name__, ".demo", "DEMO")),
)
